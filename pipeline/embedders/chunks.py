"""Passages for search: a post's plain text cut into ~256-token chunks on paragraph boundaries,
headings kept with the paragraph they introduce, over-long paragraphs cut on sentences, then words."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


def _split_long(text: str, start: int, end: int, count: Callable[[str], int], limit: int) -> list[tuple[int, int]]:
    """A span over the limit → sentence spans, and a sentence over the limit → word windows."""
    out: list[tuple[int, int]] = []
    for m in _SENTENCE.finditer(text, start, end):
        s, e = m.start(), m.end()
        if m.group().strip() == "":
            continue
        if count(text[s:e]) <= limit:
            out.append((s, e))
            continue
        words = [(w.start(), w.end()) for w in re.finditer(r"\S+", text[s:e])]
        i = 0
        while i < len(words):
            j = i + 1
            while j < len(words) and count(text[s + words[i][0]:s + words[j][1]]) <= limit:
                j += 1
            out.append((s + words[i][0], s + words[j - 1][1]))
            i = j
    return out


def chunk_text(plain: str, count_tokens: Callable[[str], int], max_tokens: int = 256,
               headings: Sequence[str] = (), count_many: Callable[[list[str]], list[int]] | None = None) -> list[Chunk]:
    """`count_many`, when given, counts the paragraphs in one call (the same counts as `count_tokens`, one each)."""
    heads = {h.strip() for h in headings if h.strip()}
    spans = _spans(plain)
    counts = count_many([plain[s:e] for s, e in spans]) if count_many else [count_tokens(plain[s:e]) for s, e in spans]
    units: list[tuple[int, int]] = []
    for (s, e), n in zip(spans, counts, strict=True):
        units.extend([(s, e)] if n <= max_tokens else _split_long(plain, s, e, count_tokens, max_tokens))
    chunks: list[Chunk] = []
    cur: tuple[int, int] | None = None
    for s, e in units:
        if cur is not None:
            merged = (cur[0], e)
            cur_is_heading = plain[cur[0]:cur[1]].strip() in heads
            # counted once: the growing chunk is counted again at every merge, the plan's main cost
            fits = count_tokens(plain[merged[0]:merged[1]]) <= max_tokens
            if cur_is_heading or fits:
                # a heading always travels with what follows it, even when that makes one long unit
                if fits:
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
