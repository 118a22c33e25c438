"""Load processes as Ray actors (core/raypool.py) on a local Ray cluster started by this module on 127.0.0.1,
against the fast simulator: the same protocol as local load processes, records named by their worker, an
actor killed mid-level. Skipped, with the reason, where Ray is not installed or its cluster cannot start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from befori_tui.core import events as ev
from befori_tui.core.config import ray_installed
from befori_tui.core.controller import RunController, RunPlan
from tests.runs import start_run
from tests.test_controller import check_accounting, config, wait_for

RAY_CPUS = 4  # logical: two actors of one CPU each, and room for a level's worth of replacements


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-machine Ray cluster for this module: its services on loopback only, no usage report sent."""
    if not ray_installed():
        pytest.skip("Ray is not installed (pip install 'befori-tui[ray]'): the Ray tests cannot run")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # 127.0.0.1, not the machine's address
    import ray

    from befori_tui.core.raypool import RayOwner

    try:  # on a thread of its own that lives as long as the cluster (RayOwner says why)
        owner = RayOwner.start(num_cpus=RAY_CPUS, include_dashboard=False)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"a local Ray cluster could not start here: {(str(exc).splitlines() or [repr(exc)])[0]}")
    try:
        yield ray
    finally:
        owner.stop()


def ray_config(url: str, concurrency: int, workers: int = 2):
    cfg = config(url, concurrency, workers)
    cfg.cluster.ray = "auto"  # this process already joined the module's cluster: the run uses it
    return cfg


def test_two_ray_actors_carry_a_run_a_concurrency_change_and_a_stop_every_request_once(ray_cluster, sim, tmp_path):
    out = tmp_path / "r.toml"
    run = start_run(ray_config(sim.base_url, 2), out, RunPlan([2], then="hold"))
    c = run.controller
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels
             and len(c.session.runner.levels[0].records) >= 4, timeout_s=90, what="the actors' first records")
    c.submit(ev.SetConcurrency(4))
    wait_for(lambda: len(c.session.runner.levels) == 2 and len(c.session.runner.levels[1].records) >= 8,
             timeout_s=30, what="records at the new concurrency")
    time.sleep(1.0)  # a few of each actor's health readings (every 0.1 s) within the level
    wait_for(lambda: all(h.cpu_pct is not None for h in c.worker_health()) and len(c.worker_health()) == 2,
             what="each actor's health")
    health = c.worker_health()
    c.stop("quit")
    assert run.join(30)
    assert c.ended_by == "quit" and c.exit_code == 0
    data, raw = check_accounting(out)
    assert [(lv["concurrency"], lv["reason"]) for lv in data["levels"]] == [(2, "start"), (4, "user")]
    # Every record names the actor that sent it: two processes, neither of them this one.
    pids = {r["worker"]["pid"] for r in raw}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(r["worker"]["host"] for r in raw)
    cl = data["cluster"]
    assert cl["engine"] == "ray" and cl["workers"] == 2 and cl["workers_lost"] == 0
    assert sum(h["workers"] for h in cl["hosts"]) == 2 and cl["listen"].startswith("127.0.0.1:")
    assert {w["pid"] for w in cl["worker"]} == pids and all(w["node_id"] for w in cl["worker"])
    if os.geteuid() == 0:  # allowed to undo Ray's low priority for its workers
        assert all(w["nice"] == 0 for w in cl["worker"])
    assert data["load"]["load_processes"] == 2
    # Each actor's loop lag and CPU, per level and live.
    assert {w["worker"] for w in data["levels"][1]["workers"]} == {f"{w['host']}:{w['pid']}" for w in cl["worker"]}
    assert all(0 <= w["cpu_pct"] < 400 and w["loop_lag_ms_p99"] >= 0 for w in data["levels"][1]["workers"])
    assert all(h.alive and 0 <= h.cpu_pct for h in health)


def test_a_ray_actor_killed_mid_level_is_said_its_requests_are_lost_once_and_the_other_goes_on(ray_cluster, sim,
                                                                                               tmp_path):
    out = tmp_path / "k.toml"
    cfg = ray_config(sim.base_url, 4)
    cfg.workload.output_tokens_mean = 200  # long requests: some are in flight when the actor dies
    run = start_run(cfg, out, RunPlan([4], then="hold"))
    c = run.controller
    notes: list = []
    c.listeners.append(lambda e: notes.append(e.text) if isinstance(e, ev.Note) else None)
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels
             and len(c.session.runner.in_flight) >= 4, timeout_s=90, what="requests in flight in both actors")
    pool = c.session.runner
    victim = pool.processes[1]
    doomed = {rid for rid in pool.in_flight if rid % 2 == 1}
    assert doomed
    ray_cluster.kill(victim.proc.actor)
    wait_for(lambda: any("load process 1 ended" in n for n in notes), timeout_s=30, what="the run to say so")
    wait_for(lambda: len(pool.levels) == 2 and len(pool.levels[1].records) >= 4, what="the load to go on")
    assert any(not h.alive for h in c.worker_health())
    c.stop("quit")
    assert run.join(30)
    data, raw = check_accounting(out)
    lost = [r for r in raw if r["error_kind"] == "lost"]
    assert {r["request_id"] for r in lost} == doomed  # exactly those in flight there, each once
    assert [(lv["concurrency"], lv["reason"]) for lv in data["levels"]] == [(4, "start"), (4, "lost-process")]
    after = [r for r in raw if r["level"] == 1 and r["error_kind"] is None]
    assert after and all(r["request_id"] % 2 == 0 for r in after)  # the survivor carried the new level
    assert data["load"]["load_processes_lost"] == 1 and data["cluster"]["workers_lost"] == 1
    gone = [w for w in data["cluster"]["worker"] if w["lost"]]
    assert len(gone) == 1 and gone[0]["index"] == 1 and gone[0]["requests_lost"] == len(doomed)


