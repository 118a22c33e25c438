"""Load processes as Ray actors on a cluster's nodes: the same load processes and protocol as core/pool.py.

Ray places the actors (one per node, or `--workers N` spread over the nodes) and ends them; it carries no
events. Each actor runs the load-process loop of core/worker.py and connects back to the run over TCP with a
one-time token, so what flows — commands one way, batches of events every 20 ms the other — is the same framed
protocol as a local load process's socket pair, not a Ray object per event. Each actor takes every timestamp on
its own monotonic clock; the run maps them with `ClockOffset` as for a local process, and no figure compares
the clocks of two machines (a request's durations are differences on one clock).

An actor that dies (killed, its node gone): its connection closes (or the run closes it when Ray says the
actor is dead), and core/pool.py's path for a lost load process takes over: its requests in flight are
counted `lost` once, the run says so, and a level at the same concurrency opens on the others.

The controller listens on `cluster.listen` (HOST or HOST:PORT; `--ray-listen`), by default 127.0.0.1 when
every node is this machine, else the address Ray knows this machine by — the nodes must reach it there
(docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

import befori_tui
from befori_tui.core import events as ev
from befori_tui.core.client import ClientSetupError, api_key_from_env
from befori_tui.core.config import ClusterConfig
from befori_tui.core.pool import LoadPool, _Process
from befori_tui.core.worker import WorkerSpec

RAY_MISSING = "--ray needs Ray, which is not installed here: pip install 'befori-tui[ray]'"
# An actor's start: a Ray worker process, its imports, then its HTTP client (a busy cluster takes longer).
ACTOR_CONNECT_TIMEOUT_S = 120.0
HANDSHAKE_TIMEOUT_S = 10.0
MAX_HELLO_BYTES = 4096  # a hello is a token and a few names; anything bigger is not one of ours
_LENGTH = struct.Struct(">I")


def import_ray():
    # Ray sends usage statistics home unless told not to; a load tester never does on its own.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClientSetupError(RAY_MISSING) from None
    return ray


def _ray_cluster_on_this_machine() -> bool:
    """Whether `ray.init()` would join a cluster rather than start one: RAY_ADDRESS, or the address file that
    `ray start` leaves (Ray's documented discovery order)."""
    return bool(os.environ.get("RAY_ADDRESS")) or Path(tempfile.gettempdir(), "ray", "ray_current_cluster").exists()


def _tune(sock: socket.socket | None) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a command must not wait for Nagle
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # a peer gone silent is noticed by TCP too


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost")


@dataclass
class RayCluster:
    """A connection to a Ray cluster and what the run needs from it. `connect()` blocks: call it in a thread."""

    address: str  # as the user gave it
    nodes: list[dict] = field(default_factory=list)  # alive nodes with a CPU: node_id, ip, hostname
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    started_here: bool = False  # a one-machine cluster this run started for itself
    connected_here: bool = False  # this run called ray.init (and so calls ray.shutdown)

    _owner: RayOwner | None = None

    @classmethod
    def connect(cls, cfg: ClusterConfig) -> RayCluster:
        will_start = (cfg.ray == "auto" and "ray" not in sys.modules and not _ray_cluster_on_this_machine())
        if will_start:
            # A cluster of this machine alone: its services on loopback only (Ray's default on Linux is the
            # machine's outward address, where nothing of a one-box run needs to be reachable).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = import_ray()
        out = cls(cfg.ray)
        if not ray.is_initialized():  # (a test, or a program embedding the run, may have connected already)
            kwargs: dict[str, Any] = {"include_dashboard": False} if will_start else {"address": cfg.ray}
            try:
                out._owner = RayOwner.start(**kwargs)
            except Exception as exc:  # noqa: BLE001 — Ray raises several kinds; the reason is what matters
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ClientSetupError(f"--ray {cfg.ray}: cannot connect to the Ray cluster: {first[:300]}") from None
            out.started_here, out.connected_here = will_start, True
        for n in ray.nodes():
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1:
                out.nodes.append({"node_id": n["NodeID"], "ip": n.get("NodeManagerAddress", ""),
                                  "hostname": n.get("NodeManagerHostname", "")})
        if not out.nodes:
            out.shutdown()
            raise ClientSetupError(f"--ray {cfg.ray}: the cluster has no live node with a CPU for a load actor")
        here = ray.util.get_node_ip_address()
        if cfg.listen:
            host, sep, port = cfg.listen.rpartition(":")
            out.listen_host, out.listen_port = (host, int(port)) if sep else (cfg.listen, 0)
        elif out.started_here or all(_loopback(n["ip"]) or n["ip"] == here for n in out.nodes):
            out.listen_host = "127.0.0.1"  # every actor is on this machine
        else:
            out.listen_host = here  # the address this machine has in the cluster: the nodes reach it there
        return out

    def shutdown(self) -> None:
        if self._owner is not None:
            self._owner.stop()  # a cluster started here ends with it; a joined one is only left
            self._owner = None
        self.connected_here = False


class RayOwner:
    """`ray.init()` on a thread that lives until `stop()`, which calls `ray.shutdown()` there.

    The services of a cluster that `ray.init()` starts die with the thread that started them (Ray has the kernel
    kill them when their parent thread ends), so that thread must outlive the run: not a pool's worker thread,
    and not the main thread of an asyncio program either (ray.init then also takes over its SIGTERM)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = {"logging_level": logging.ERROR, "log_to_driver": False, **kwargs}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="befori-ray", daemon=True)

    @classmethod
    def start(cls, timeout_s: float = 120.0, **kwargs: Any) -> RayOwner:
        owner = cls(**kwargs)
        owner._thread.start()
        if not owner._ready.wait(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s:g} s")
        if owner.error is not None:
            raise owner.error
        return owner

    def _run(self) -> None:
        ray = import_ray()
        try:
            ray.init(**self.kwargs)
        except BaseException as exc:  # noqa: BLE001 — handed to start()
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()
        ray.shutdown()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# --- the actor: a load process on a node ---------------------------------------------------------------------

class LoadActor:
    """Made a Ray actor with `ray.remote` at run time (Ray is optional). Its one long call is the load process."""

    def run(self, spec: WorkerSpec, host: str, port: int, token: str) -> int:
        return run_load_process(spec, host, port, token)


def run_load_process(spec: WorkerSpec, host: str, port: int, token: str) -> int:
    """Connect back to the run, prove who this is with the token, then be a load process (core/worker.py)."""
    from befori_tui.core.worker import serve

    node = {}
    try:
        import ray

        node = {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id()}
    except Exception:  # noqa: BLE001 — outside Ray (a test), the node is only named by its host
        pass
    # Ray starts its workers at a low priority (niceness 15 by default): a load process that the scheduler
    # puts behind everything else on its node stamps tokens late. Back to normal where allowed (root, or
    # CAP_SYS_NICE); the niceness it runs at is recorded either way.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass
    node["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT_S)
    _tune(sock)
    hello = {"token": token, "version": befori_tui.__version__, **node}
    sock.sendall(ev.frame(msgspec.msgpack.encode(hello)))
    reply = ev.read_frame(sock)
    if reply is None:
        raise ConnectionError(f"the run at {host}:{port} closed the connection at the handshake")
    answer = msgspec.msgpack.decode(reply)
    if answer.get("error"):
        raise RuntimeError(answer["error"])
    key_env = spec.cfg.endpoint.api_key_env
    if key_env and answer.get("api_key"):
        os.environ[key_env] = answer["api_key"]  # this process's memory only: the key is never written anywhere
    sock.settimeout(None)
    asyncio.run(serve(spec, sock))
    return 0


# --- the run's side ----------------------------------------------------------------------------------------------

class _ActorProcess:
    """What core/pool.py needs of a load process's `proc` (poll, wait, kill, returncode), for a Ray actor."""

    def __init__(self, ray, actor, ref, done: asyncio.Future) -> None:
        self.ray, self.actor, self.ref, self.done = ray, actor, ref, done
        self.returncode: int | None = None

    def _code(self, exc: BaseException | None) -> int:
        if exc is None:
            return 0
        return -9 if isinstance(exc, self.ray.exceptions.RayActorError) else 1  # died (killed, node gone) / failed

    def poll(self) -> int | None:
        if self.returncode is None and self.done.done() and not self.done.cancelled():
            self.returncode = self._code(self.done.exception())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        ready, _ = self.ray.wait([self.ref], timeout=timeout)
        if ready and self.returncode is None:
            try:
                self.ray.get(self.ref, timeout=0)
                self.returncode = 0
            except Exception as exc:  # noqa: BLE001
                self.returncode = self._code(exc)
        return self.returncode

    def kill(self) -> None:
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 — already gone
            pass


@dataclass
class _Waiting:
    spec: WorkerSpec
    connected: asyncio.Future  # (reader, writer, hello) once it connects with its token


class RayLoadPool(LoadPool):
    """A LoadPool whose load processes are Ray actors. Call its methods on the run's loop."""

    def __init__(self, cluster: RayCluster, specs: list[WorkerSpec], *args, one_per_node: bool = True,
                 **kwargs) -> None:
        super().__init__(specs, *args, **kwargs)
        self.cluster = cluster
        self.one_per_node = one_per_node
        self.listen = ""  # host:port, once listening
        self._server: asyncio.AbstractServer | None = None
        self._waiting: dict[str, _Waiting] = {}
        self._watchers: list[asyncio.Task] = []

    async def open(self) -> None:
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        loop = asyncio.get_running_loop()
        c = self.cluster
        try:
            self._server = await asyncio.start_server(self._accept, c.listen_host, c.listen_port)
        except OSError as exc:
            await asyncio.to_thread(c.shutdown)
            raise ClientSetupError(f"cannot listen for the Ray actors on {c.listen_host}:{c.listen_port} "
                                   f"({exc.strerror or exc}); set --ray-listen HOST[:PORT]") from None
        port = self._server.sockets[0].getsockname()[1]
        self.listen = f"{c.listen_host}:{port}"
        # One CPU each: a load process keeps a core busy at a few hundred streams (bench/README.md).
        actor_class = ray.remote(num_cpus=1, max_restarts=0)(LoadActor)
        started = []
        for spec in self.specs:
            token = secrets.token_hex(16)
            waiting = _Waiting(spec, loop.create_future())
            self._waiting[token] = waiting
            if self.one_per_node:
                node = c.nodes[spec.index % len(c.nodes)]
                placement = NodeAffinitySchedulingStrategy(node_id=node["node_id"], soft=False)
            else:
                placement = "SPREAD"
            actor = actor_class.options(scheduling_strategy=placement).remote()
            ref = actor.run.remote(spec, c.listen_host, port, token)
            started.append((spec, actor, ref, asyncio.wrap_future(ref.future()), waiting))
        try:
            async with asyncio.timeout(ACTOR_CONNECT_TIMEOUT_S):
                for spec, actor, ref, done, waiting in started:
                    await asyncio.wait([done, waiting.connected], return_when=asyncio.FIRST_COMPLETED)
                    if not waiting.connected.done():  # its call ended before it connected: why
                        raise ClientSetupError(f"the Ray actor for load process {spec.index} failed: "
                                               f"{_reason(done.exception())}")
                    reader, writer, hello = waiting.connected.result()
                    p = _Process(spec.index, _ActorProcess(ray, actor, ref, done), reader, writer)
                    p.where = {k: hello[k] for k in ("node_ip", "node_id", "nice") if k in hello}
                    p.task = asyncio.create_task(self._read(p), name=f"ray-load-process-{spec.index}")
                    self._watchers.append(asyncio.create_task(self._watch(p, done)))
                    self.processes.append(p)
        except TimeoutError:
            await self._abandon(started)
            raise ClientSetupError(
                f"a Ray actor did not connect back to {self.listen} within {ACTOR_CONNECT_TIMEOUT_S:g} s: can the "
                "nodes reach this machine there? (--ray-listen, docs/cluster.md)") from None
        except BaseException:
            await self._abandon(started)
            raise
        await self._wait_ready("a Ray load actor")

    async def _abandon(self, started: list) -> None:
        for _spec, actor, _ref, done, waiting in started:
            _ActorProcess(import_ray(), actor, None, done).kill()
            if waiting.connected.done() and not waiting.connected.cancelled() and not waiting.connected.exception():
                waiting.connected.result()[1].close()
            waiting.connected.cancel()
        for p in self.processes:
            p.writer.close()
        await self.close()

    async def _watch(self, p: _Process, done: asyncio.Future) -> None:
        """Ray says the actor's call ended (it died, or its node is gone): a connection that TCP has not seen
        close yet is closed here, so the lost-process path runs now rather than at a keepalive's timeout."""
        try:
            await done
        except Exception as exc:  # noqa: BLE001
            if not p.finished.is_set():
                p.error = p.error or _reason(exc)
        if not p.finished.is_set() and p.writer.transport is not None:
            p.writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One actor's connection: its token first (one use), then it is a load process like any other."""
        _tune(writer.get_extra_info("socket"))
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                (n,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                if n > MAX_HELLO_BYTES:
                    raise ValueError("too long")
                hello = msgspec.msgpack.decode(await reader.readexactly(n))
            waiting = self._waiting.pop(hello.get("token", ""), None) if isinstance(hello, dict) else None
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError, msgspec.DecodeError):
            waiting = None
        if waiting is None or waiting.connected.done():  # not one of ours: nothing is said, nothing is kept
            writer.close()
            return
        if hello.get("version") != befori_tui.__version__:
            why = (f"befori-tui {hello.get('version')} on node {hello.get('node_ip', '?')}, "
                   f"{befori_tui.__version__} here: install the same version on every node")
            writer.write(ev.frame(msgspec.msgpack.encode({"error": why})))
            writer.close()
            waiting.connected.set_exception(ClientSetupError(why))
            return
        writer.write(ev.frame(msgspec.msgpack.encode({"api_key": api_key_from_env(waiting.spec.cfg)})))
        waiting.connected.set_result((reader, writer, hello))

    def cluster_summary(self) -> dict[str, Any]:
        out = super().cluster_summary()
        out.update({"engine": "ray", "ray": self.cluster.address, "listen": self.listen,
                    "ray_nodes": len(self.cluster.nodes), "placement": "one per node" if self.one_per_node
                    else "spread"})
        return out

    async def close(self) -> None:
        await super().close()
        for t in self._watchers:
            t.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for p in self.processes:
            p.proc.kill()  # its call has ended; the actor itself (and the CPU it holds) goes too
        if self._server is not None:
            self._server.close()
            self._server = None
        await asyncio.to_thread(self.cluster.shutdown)


def _reason(exc: BaseException | None) -> str:
    """The last meaningful line of what Ray says (its errors carry the remote traceback)."""
    if exc is None:
        return "it ended"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]

