"""Workloads people really run (docs/workloads.md): datasets from files, conversations, shared prefixes, long
prompts, length distributions and the presets — each against a real `befori-tui sim` on 127.0.0.1."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from befori_tui.core.config import ConfigError, WorkloadConfig, load_config
from befori_tui.core.datasets import load_dataset
from befori_tui.core.lengths import parse_length
from befori_tui.core.prompts import PromptSource

REPO = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "befori_tui", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    """The ok requests (those in flight at the end are cancelled, and have no lengths)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert all(r["error_kind"] in (None, "cancelled") for r in records), records
    return [r for r in records if r["error_kind"] is None]


def words(rng: random.Random, n: int) -> str:
    vocab = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial mice".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


# --- samples of each format, made here ----------------------------------------------------------------------

def sharegpt_sample(path: Path, n: int = 6, turns: int = 3, jsonl: bool = False) -> Path:
    rng = random.Random(1)
    items = []
    for i in range(n):
        conv = [{"from": "system", "value": "You are terse."}] if i % 2 else []
        for t in range(turns):
            conv.append({"from": "human", "value": f"question {i}.{t}: " + words(rng, 30)})
            conv.append({"from": "gpt", "value": words(rng, 10 + 4 * t)})  # replies of ~50-90 characters
        items.append({"id": f"c{i}", "conversations": conv})
    items.append({"id": "empty", "conversations": []})  # real dumps have these; they are skipped
    if jsonl:
        path.write_text("".join(json.dumps(x) + "\n" for x in items))
    else:
        path.write_text(json.dumps(items, indent=1))
    return path


