"""A small deterministic tokenizer, used alike by /tokenize, usage counts and the output text.

Pieces are an optional leading space plus up to 4 word characters, or a run of punctuation, or
whitespace: roughly one token per 4 characters of English, like real BPE vocabularies.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

_PIECE = re.compile(r" ?\w{1,4}| ?[^\w\s]+|\s+")
VOCAB_SIZE = 128256  # Llama 3 vocabulary size, so ids look plausible
BOS_ID = 128000
# Chat template cost: header tokens per message, plus the assistant header that starts generation.
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TOKENS_GENERATION_PROMPT = 3

# Output vocabulary: each is exactly one token under _PIECE, and needs no JSON escaping.
WORDS = tuple(
    " " + w
    for w in (
        "the of and to in a is that for it as was with be by on not he this are or his from at but "
        "have an they you were her she one all we can has had more will no if out so up said what its "
        "into than them only new some time like just also when two may make each over most"
    ).split()
)


def piece_ids(text: str) -> list[int]:
    return [zlib.crc32(p.encode()) % BOS_ID for p in _PIECE.findall(text)]


def count_text(text: str) -> int:
    return len(_PIECE.findall(text))


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_ids(prompt: str | list[int], add_special_tokens: bool = True) -> list[int]:
    ids = list(prompt) if isinstance(prompt, list) else piece_ids(prompt)
    return ([BOS_ID] if add_special_tokens else []) + ids


def chat_ids(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
    ids = [BOS_ID]
    for m in messages:
        ids += [BOS_ID + 6] * CHAT_TOKENS_PER_MESSAGE  # header ids, fixed
        ids += piece_ids(_message_text(m.get("content")))
    if add_generation_prompt:
        ids += [BOS_ID + 6] * CHAT_TOKENS_GENERATION_PROMPT
    return ids
