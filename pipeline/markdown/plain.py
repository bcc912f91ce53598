"""Plain text from the parsed token tree: what search indexes, embeddings and snippets read."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

Token = dict[str, Any]

_TAG = re.compile(r"<!--.*?-->|<[^>]+>", re.DOTALL)
_SPACES = re.compile(r"[ \t]+")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
# CJK scripts have no spaces between words: each character counts as one, which is how their readers count.
# `[^\W<CJK>]` is a word character that is not CJK, as one class: the same matches as a lookahead before every
# `\w`, at half the cost (counting words was a fifth of rendering a post).
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+(?:['’.-][^\W{_CJK}]+)*")
_INLINE_SKIP = frozenset({"image", "inline_html", "footnote_ref"})
_CONTAINERS = frozenset({"block_quote", "list", "list_item", "task_list_item", "footnotes", "footnote_item",
                         "table", "table_head", "table_body"})
_LEAVES = frozenset({"paragraph", "heading", "block_text"})
# Site generators' template syntax is kept in the HTML (a site's own build expands it) but is noise to search
# and embeddings: Hugo shortcodes `{{< x >}}` / `{{% x %}}`, Liquid and Zola tags `{% x %}`, Zola's inline
# shortcodes `{{ name(…) }}` and Liquid's `{{ site.x }}`-style variables. What a paired shortcode wraps stays.
# `{{<figure …>}}` without a space parses as raw HTML between `{{` and `}}`, which leaves an empty `{{}}`.
_TEMPLATE = re.compile(r"\{\{[<%].*?[>%]\}\}|\{%.*?%\}|\{\{-?\s*[A-Za-z_][\w.]*\(.*?\)\s*-?\}\}"
                       r"|\{\{-?\s*(?:site|page|layout|paginator|include|config|section)\.[\w.]*[^{}]*\}\}|\{\{\s*\}\}",
                       re.DOTALL)
_CODE_MARK = re.compile("\x00(\\d+)\x00")


@dataclass(frozen=True)
class PlainText:
    text: str
    first_paragraph: str
    word_count: int


def inline_text(tokens: list[Token]) -> str:
    """Text of inline tokens without markup; images (alt text) and raw HTML are left out."""
    parts: list[str] = []
    for tok in tokens:
        kind = tok["type"]
        if kind in _INLINE_SKIP:
            continue
        if kind == "softbreak":
            parts.append(" ")
        elif kind == "linebreak":
            parts.append("\n")
        elif "children" in tok:
            parts.append(inline_text(tok["children"]))
        elif "raw" in tok:
            parts.append(str(tok["raw"]))
    return "".join(parts)


def without_templates(text: str) -> str:
    """`text` without template syntax (above), and without the runs of spaces its removal leaves."""
    if "{{" not in text and "{%" not in text:
        return text
    return _SPACES.sub(" ", _TEMPLATE.sub("", text)).strip()


def _leaf_text(tokens: list[Token]) -> str:
    """inline_text of a paragraph or heading without template syntax; inline code keeps it (it is shown)."""
    code: list[str] = []

    def mark(toks: list[Token]) -> list[Token]:
        out: list[Token] = []
        for tok in toks:
            if tok["type"] == "codespan":
                code.append(str(tok.get("raw", "")))
                out.append({"type": "text", "raw": f"\x00{len(code) - 1}\x00"})
            elif "children" in tok:
                out.append({**tok, "children": mark(tok["children"])})
            else:
                out.append(tok)
        return out

    text = without_templates(inline_text(mark(tokens)).strip())
    return _CODE_MARK.sub(lambda m: code[int(m.group(1))], text) if code else text


def plain_text(tokens: list[Token]) -> PlainText:
    """Blocks separated by blank lines, list items and table rows by single lines; code kept as text."""
    blocks: list[str] = []
    first: list[str] = []
    _blocks(tokens, blocks, first)
    text = "\n\n".join(b for b in blocks if b)
    return PlainText(text, first[0] if first else "", count_words(text))


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def _blocks(tokens: list[Token], out: list[str], first: list[str]) -> None:
    for tok in tokens:
        kind = tok["type"]
        if kind in _LEAVES:
            text = _leaf_text(tok.get("children", []))
            if kind == "paragraph" and text and not first:
                first.append(text)
            out.append(text)
        elif kind == "block_code":
            out.append(str(tok.get("raw", "")).rstrip("\n"))
        elif kind == "block_html":
            text = _SPACES.sub(" ", html.unescape(_TAG.sub("", str(tok.get("raw", ""))))).strip()
            out.append(without_templates(text))
        elif kind == "table_row" or (kind == "table_head" and not _has_rows(tok)):
            out.append("\t".join(inline_text(c.get("children", [])).strip() for c in tok.get("children", [])))
        elif kind in _CONTAINERS:
            inner: list[str] = []
            _blocks(tok.get("children", []), inner, first)
            joiner = "\n" if kind in {"list", "table", "table_head", "table_body"} else "\n\n"
            out.append(joiner.join(b for b in inner if b))


def _has_rows(tok: Token) -> bool:
    return any(c.get("type") == "table_row" for c in tok.get("children", []))