def openai_sample(path: Path, n: int = 6) -> Path:
    rng = random.Random(2)
    lines = []
    for i in range(n):
        msgs = [{"role": "user", "content": words(rng, 40)},
                {"role": "assistant", "content": [{"type": "text", "text": words(rng, 12)}]}]
        lines.append(json.dumps({"messages": msgs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def prompts_sample(path: Path, n: int = 6) -> Path:
    rng = random.Random(3)
    path.write_text("".join(json.dumps({"prompt": words(rng, 25), "output_tokens": 7 + i}) + "\n"
                            for i in range(n)))
    return path


def test_datasets_detected_and_read(tmp_path):
    sg = load_dataset(str(sharegpt_sample(tmp_path / "sg.json")))
    assert sg.format == "sharegpt" and len(sg.conversations) == 6 and sg.skipped == 1 and sg.multi_turn
    assert sg.conversations[1].system == "You are terse." and len(sg.conversations[1].turns) == 3
    assert sg.conversations[0].turns[0].reply  # the dataset's reply kept: its length is max_tokens
    sgl = load_dataset(str(sharegpt_sample(tmp_path / "sg.jsonl", jsonl=True)))
    assert sgl.format == "sharegpt" and len(sgl.conversations) == 6
    oa = load_dataset(str(openai_sample(tmp_path / "oa.jsonl")))
    assert oa.format == "openai-chat" and not oa.multi_turn
    assert oa.conversations[0].turns[0].reply  # content parts joined
    pr = load_dataset(str(prompts_sample(tmp_path / "p.jsonl")))
    assert pr.format == "prompts" and [c.turns[0].reply_length() for c in pr.conversations] == list(range(7, 13))
    with pytest.raises(ConfigError, match="no \"messages\" list"):
        load_dataset(str(tmp_path / "sg.json"), "openai-chat")  # named, and not that format


@pytest.mark.parametrize("fmt", ["sharegpt", "sharegpt-jsonl", "openai-chat", "prompts"])
def test_dataset_runs_against_the_sim(sim, tmp_path, fmt):
    path = {"sharegpt": lambda: sharegpt_sample(tmp_path / "d.json", turns=1),
            "sharegpt-jsonl": lambda: sharegpt_sample(tmp_path / "d.jsonl", turns=1, jsonl=True),
            "openai-chat": lambda: openai_sample(tmp_path / "d.jsonl"),
            "prompts": lambda: prompts_sample(tmp_path / "d.jsonl")}[fmt]()
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--api", "chat", "--dataset", str(path), "--concurrency", "2",
                     "--requests-per-level", "6", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(out.read_text())
    records = read_jsonl(out.with_suffix(".jsonl"))
    assert data["workload"]["dataset"]["path"] == str(path) and data["levels"][0]["requests_failed"] == 0
    # Lengths from the data: each reply's length (estimated from its text, or output_tokens) is max_tokens,
    # exact under ignore_eos; and the prompt is the data's text, not the bundled sonnets.
    ds = load_dataset(str(path))
    wanted = {c.turns[0].reply_length() for c in ds.conversations}
    assert {r["output_tokens"] for r in records} <= wanted
    assert all(r["input_tokens"] > 20 for r in records)


def test_dataset_lengths_overridden_by_the_length_options(sim, tmp_path):
    path = openai_sample(tmp_path / "d.jsonl")
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--dataset", str(path), "--output-tokens", "5",
                     "--input-tokens", "fixed:300", "--concurrency", "1", "--requests-per-level", "4",
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out.with_suffix(".jsonl"))
    assert {r["output_tokens"] for r in records} == {5}
    assert all(200 < r["input_tokens"] < 400 for r in records)  # the data's text cut or repeated to ~300


@pytest.mark.parametrize("content, line, says", [
    ('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [oops]}\n', 2, "not JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n\n{"conversation": []}\n', 3, "no \"conversations\""),
    ('[{"conversations": [{"from": "human", "value": "a"}]},\n {"conversations": [{"from": "human"}]}]', 2,
     "\"value\""),
    ('{"prompt": ""}\n', 1, "non-empty string"),
    ("", None, "empty"),
    ("[]", None, "empty"),
])
def test_bad_dataset_is_one_line_naming_file_and_line(tmp_path, content, line, says):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    proc = run_bench("--dataset", str(path), "--out", str(tmp_path / "x.toml"), timeout=30)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"{path}:{line}:" in err if line else str(path) in err, err
    assert says in err, err
    assert not (tmp_path / "x.jsonl").exists()  # nothing started


def test_prompts_flag_still_works(sim, tmp_path):
    path = prompts_sample(tmp_path / "p.jsonl")
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--prompts", str(path), "--concurrency", "1", "--requests-per-level", "3",
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {r["output_tokens"] for r in read_jsonl(out.with_suffix(".jsonl"))} <= set(range(7, 13))


# --- conversations ------------------------------------------------------------------------------------------

def test_conversation_resends_its_history(sim, tmp_path):
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--api", "chat", "--turns", "3", "--think-time", "0.15",
                     "--input-tokens", "120", "--output-tokens", "16", "--concurrency", "2",
                     "--requests-per-level", "10", "--warmup-requests", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = sorted(read_jsonl(out.with_suffix(".jsonl")), key=lambda r: r["t_send_ns"])
    by_slot: dict[int, list[dict]] = {}
    for r in records:
        by_slot.setdefault(r["slot"], []).append(r)
    checked = 0
    for rs in by_slot.values():
        for a, b in zip(rs, rs[1:]):
            if b["turn"] == a["turn"] + 1:
                # The sim's ground truth: the prompt grows by the previous turn and its reply, and the
                # server's prefix cache holds what was sent before.
                # The history holds the server's own reply (16 tokens here) and the new question (~120).
                assert b["server_timing"]["prompt_tokens"] > a["server_timing"]["prompt_tokens"] + 16 + 100
                assert b["server_timing"]["cached_tokens"] >= a["server_timing"]["prompt_tokens"] - 16
                assert (b["t_send_ns"] - a["t_end_ns"]) / 1e9 >= 0.14  # the think time
                checked += 1
            else:
                assert b["turn"] == 1 and a["turn"] == 3  # a new conversation after the third turn
    assert checked >= 5
    turns = tomllib.loads(out.read_text())["levels"][0]["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert turns[0]["input_tokens_mean"] < turns[1]["input_tokens_mean"] < turns[2]["input_tokens_mean"]
    assert turns[0]["cached_tokens_mean"] == 0 < turns[1]["cached_tokens_mean"]
    assert all("ttft_s_p50" in t for t in turns)
    assert "TTFT by turn" in proc.stdout  # bench prints them too


def test_sharegpt_conversations_play_their_turns(sim, tmp_path):
    path = sharegpt_sample(tmp_path / "sg.json", turns=3)
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--dataset", str(path), "--concurrency", "2",
                     "--requests-per-level", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out.with_suffix(".jsonl"))
    assert {r["turn"] for r in records} == {1, 2, 3}  # a multi-turn dataset is played as conversations


# --- shared prefixes ----------------------------------------------------------------------------------------

async def prefix_hits(sim) -> int:
    """The sim's prefix-cache hits, in tokens, from its Prometheus /metrics (vLLM's counter)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as c:
        text = (await c.get(sim.root_url + "/metrics")).text
    return next(int(s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == "vllm:prefix_cache_hits_total")


async def test_shared_prefix_raises_cache_hits_and_lowers_ttft(sim_factory, tmp_path):
    sim = sim_factory(time_scale=10.0)
    runs = {}
    for name, flags in (("unique", ["--input-tokens", "2100"]),
                        ("shared", ["--input-tokens", "100", "--shared-prefix-tokens", "2000"])):
        before = await prefix_hits(sim)
        out = tmp_path / f"{name}.toml"
        proc = run_bench("--url", sim.base_url, *flags, "--output-tokens", "8", "--concurrency", "1",
                         "--requests-per-level", "8", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        level = tomllib.loads(out.read_text())["levels"][0]
        runs[name] = (await prefix_hits(sim) - before, level["ttft_s_p50"], level["input_tokens_mean"])
    (hits_u, ttft_u, n_u), (hits_s, ttft_s, n_s) = runs["unique"], runs["shared"]
    assert abs(n_u - n_s) < 0.05 * n_u  # the same prompt sizes
    assert hits_u == 0  # today's unique first line defeats the cache
    assert hits_s >= 8 * 1900  # every request after the first found the 2000-token prefix
    assert ttft_s < 0.6 * ttft_u, runs


async def test_prefix_groups_each_have_their_prefix(sim):
    w = WorkloadConfig(seed=3, shared_prefix_tokens=300, prefix_groups=3, input_tokens_mean=50, input_tokens_sd=0)
    src = PromptSource(w)
    prompts = [src.next(i) for i in range(60)]
    systems = {p.messages[0]["content"] for p in prompts}
    assert len(systems) == 3  # one per group, each the same text for all its requests
    assert len({p.messages[1]["content"].split("\n", 1)[0] for p in prompts}) == 60  # the rest stays unique


# --- long context -------------------------------------------------------------------------------------------

async def test_long_prompt_sized_by_tokenize(sim):
    w = WorkloadConfig(seed=1, input_tokens_dist="fixed:32000")
    src = PromptSource(w)
    async with httpx.AsyncClient(timeout=30) as c:
        model = (await c.get(sim.base_url + "/models")).json()["data"][0]["id"]
        assert await src.calibrate(c, sim.root_url, model)
        src.attach(c, sim.root_url, model)
        a = await src.next_for_slot(0, 1)
        b = await src.next_for_slot(1, 2)
        count = (await c.post(sim.root_url + "/tokenize", json={"prompt": a.text})).json()["count"]
    assert a.count_source == "tokenize"
    assert abs(count - 32000) <= 320, count  # within 1% of the target, by the server's own count
    assert abs(a.counted_tokens - count) <= 320  # and the record's count says what it really was
    # Built once per size: the same body behind each request's unique first line.
    assert len(src._bodies) == 1
    assert a.text.split("\n", 1)[1] == b.text.split("\n", 1)[1] and a.text != b.text


# --- length distributions -----------------------------------------------------------------------------------

def test_length_syntax():
    assert parse_length("550", "f").spec() == "fixed:550"
    assert parse_length("550:150", "f").spec() == "normal:550:150"
    assert parse_length("lognormal:550:0.5", "f").kind == "lognormal"
    assert parse_length("uniform:10:20", "f").mean == 15
    assert parse_length("dataset", "f").from_dataset
    for bad in ("", "abc", "lognormal:550", "uniform:20:10", "normal:0:3", "fixed:5:5", "lognormal:5:9",
                "550:-1", "nan"):
        with pytest.raises(ConfigError, match="^f: "):
            parse_length(bad, "f")
    with pytest.raises(ConfigError, match="need a dataset"):
        parse_length("dataset", "f", allow_dataset=False)


def test_length_draws_keep_their_mean():
    rng = random.Random(0)
    for spec, lo, hi in (("lognormal:550:0.5", 1, 10**6), ("uniform:100:900", 100, 900), ("normal:550:150", 1, 10**6)):
        d = parse_length(spec, "f")
        xs = [d.draw(rng) for _ in range(20000)]
        assert abs(statistics.mean(xs) - 550 if "uniform" not in spec else statistics.mean(xs) - 500) < 15
        assert min(xs) >= lo and max(xs) <= hi
    xs = [parse_length("lognormal:550:0.5", "f").draw(rng) for _ in range(20000)]
    assert statistics.median(xs) < statistics.mean(xs)  # the long right tail


@pytest.mark.parametrize("flag, value", [("--input-tokens", "lognormal:550"), ("--output-tokens", "weird:1:2"),
                                         ("--input-tokens", "dataset"), ("--turns", "0"),
                                         ("--think-time", "-1"), ("--shared-prefix-tokens", "-5")])
def test_bad_length_flags_are_one_line(tmp_path, flag, value):
    proc = run_bench(flag, value, "--out", str(tmp_path / "x.toml"), timeout=30)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and (flag in err or flag.lstrip("-").replace("-", "_") in err), err


def test_lognormal_lengths_reach_the_server(sim, tmp_path):
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--input-tokens", "lognormal:200:0.6", "--output-tokens", "uniform:4:12",
                     "--concurrency", "4", "--requests-per-level", "24", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out.with_suffix(".jsonl"))
    assert {r["output_tokens"] for r in records} <= set(range(4, 13)) and len({r["output_tokens"] for r in records}) > 3
    ins = [r["input_tokens"] for r in records]
    assert max(ins) > 1.5 * min(ins)


# --- the load processes get the same workload --------------------------------------------------------------

def test_load_processes_carry_the_workload(sim, tmp_path):
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--workers", "2", "--turns", "2", "--shared-prefix-tokens", "400",
                     "--input-tokens", "60", "--output-tokens", "8", "--concurrency", "4",
                     "--requests-per-level", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(out.read_text())
    assert data["load"]["load_processes"] == 2
    records = read_jsonl(out.with_suffix(".jsonl"))
    assert {r["turn"] for r in records} == {1, 2}
    # One shared prefix for the whole run, whichever process sent the request: the cache serves it to all but
    # the first few (in flight together before any prefill ended).
    cached = [r["server_timing"]["cached_tokens"] for r in records]
    assert sum(c >= 380 for c in cached) >= len(cached) - 4


# --- presets ------------------------------------------------------------------------------------------------

PRESETS = ["chat", "rag", "code-completion", "summarisation", "seed-shape"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_say_what_they_stand_for(name):
    path = REPO / "configs" / "workloads" / f"{name}.toml"
    cfg = load_config(path)
    head = path.read_text().split("\n[", 1)[0]
    assert head.startswith("#") and "ource" in head  # a comment header with the source of its lengths
    src = PromptSource(cfg.workload)
    p = src.next(1)
    assert p.max_tokens >= 1 and p.text
    if name == "chat":
        assert src.conversations
    if name == "seed-shape":
        assert cfg.workload.input_tokens_mean == 64 and cfg.workload.output_tokens_mean == 144


def test_history_holds_the_servers_reply(sim, tmp_path):
    # The dataset's replies are one word; the server is asked for 60 tokens. The next turn must carry the 60.
    path = tmp_path / "d.jsonl"
    msgs = []
    for t in range(3):
        msgs += [{"role": "user", "content": f"q{t} " + "word " * 20}, {"role": "assistant", "content": "ok"}]
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    out = tmp_path / "run.toml"
    proc = run_bench("--url", sim.base_url, "--api", "chat", "--dataset", str(path), "--output-tokens", "60",
                     "--concurrency", "1", "--requests-per-level", "4", "--warmup-requests", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rs = sorted(read_jsonl(out.with_suffix(".jsonl")), key=lambda r: r["t_send_ns"])
    pairs = [(a, b) for a, b in zip(rs, rs[1:]) if b["turn"] == a["turn"] + 1]
    assert pairs
    for a, b in pairs:
        # The previous prompt, the server's 60-token reply, the new question (~21 tokens) and message headers.
        assert b["server_timing"]["prompt_tokens"] - a["server_timing"]["prompt_tokens"] >= 60 + 20


def test_dataset_from_the_config_file(tmp_path):
    data = openai_sample(tmp_path / "d.jsonl")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[workload]\noutput_tokens_dist = "fixed:9"\n\n[workload.dataset]\npath = "{data}"\n'
                        'format = "openai-chat"\n')
    cfg = load_config(cfg_path)
    src = PromptSource(cfg.workload)
    assert src.dataset is not None and src.dataset.format == "openai-chat" and src.next(1).max_tokens == 9
    cfg_path.write_text('[workload.dataset]\npath = "x.jsonl"\nformat = "csv"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: workload\.dataset\.format must be"):
        load_config(cfg_path)
    cfg_path.write_text('[workload]\ninput_tokens_dist = "dataset"\n')
    with pytest.raises(ConfigError, match=r"workload\.input_tokens_dist: 'dataset' lengths need a dataset"):
        load_config(cfg_path)
