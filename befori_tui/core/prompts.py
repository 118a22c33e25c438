"""Prompts sized to a target input-token count, distinct per request, reproducible with a seed.

Sized with the server's own `/tokenize` when it has one (vLLM, llama.cpp): each line of the bundled text
is counted once at start, and prompts are put together from whole lines. Without `/tokenize`, counts are
estimated from characters, and every `usage.prompt_tokens` the server returns corrects the estimate.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx

from befori_tui.core.config import ConfigError, WorkloadConfig

CHARS_PER_TOKEN_GUESS = 4.0  # English text with Llama-family tokenizers; only a start, usage corrects it


@dataclass(slots=True)
class Prompt:
    text: str
    target_tokens: int
    counted_tokens: int  # what we believe the prompt is, before the server's usage says
    count_source: str  # "tokenize" or "estimate"
    max_tokens: int
    # The count before the usage correction: what the correction's running sums must compare usage with.
    raw_tokens: float = 0.0


def bundled_lines() -> list[str]:
    text = resources.files("befori_tui.core").joinpath("data/sonnets.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def draw_count(rng: random.Random, mean: float, sd: float) -> int:
    return max(1, round(rng.gauss(mean, sd))) if sd > 0 else max(1, round(mean))


class PromptSource:
    """Makes the next prompt. Not thread-safe; used from the load loop only."""

    def __init__(self, workload: WorkloadConfig) -> None:
        self.workload = workload
        self.rng = random.Random(workload.seed)
        # The seed fixes lengths and text; this per-run tag keeps a rerun with the same seed from being served
        # out of the server's prefix cache (llama.cpp's prompt cache and vLLM's prefix caching would).
        self.run_tag = os.urandom(4).hex()
        self.lines = bundled_lines()
        self.line_tokens = [len(line) / CHARS_PER_TOKEN_GUESS for line in self.lines]
        self.count_source = "estimate"
        # Running sums that correct our counts with the server's usage.prompt_tokens.
        self._counted_sum = 0.0
        self._usage_sum = 0.0
        self._jsonl: list[dict] | None = None
        self._jsonl_next = 0
        if workload.prompt_source != "sonnets":
            self._jsonl = read_jsonl_prompts(workload.prompt_source)
            self.rng.shuffle(self._jsonl)

    @property
    def correction(self) -> float:
        """usage tokens per counted token so far, bounded so one odd reply cannot run away."""
        if self._counted_sum <= 0:
            return 1.0
        return min(4.0, max(0.25, self._usage_sum / self._counted_sum))

    async def calibrate(self, client: httpx.AsyncClient, root_url: str, model: str) -> bool:
        """Count every bundled line with the server's /tokenize. False when the server has none."""
        if self._jsonl is not None:
            return False
        counts = await tokenize_many(client, root_url, model, self.lines)
        if counts is None:
            return False
        self.line_tokens = [float(c) for c in counts]
        self.count_source = "tokenize"
        return True

    def observe_usage(self, prompt: Prompt, usage_prompt_tokens: int) -> None:
        if usage_prompt_tokens > 0 and self._jsonl is None:
            # The uncorrected count: adding the corrected one would pull the ratio towards usage/target, not
            # usage/counted, and prompts would stay too long (a chat template's fixed tokens: +30 % at 64 in).
            self._counted_sum += prompt.raw_tokens or prompt.counted_tokens
            self._usage_sum += usage_prompt_tokens

    def next(self, request_id: int) -> Prompt:
        w = self.workload
        max_tokens = draw_count(self.rng, w.output_tokens_mean, w.output_tokens_sd)
        if self._jsonl is not None:
            item = self._jsonl[self._jsonl_next % len(self._jsonl)]
            self._jsonl_next += 1
            text = item["prompt"]
            est = max(1, round(len(text) / CHARS_PER_TOKEN_GUESS))
            return Prompt(text, est, est, "estimate", int(item.get("output_tokens", max_tokens)))
        target = draw_count(self.rng, w.input_tokens_mean, w.input_tokens_sd)
        # A unique opening line defeats prefix caches, which would otherwise flatter TTFT.
        prefix = f"Request {self.run_tag}-{request_id}-{self.rng.getrandbits(32):08x}. Continue these lines:"
        parts = [prefix]
        budget = target / self.correction
        counted = len(prefix) / CHARS_PER_TOKEN_GUESS
        i = self.rng.randrange(len(self.lines))
        while counted < budget:
            line, line_tokens = self.lines[i], self.line_tokens[i]
            if counted + line_tokens > budget:
                # Take the first words of the last line, in proportion to the tokens still wanted.
                words = line.split()
                take = max(1, round(len(words) * (budget - counted) / max(line_tokens, 1e-9)))
                line = " ".join(words[:take])
                line_tokens = line_tokens * take / len(words)
            parts.append(line)
            counted += line_tokens
            i = (i + 1) % len(self.lines)
        counted_tokens = max(1, round(counted * self.correction))
        return Prompt("\n".join(parts), target, counted_tokens, self.count_source, max_tokens, counted)


async def tokenize_many(
    client: httpx.AsyncClient, root_url: str, model: str, texts: list[str], parallel: int = 8
) -> list[int] | None:
    """Token counts from /tokenize (vLLM shape, then llama.cpp's), or None when the server has neither."""
    url = root_url.rstrip("/") + "/tokenize"

    async def count(text: str) -> int:
        resp = await client.post(url, json={"model": model, "prompt": text, "content": text,
                                            "add_special_tokens": False})
        resp.raise_for_status()
        data = resp.json()
        if isinstance(data.get("count"), int):
            return data["count"]
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
        raise ValueError("no count in /tokenize reply")

    try:
        await count(texts[0])
    except (httpx.HTTPError, ValueError, json.JSONDecodeError):
        return None
    sem = asyncio.Semaphore(parallel)

    async def limited(text: str) -> int:
        async with sem:
            return await count(text)

    try:
        return list(await asyncio.gather(*(limited(t) for t in texts)))
    except (httpx.HTTPError, ValueError, json.JSONDecodeError):
        return None


def read_jsonl_prompts(path: str) -> list[dict]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read prompt file ({getattr(exc, 'strerror', None) or exc})") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{p}:{n}: not a JSON object") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"]:
            raise ConfigError(f"{p}:{n}: each line needs a non-empty string \"prompt\"")
        if "output_tokens" in item and (not isinstance(item["output_tokens"], int) or item["output_tokens"] < 1):
            raise ConfigError(f"{p}:{n}: \"output_tokens\" must be an integer ≥ 1")
        items.append(item)
    if not items:
        raise ConfigError(f"{p}: no prompts in file")
    return items
