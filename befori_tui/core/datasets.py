"""Datasets from files: conversations and prompts people really send (docs/workloads.md).

Three formats, detected per record or named:

- ShareGPT-style: a JSON array (or JSONL) of {"conversations": [{"from": "human"|"gpt"|"system", "value": …}, …]}
- OpenAI chat: JSONL (or a JSON array) of {"messages": [{"role": "user"|"assistant"|"system", "content": …}, …]}
- prompts: JSONL of {"prompt": "…", "output_tokens": N} — what `--prompts` has always read

Each becomes a Conversation: an optional system prompt and turns of (user text, the dataset's reply). A
one-prompt record is a conversation of one turn. Nothing is fetched from the network: the file is read once,
at start, and a bad one is one line naming the file and line (ConfigError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from befori_tui.core.config import ConfigError

FORMATS = ("sharegpt", "openai-chat", "prompts")
CHARS_PER_TOKEN_GUESS = 4.0  # as in prompts.py: a reply's length in tokens, estimated from its characters

# ShareGPT's speaker names, as found in the common dumps (ShareGPT V3, LMSYS, WildChat conversions).
_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
_SYSTEM = {"system"}


@dataclass(slots=True)
class Turn:
    user: str
    reply: str = ""  # the dataset's reply; "" when it has none
    reply_tokens: int | None = None  # an explicit output length (the prompts format's output_tokens)

    def reply_length(self) -> int | None:
        """The reply's length in tokens, as max_tokens: given, or estimated from the reply's text."""
        if self.reply_tokens is not None:
            return self.reply_tokens
        if self.reply:
            return max(1, round(len(self.reply) / CHARS_PER_TOKEN_GUESS))
        return None


@dataclass(slots=True)
class Conversation:
    turns: list[Turn]
    system: str = ""


@dataclass
class Dataset:
    path: str
    format: str  # what was found (the formats of all records, when auto found several: "mixed")
    conversations: list[Conversation] = field(default_factory=list)
    skipped: int = 0  # records with no user turn (ShareGPT dumps have empty ones)

    @property
    def multi_turn(self) -> bool:
        return any(len(c.turns) > 1 for c in self.conversations)


def _records(p: Path, text: str) -> list[tuple[int, object]]:
    """(line number, parsed value) of every record: the items of a JSON array, or the lines of JSONL."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        dec = json.JSONDecoder()
        out: list[tuple[int, object]] = []
        i = text.index("[") + 1
        n = len(text)

        def skip_ws(j: int) -> int:
            while j < n and text[j] in " \t\r\n":
                j += 1
            return j

        i = skip_ws(i)
        if i < n and text[i] == "]":
            return out
        while True:
            line = text.count("\n", 0, i) + 1
            try:
                value, i = dec.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{exc.lineno}: not JSON ({exc.msg})") from None
            out.append((line, value))
            i = skip_ws(i)
            if i < n and text[i] == ",":
                i = skip_ws(i + 1)
                continue
            if i < n and text[i] == "]":
                break
            line = text.count("\n", 0, i) + 1
            raise ConfigError(f"{p}:{line}: not JSON (expected ',' or ']' in the array)")
        return out
    out = []
    for n_line, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n_line, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{n_line}: not JSON ({exc.msg}); a dataset is JSONL, one object a line, "
                              "or one JSON array") from None
    return out


def _text(value: object) -> str | None:
    """A message's text: a string, or OpenAI content parts' text joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def _detect(item: dict) -> str | None:
    if "conversations" in item:
        return "sharegpt"
    if "messages" in item:
        return "openai-chat"
    if "prompt" in item:
        return "prompts"
    return None


def _messages(where: str, msgs: object, speaker_key: str, text_key: str, kind: str) -> Conversation:
    if not isinstance(msgs, list):
        raise ConfigError(f"{where}: {kind} needs a list")
    system: list[str] = []
    turns: list[Turn] = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get(speaker_key), str):
            raise ConfigError(f"{where}: every message of {kind} needs a string \"{speaker_key}\"")
        text = _text(m.get(text_key))
        if text is None:
            raise ConfigError(f"{where}: every message of {kind} needs a string \"{text_key}\"")
        who = m[speaker_key].lower()
        if who in _SYSTEM:
            system.append(text)
        elif who in _USER:
            turns.append(Turn(text))
        elif who in _ASSISTANT or who == "tool":
            if turns and not turns[-1].reply:
                turns[-1].reply = text
            # A reply with no user turn before it (ShareGPT dumps often begin with one) is left out.
        else:
            raise ConfigError(f"{where}: unknown speaker {m[speaker_key]!r} in {kind}")
    return Conversation(turns, "\n".join(system))


def _prompt_record(where: str, item: dict) -> Conversation:
    if not isinstance(item.get("prompt"), str) or not item["prompt"]:
        raise ConfigError(f"{where}: each line needs a non-empty string \"prompt\"")
    out = item.get("output_tokens")
    if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
        raise ConfigError(f"{where}: \"output_tokens\" must be an integer ≥ 1")
    return Conversation([Turn(item["prompt"], "", out)])


def load_dataset(path: str, fmt: str = "auto") -> Dataset:
    """Read and check a whole dataset file. Raises ConfigError naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the dataset ({exc.strerror or exc})") from None
    if not text.strip():
        raise ConfigError(f"{p}: the dataset is empty")
    records = _records(p, text)
    if not records:
        raise ConfigError(f"{p}: the dataset is empty")
    found: set[str] = set()
    ds = Dataset(str(p), fmt)
    for line, item in records:
        where = f"{p}:{line}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: each record must be a JSON object")
        kind = _detect(item) if fmt == "auto" else fmt
        if kind is None:
            raise ConfigError(f"{where}: no \"conversations\" (ShareGPT), \"messages\" (OpenAI chat) or \"prompt\" "
                              "in this record")
        found.add(kind)
        if kind == "sharegpt":
            if "conversations" not in item:
                raise ConfigError(f"{where}: no \"conversations\" list (ShareGPT format)")
            conv = _messages(where, item["conversations"], "from", "value", '"conversations"')
        elif kind == "openai-chat":
            if "messages" not in item:
                raise ConfigError(f"{where}: no \"messages\" list (OpenAI chat format)")
            conv = _messages(where, item["messages"], "role", "content", '"messages"')
        else:
            conv = _prompt_record(where, item)
        if conv.turns:
            ds.conversations.append(conv)
        else:
            ds.skipped += 1
    if not ds.conversations:
        raise ConfigError(f"{p}: no record has a user turn (all {len(records)} are empty)")
    ds.format = found.pop() if len(found) == 1 else "mixed"
    return ds
