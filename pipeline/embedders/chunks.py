"""Passages for search: a post's plain text cut into ~256-token chunks on paragraph boundaries,
headings kept with the paragraph they introduce, over-long paragraphs cut on sentences, then words."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SpanCount = Callable[[int, int], int]  # the tokens of text[start:end], for one text
_PARA = re.compile(r"\S(?:.*?\S)??(?=\n\s*\n|\Z)", re.DOTALL)
_SENTENCE = re.compile(r"[^.!?。！？]+(?:[.!?。！？]+|\Z)\s*", re.DOTALL)


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int


def _spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _PARA.finditer(text)]


def _split_long(text: str, start: int, end: int, count: SpanCount, limit: int) -> list[tuple[int, int]]:
    """A span over the limit → sentence spans, and a sentence over the limit → word windows."""
    out: list[tuple[int, int]] = []
    for m in _SENTENCE.finditer(text, start, end):
        s, e = m.start(), m.end()
        if m.group().strip() == "":
            continue
        if count(s, e) <= limit:
            out.append((s, e))
            continue
        words = [(w.start(), w.end()) for w in re.finditer(r"\S+", text[s:e])]
        i = 0
        while i < len(words):
            j = i + 1
            while j < len(words) and count(s + words[i][0], s + words[j][1]) <= limit:
                j += 1
            out.append((s + words[i][0], s + words[j - 1][1]))
            i = j
    return out


def chunk_text(plain: str, count_tokens: Callable[[str], int], max_tokens: int = 256,
               headings: Sequence[str] = (), span_tokens: SpanCount | None = None) -> list[Chunk]:
    """`span_tokens`, when given, counts the tokens of `plain[start:end]` for the spans chunking asks about (each
    starts and ends on a word boundary) without tokenising each span again: the same counts, from one pass."""
    count: SpanCount = span_tokens or (lambda s, e: count_tokens(plain[s:e]))
    heads = {h.strip() for h in headings if h.strip()}
    units: list[tuple[int, int]] = []
    for s, e in _spans(plain):
        units.extend([(s, e)] if count(s, e) <= max_tokens else _split_long(plain, s, e, count, max_tokens))
    chunks: list[Chunk] = []
    cur: tuple[int, int] | None = None
    for s, e in units:
        if cur is not None:
            merged = (cur[0], e)
            cur_is_heading = plain[cur[0]:cur[1]].strip() in heads
            if cur_is_heading or count(*merged) <= max_tokens:
                # a heading always travels with what follows it, even when that makes one long unit
                if count(*merged) <= max_tokens:
                    cur = merged
                    continue
            chunks.append(Chunk(len(chunks), plain[cur[0]:cur[1]], cur[0], cur[1]))
        cur = (s, e)
    if cur is not None:
        chunks.append(Chunk(len(chunks), plain[cur[0]:cur[1]], cur[0], cur[1]))
    return chunks


def post_embedding_input(post: dict[str, Any], instruction: str) -> str:
    """The original's post vector recipe: instruction, title, plain text, frontmatter JSON."""
    frontmatter = json.dumps(post.get("frontmatter") or {}, sort_keys=True, ensure_ascii=False)
    return f"{instruction} {post.get('title') or ''}\n\n{post.get('plain') or ''}\n\n{frontmatter}"