def test_without_workers_a_ray_run_places_one_load_actor_on_each_node(ray_cluster, sim, tmp_path):
    out = tmp_path / "n.toml"
    cfg = ray_config(sim.base_url, 2, workers=0)
    controller = RunController(cfg, out, plan=RunPlan([2], requests=4), telemetry="none")
    asyncio.run(controller.run())
    assert controller.ended_by == "completed", controller.error
    data, raw = check_accounting(out)
    nodes = [n["NodeID"] for n in ray_cluster.nodes() if n["Alive"]]
    cl = data["cluster"]
    assert cl["placement"] == "one per node" and cl["workers"] == cl["ray_nodes"] == len(nodes) == 1
    assert [w["node_id"] for w in cl["worker"]] == nodes and data["load"]["load_processes"] == 1
    assert {r["worker"]["pid"] for r in raw} == {cl["worker"][0]["pid"]}


def test_bench_on_a_ray_cluster_by_its_address_prints_each_workers_health(ray_cluster, sim, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    befori = Path(sys.executable).with_name("befori-tui")
    out = tmp_path / "b.toml"
    proc = subprocess.run([str(befori), "bench", "--url", sim.base_url, "--ray", address, "--workers", "2",
                           "--concurrency", "2", "--seconds-per-level", "2", "--input-tokens", "100",
                           "--output-tokens", "20", "--telemetry", "none", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("  workers: "))
    assert line.count(" cpu ") == 2 and "cpu —" not in line and "lag —" not in line, proc.stderr
    data = tomllib.loads(out.read_text())
    assert data["cluster"]["engine"] == "ray" and data["cluster"]["ray"] == address
    raw = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len({r["worker"]["pid"] for r in raw}) == 2


def test_ray_asked_for_where_it_is_not_installed_is_one_line_and_exit_2(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from befori_tui.cli import main\n"
            "sys.exit(main(['bench', '--ray', 'auto', '--out', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.toml")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'befori-tui[ray]'" in lines[0] and "--ray" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# --- without a cluster: the handshake and bad input ----------------------------------------------------------

async def test_a_connection_without_a_valid_token_is_closed_and_a_valid_one_gets_the_key(monkeypatch):
    import msgspec

    import befori_tui
    from befori_tui.core.config import Config
    from befori_tui.core.raypool import RayCluster, RayLoadPool, _Waiting
    from befori_tui.core.worker import WorkerSpec

    cfg = Config()
    cfg.endpoint.api_key_env = "BEFORI_TEST_RAY_KEY"
    monkeypatch.setenv("BEFORI_TEST_RAY_KEY", "sk-secret")
    pool = RayLoadPool(RayCluster("auto"), [WorkerSpec(cfg, "m", 0, 1, 1)])
    waiting = _Waiting(pool.specs[0], asyncio.get_running_loop().create_future())
    pool._waiting["good-token"] = waiting
    server = await asyncio.start_server(pool._accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def hello(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        answer = await asyncio.wait_for(reader.read(), 5)  # until the run closes, or its answer
        writer.close()
        return answer

    assert await hello(ev.frame(msgspec.msgpack.encode({"token": "bad", "version": befori_tui.__version__}))) == b""
    assert await hello(b"\xff\xff\xff\xff") == b""  # a length far over a hello's: closed unread
    assert not waiting.connected.done() and "good-token" in pool._waiting
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ev.frame(msgspec.msgpack.encode({"token": "good-token", "version": befori_tui.__version__})))
    answer = msgspec.msgpack.decode(await asyncio.wait_for(ev.read_frame_async(reader), 5))
    assert answer == {"api_key": "sk-secret"}
    assert waiting.connected.done() and "good-token" not in pool._waiting  # one use
    writer.close()
    server.close()


@pytest.mark.parametrize("text, message", [
    ('[cluster]\nray = "ray://head:10001"\n', "cluster.ray: a Ray Client address (ray://) is not supported"),
    ('[cluster]\nray = "auto"\nlisten = "10.0.0.1:http"\n', "cluster.listen must be HOST or HOST:PORT"),
    ('[cluster]\nnodes = 2\n', "cluster.nodes: unknown key"),
])
def test_a_bad_cluster_table_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    from befori_tui.core.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and message in str(exc.value) and "\n" not in str(exc.value)
