"""Prompts sized to a target input-token count, distinct per request, reproducible with a seed.

Sized with the server's own `/tokenize` when it has one (vLLM, llama.cpp): each line of the bundled text
is counted once at start (with the newline that joins it to the next), and prompts are put together from
whole lines. Without `/tokenize`, counts are estimated from characters, and every `usage.prompt_tokens` the
server returns corrects the estimate.

Beyond one prompt a request (docs/workloads.md): a dataset file (core/datasets.py) instead of the sonnets;
conversations, where a slot holds one conversation and each turn re-sends the history; a shared prefix (a
system prompt common to every request of a group); long prompts (from LONG_PROMPT_TOKENS up), whose body is
built once per size and counted exactly with /tokenize; length distributions (core/lengths.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import httpx

from befori_tui.core.config import WorkloadConfig
from befori_tui.core.datasets import Conversation, Dataset, Turn, load_dataset
from befori_tui.core.lengths import LengthDist, parse_length

CHARS_PER_TOKEN_GUESS = 4.0  # English text with Llama-family tokenizers; only a start, usage corrects it
# From this many input tokens a prompt's body is built once per size (and counted exactly with /tokenize where
# the server has it), then reused behind each request's unique first line: a 128k-token prompt is ~0.5 MB of
# text, and neither building it per request nor holding it per record would do.
LONG_PROMPT_TOKENS = 4096
# Long bodies kept, least recently used dropped past this much text: ~16M tokens, so that a wide distribution
# of long sizes (60k ± 20k uses ~250 sizes) is counted by /tokenize once per size, not once per request.
LONG_BODIES_MAX_CHARS = 64 * 1024 * 1024
SIZE_STEPS_PER_OCTAVE = 128  # long targets round to 1/128 of their power of two: sizes within 0.4%
EXACT_REL = 0.002  # a long body is recounted until /tokenize says it is within this of its size


@dataclass(slots=True)
class Prompt:
    text: str
    target_tokens: int
    counted_tokens: int  # what we believe the prompt is, before the server's usage says
    count_source: str  # "tokenize" or "estimate"
    max_tokens: int
    # The count before the usage correction: what the correction's running sums must compare usage with.
    # 0: not put together from counted lines (a dataset's text, a conversation), so usage corrects nothing.
    raw_tokens: float = 0.0
    messages: list[dict] | None = None  # the chat API's messages; None: one user message holding `text`
    turn: int = 0  # the turn's number in a conversation of several (1, 2, …); 0: a request on its own
    think_s: float = 0.0  # how long the slot waits before sending it (a conversation's think time)
    reply: str = ""  # a conversation's turn: the text the server replied (core/client.py keeps it)


@dataclass(slots=True)
class _Long:
    """A long request waiting for its body: its unique first line, sizes and shared prefix."""

    head: str
    target: int
    max_tokens: int
    system: tuple[str, float] | None


@dataclass(slots=True)
class _Chat:
    """The conversation a slot holds: what was said so far, and the turn in flight."""

    conv: Conversation | None  # a dataset's; None: made up from the bundled text, turn by turn
    n_turns: int
    group: int  # its shared prefix, for every turn
    history: list[dict]  # messages of the turns that ended, system first
    next_turn: int = 0
    pending: tuple[str, str] | None = None  # (user text, reply) of the turn in flight


def bundled_lines() -> list[str]:
    text = resources.files("befori_tui.core").joinpath("data/sonnets.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def draw_count(rng: random.Random, mean: float, sd: float) -> int:
    return max(1, round(rng.gauss(mean, sd))) if sd > 0 else max(1, round(mean))


def size_bucket(tokens: int) -> int:
    """A long target rounded to one of SIZE_STEPS_PER_OCTAVE sizes per power of two (within 0.4%)."""
    step = max(1, (1 << (tokens.bit_length() - 1)) // SIZE_STEPS_PER_OCTAVE)
    return max(step, round(tokens / step) * step)


def render_transcript(messages: list[dict]) -> str:
    """The completions API's text for a conversation: every turn so far, ending where the assistant speaks.
    Each turn's text begins with the whole of the previous turn's, so a prefix cache can serve it."""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(m["content"] + "\n")
        else:
            out.append(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}\n")
    return "".join(out) + "Assistant:"


class PromptSource:
    """Makes the next prompt. Not thread-safe; used from the load loop only."""

    def __init__(self, workload: WorkloadConfig, dataset: Dataset | None = None) -> None:
        self.workload = workload
        self.rng = random.Random(workload.seed)
        # The seed fixes lengths and text; this per-run tag keeps a rerun with the same seed from being served
        # out of the server's prefix cache (llama.cpp's prompt cache and vLLM's prefix caching would). Several
        # load processes share the run's tag (core/worker.py), so their shared prefixes are the same text.
        self.run_tag = os.urandom(4).hex()
        self.lines = bundled_lines()
        self.line_tokens = [len(line) / CHARS_PER_TOKEN_GUESS for line in self.lines]
        self.count_source = "estimate"
        self.lines_counted = False  # the lines' counts are the server's (/tokenize)
        self.head_tokens = 0.0  # a unique first line's tokens, counted once
        # Running sums that correct our counts with the server's usage.prompt_tokens.
        self._counted_sum = 0.0
        self._usage_sum = 0.0
        w = workload
        path = w.dataset.path or ("" if w.prompt_source == "sonnets" else w.prompt_source)
        fmt = w.dataset.format if w.dataset.path else "prompts"
        self.dataset = dataset or (load_dataset(path, fmt) if path else None)
        self._order: list[int] = []
        if self.dataset is not None:
            self._order = list(range(len(self.dataset.conversations)))
            self.rng.shuffle(self._order)
        self._next_conv = 0
        self.input_dist = self._dist(w.input_tokens_dist, w.input_tokens_mean, w.input_tokens_sd)
        self.output_dist = self._dist(w.output_tokens_dist, w.output_tokens_mean, w.output_tokens_sd)
        self.turns_dist = parse_length(w.turns, "workload.turns", self.dataset is not None) if w.turns else None
        multi = self.dataset.multi_turn if self.dataset is not None else False
        many_turns = self.turns_dist is not None and (self.turns_dist.from_dataset or self.turns_dist.kind != "fixed"
                                                      or self.turns_dist.a > 1)
        # Conversations: a slot holds one at a time. A multi-turn dataset is played as conversations unless
        # workload.turns says 1.
        self.conversations = many_turns or (multi and self.turns_dist is None)
        self._chats: dict[int, _Chat] = {}
        self._prefixes: dict[int, tuple[str, float]] = {}
        self._bodies: OrderedDict[int, tuple[str, float, str]] = OrderedDict()
        self._bodies_chars = 0
        self._body_locks: dict[int, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None
        self._root_url = ""
        self._model = ""

    def _dist(self, spec: str, mean: int, sd: float) -> LengthDist | None:
        """The distribution to draw from; None: the dataset's own length."""
        if spec:
            d = parse_length(spec, "workload", self.dataset is not None)
            return None if d.from_dataset else d
        if self.dataset is not None:
            return None  # with a dataset and no distribution set, lengths are the data's
        return LengthDist("normal", mean, sd) if sd > 0 else LengthDist("fixed", mean)

    @property
    def correction(self) -> float:
        """usage tokens per counted token so far, bounded so one odd reply cannot run away."""
        if self._counted_sum <= 0:
            return 1.0
        return min(4.0, max(0.25, self._usage_sum / self._counted_sum))

    async def calibrate(self, client: httpx.AsyncClient, root_url: str, model: str) -> bool:
        """Count every bundled line (with the newline that joins it to the next) with the server's /tokenize.
        False when the server has none. A dataset's prompts stay estimated; its shared prefixes and made-up
        replies use the lines too."""
        head = f"Request {self.run_tag}-1000-{0:08x}. Continue these lines:\n"
        counts = await tokenize_many(client, root_url, model, [line + "\n" for line in self.lines] + [head])
        if counts is None:
            return False
        self.line_tokens = [float(c) for c in counts[:-1]]
        self.head_tokens = float(counts[-1])
        self.lines_counted = True
        if self.dataset is None:
            self.count_source = "tokenize"
        return True

    def attach(self, client: httpx.AsyncClient, root_url: str, model: str) -> None:
        """The client for counting long prompts exactly with /tokenize (when the lines were counted there)."""
        self._http, self._root_url, self._model = client, root_url, model

    def observe_usage(self, prompt: Prompt, usage_prompt_tokens: int) -> None:
        if usage_prompt_tokens > 0 and prompt.raw_tokens > 0:
            # The uncorrected count: adding the corrected one would pull the ratio towards usage/target, not
            # usage/counted, and prompts would stay too long (a chat template's fixed tokens: +30 % at 64 in).
            self._counted_sum += prompt.raw_tokens
            self._usage_sum += usage_prompt_tokens

    # --- text from the bundled lines -------------------------------------------------------------------------

    def _compose(self, budget: float, start: int, parts: list[str], counted: float) -> float:
        """Append whole lines from `start` to `parts` until `budget` tokens are counted; the last one cut to
        the words still wanted. Returns the count."""
        i = start % len(self.lines)
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
        return counted

    def _lines_text(self, tokens: int) -> str:
        parts: list[str] = []
        self._compose(tokens / self.correction, self.rng.randrange(len(self.lines)), parts, 0.0)
        return "\n".join(parts)

    def shared_prefix(self, group: int) -> tuple[str, float]:
        """The system prompt of a group: the same text for every request of the group in this run, made once."""
        got = self._prefixes.get(group)
        if got is None:
            head = f"Shared context {self.run_tag}-{group}: keep to the style of these lines."
            parts = [head]
            # Where in the text a group's prefix starts depends on the group only, so load processes agree.
            start = random.Random(f"{self.run_tag}:{group}").randrange(len(self.lines))
            n = self._compose(self.workload.shared_prefix_tokens, start, parts, len(head) / CHARS_PER_TOKEN_GUESS)
            got = self._prefixes[group] = ("\n".join(parts), n)
        return got

    def _group(self) -> int:
        return self.rng.randrange(self.workload.prefix_groups) if self.workload.shared_prefix_tokens else -1

    def _max_tokens(self, turn: Turn | None) -> int:
        if self.output_dist is not None:
            return self.output_dist.draw(self.rng)
        if turn is not None and turn.reply_length() is not None:
            return turn.reply_length()
        w = self.workload  # a dataset record with no reply: the output keys, as --prompts always did
        return draw_count(self.rng, w.output_tokens_mean, w.output_tokens_sd)

    def _fit(self, text: str) -> str:
        """A dataset's text cut or repeated to a length drawn from the input distribution, when one is set."""
        if self.input_dist is None:
            return text
        text = text or self.lines[0]  # an empty message (datasets have them) cannot be stretched
        want_chars = round(self.input_dist.draw(self.rng) * CHARS_PER_TOKEN_GUESS / self.correction)
        while len(text) < want_chars:
            text = text + "\n" + text
        return text[:want_chars]

    def _next_conversation(self) -> Conversation:
        assert self.dataset is not None
        conv = self.dataset.conversations[self._order[self._next_conv % len(self._order)]]
        self._next_conv += 1
        return conv

    # --- one request -----------------------------------------------------------------------------------------

    def next(self, request_id: int) -> Prompt:
        """A request on its own (not a conversation's turn); a long body is sized by the line counts only."""
        prompt = self._single(request_id)
        if isinstance(prompt, Prompt):
            return prompt
        tokens = size_bucket(max(1, prompt.target - round(self.head_tokens)))
        got = self._bodies.get(tokens)
        if got is None:
            got = self._keep(tokens, self._estimated_body(tokens))
        return self._long_prompt(prompt, got)

    async def next_for_slot(self, slot: int, request_id: int) -> Prompt:
        """What slot `slot` sends next: its conversation's next turn, or a request on its own."""
        if self.conversations:
            return self._turn(slot, request_id)
        prompt = self._single(request_id)
        if isinstance(prompt, Prompt):
            return prompt
        body = await self._long_body(size_bucket(max(1, prompt.target - round(self.head_tokens))))
        return self._long_prompt(prompt, body)

    def _long_prompt(self, req: _Long, body: tuple[str, float, str]) -> Prompt:
        text, body_tokens, source = body
        text = req.head + "\n" + text
        head_tokens = self.head_tokens or len(req.head) / CHARS_PER_TOKEN_GUESS
        if req.system is None:
            return Prompt(text, req.target, round(head_tokens + body_tokens), source, req.max_tokens)
        counted = round(head_tokens + body_tokens + req.system[1])
        return Prompt(req.system[0] + "\n" + text, req.target + self.workload.shared_prefix_tokens, counted,
                      source, req.max_tokens, 0.0,
                      [{"role": "system", "content": req.system[0]}, {"role": "user", "content": text}])

    def ended(self, slot: int, prompt: Prompt, ok: bool) -> None:
        """A request of the slot ended: a conversation moves on to its next turn, or, failed, ends."""
        chat = self._chats.get(slot)
        if not prompt.turn or chat is None or chat.pending is None:
            return
        user, reply = chat.pending
        chat.pending = None
        if not ok:
            del self._chats[slot]  # a chat client would start again; so does the slot
            return
        # What the server said goes into the history, as a chat client keeps it (and as the server's prefix
        # cache holds it); the dataset's reply (or made-up text) only when the server's text is not known.
        reply = prompt.reply or reply
        chat.history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        chat.next_turn += 1

    def _single(self, request_id: int):
        w = self.workload
        group = self._group()
        system = self.shared_prefix(group) if group >= 0 else None
        if self.dataset is not None:
            conv = self._next_conversation()
            turn = conv.turns[0]
            max_tokens = self._max_tokens(turn)
            text = self._fit(turn.user)
            sys_text = "\n".join(t for t in ((system or ("", 0))[0], conv.system) if t)
            est = max(1, round(len(sys_text + text) / CHARS_PER_TOKEN_GUESS))
            if sys_text:
                return Prompt(sys_text + "\n" + text, est, est, "estimate", max_tokens, 0.0,
                              [{"role": "system", "content": sys_text}, {"role": "user", "content": text}])
            return Prompt(text, est, est, "estimate", max_tokens)
        max_tokens = self.output_dist.draw(self.rng)
        target = self.input_dist.draw(self.rng)
        # A unique opening line defeats prefix caches, which would otherwise flatter TTFT.
        head = f"Request {self.run_tag}-{request_id}-{self.rng.getrandbits(32):08x}. Continue these lines:"
        if target >= LONG_PROMPT_TOKENS:
            return _Long(head, target, max_tokens, system)
        parts = [head]
        budget = target / self.correction
        counted = self._compose(budget, self.rng.randrange(len(self.lines)), parts,
                                len(head) / CHARS_PER_TOKEN_GUESS)
        text = "\n".join(parts)
        counted_tokens = max(1, round(counted * self.correction))
        if system is not None:
            # The shared prefix comes on top of the drawn length: the drawn part is what is unique.
            return Prompt(system[0] + "\n" + text, target + w.shared_prefix_tokens,
                          counted_tokens + round(system[1]), self.count_source, max_tokens, counted + system[1],
                          [{"role": "system", "content": system[0]}, {"role": "user", "content": text}])
        return Prompt(text, target, counted_tokens, self.count_source, max_tokens, counted)

    # --- trace replay ----------------------------------------------------------------------------------------

    def _trace_block(self, hash_id: int, tokens: float) -> tuple[str, float]:
        """The first `tokens` tokens of the block a trace's hash id names: the same text for that id all run
        long (where in the bundled text it starts depends on the id only), so requests sharing leading hash
        ids share leading text. Made again when asked, not kept: a trace names ~10^5 blocks."""
        parts: list[str] = [f"Block {self.run_tag}-{hash_id}."]
        start = random.Random(f"{self.run_tag}:block:{hash_id}").randrange(len(self.lines))
        counted = self._compose(tokens, start, parts, len(parts[0]) / CHARS_PER_TOKEN_GUESS)
        return "\n".join(parts), counted

    def for_trace(self, request_id: int, entry) -> Prompt:
        """A trace line's request (core/trace.py): input_length tokens — its hash ids' blocks of BLOCK_TOKENS
        first, then text of its own — and max_tokens = output_length."""
        from befori_tui.core.trace import BLOCK_TOKENS

        target = entry.input_length
        parts: list[str] = []
        counted = 0.0
        for hash_id in entry.hash_ids:
            if counted >= target - 1:
                break
            # The last block may be cut: its text is then a prefix of the whole block's, as the trace means.
            text, n = self._trace_block(hash_id, min(BLOCK_TOKENS, target - counted))
            parts.append(text)
            counted += n
        if counted < target - 1:
            # The rest is the request's own: a unique first line, as for any request on its own.
            head = f"Request {self.run_tag}-{request_id}-{self.rng.getrandbits(32):08x}. Continue these lines:"
            parts.append(head)
            counted = self._compose(counted + (target - counted) / self.correction, self.rng.randrange(len(self.lines)),
                                    parts, counted + (self.head_tokens or len(head) / CHARS_PER_TOKEN_GUESS))
        text = "\n".join(parts)
        return Prompt(text, target, max(1, round(counted)), self.count_source, entry.output_length,
                      counted if not entry.hash_ids else 0.0)

    # --- conversations ---------------------------------------------------------------------------------------

    def _new_chat(self) -> _Chat:
        conv = self._next_conversation() if self.dataset is not None else None
        if conv is not None:
            n = len(conv.turns)
            if self.turns_dist is not None and not self.turns_dist.from_dataset:
                n = min(n, self.turns_dist.draw(self.rng))
        else:
            assert self.turns_dist is not None and not self.turns_dist.from_dataset
            n = self.turns_dist.draw(self.rng)
        group = self._group()
        system = [self.shared_prefix(group)[0]] if group >= 0 else []
        if conv is not None and conv.system:
            system.append(conv.system)
        history = [{"role": "system", "content": "\n".join(system)}] if system else []
        return _Chat(conv, n, group, history)

    def _turn(self, slot: int, request_id: int) -> Prompt:
        chat = self._chats.get(slot)
        think_s = 0.0
        if chat is None or chat.next_turn >= chat.n_turns:
            chat = self._chats[slot] = self._new_chat()
        else:
            w = self.workload
            think_s = max(0.0, self.rng.gauss(w.think_time_s_mean, w.think_time_s_sd)) if w.think_time_s_sd \
                else w.think_time_s_mean
        if chat.conv is not None:
            turn = chat.conv.turns[chat.next_turn]
            user = self._fit(turn.user)
            max_tokens = self._max_tokens(turn)
            reply = turn.reply or self._lines_text(max_tokens)
        else:
            user = self._lines_text(self.input_dist.draw(self.rng))
            if chat.next_turn == 0:
                # A conversation's first line is unique, so conversations do not share a cache (only their turns do).
                user = f"Conversation {self.run_tag}-{request_id}-{self.rng.getrandbits(32):08x}.\n{user}"
            max_tokens = self.output_dist.draw(self.rng)
            reply = self._lines_text(max_tokens)  # what the assistant "said", as long as it was asked to be
        chat.pending = (user, reply)
        messages = chat.history + [{"role": "user", "content": user}]
        text = render_transcript(messages)
        est = max(1, round(len(text) / CHARS_PER_TOKEN_GUESS))
        return Prompt(text, est, est, "estimate", max_tokens, 0.0, messages, chat.next_turn + 1, think_s)

    # --- long prompts ----------------------------------------------------------------------------------------

    async def _long_body(self, tokens: int) -> tuple[str, float, str]:
        """The body of a long prompt of `tokens` tokens: built once per size, counted with /tokenize when the
        server has it. (text, its count, where the count came from)."""
        got = self._bodies.get(tokens)
        if got is not None:
            self._bodies.move_to_end(tokens)
            return got
        lock = self._body_locks.setdefault(tokens, asyncio.Lock())
        async with lock:
            got = self._bodies.get(tokens)
            if got is None:
                got = self._keep(tokens, await self._build_body(tokens))
            self._body_locks.pop(tokens, None)
            return got

    def _keep(self, tokens: int, body: tuple[str, float, str]) -> tuple[str, float, str]:
        self._bodies[tokens] = body
        self._bodies_chars += len(body[0])
        while self._bodies_chars > LONG_BODIES_MAX_CHARS and len(self._bodies) > 1:
            _, (text, _, _) = self._bodies.popitem(last=False)
            self._bodies_chars -= len(text)
        return body

    def _estimated_body(self, tokens: int) -> tuple[str, float, str]:
        parts: list[str] = []
        start = random.Random(f"{self.run_tag}:body:{tokens}").randrange(len(self.lines))
        counted = self._compose(tokens / self.correction, start, parts, 0.0)
        return "\n".join(parts), counted * self.correction, self.count_source

    async def _build_body(self, tokens: int) -> tuple[str, float, str]:
        exact = self.lines_counted and self._http is not None
        if not exact:
            return self._estimated_body(tokens)
        parts: list[str] = []
        start = random.Random(f"{self.run_tag}:body:{tokens}").randrange(len(self.lines))
        counted = self._compose(tokens, start, parts, 0.0)
        text = "\n".join(parts)
        for _ in range(4):  # the line counts are near; /tokenize says exactly, and the text is trimmed to it
            counts = await tokenize_many(self._http, self._root_url, self._model, [text])
            if counts is None:
                return text, counted, "tokenize"  # /tokenize went away: the lines' counts
            n = counts[0]
            if abs(n - tokens) <= max(1, tokens * EXACT_REL):
                return text, float(n), "tokenize"
            chars_per_token = len(text) / max(n, 1)
            if n > tokens:
                cut = text.rfind(" ", 0, max(1, round(len(text) - (n - tokens) * chars_per_token)))
                text = text[:cut] if cut > 0 else text
            else:
                more: list[str] = []
                self._compose(tokens - n, start + len(parts), more, 0.0)
                text = text + "\n" + "\n".join(more)
        counts = await tokenize_many(self._http, self._root_url, self._model, [text])
        return (text, float(counts[0]), "tokenize") if counts else (text, counted, "estimate")


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
