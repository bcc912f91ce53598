"""Markdown to HTML with mistune 3: wiki links, resolved links and images, heading ids and a table of contents.

Parsing and rendering are two steps so that one token tree serves the HTML, the plain text and the link
graph: tokens are parsed once, rewritten in place (URLs, ids), then rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import mistune
from mistune.core import BlockState, InlineState
from mistune.inline_parser import InlineParser

from pipeline.errors import ItemError
from pipeline.markdown.discovery import media_ext
from pipeline.markdown.links import Resolved, Resolver
from pipeline.markdown.plain import inline_text
from pipeline.markdown.site_links import mark_generator_links
from pipeline.markdown.slugs import UniqueIds
from pipeline.models import Severity

Token = dict[str, Any]

_PLUGINS = ("strikethrough", "table", "url", "task_lists", "footnotes")
_WIKI_PATTERN = r"!?\[\[[^\[\]\n]+\]\]"
_WIKI = re.compile(r"(?P<embed>!?)\[\[(?P<target>[^\[\]\n|]+)(?:\|(?P<alias>[^\[\]\n]*))?\]\]")
_IMAGE_SIZE_ALIAS = re.compile(r"^\s*\d+(x\d+)?\s*$")


def _parse_wiki(inline: InlineParser, m: re.Match[str], state: InlineState) -> int | None:
    w = _WIKI.fullmatch(m.group(0))
    if w is None or state.in_link:
        return None
    target = w.group("target").strip()
    alias = (w.group("alias") or "").strip()
    if w.group("embed"):
        # `![[x.png|300]]` is Obsidian's size hint, not alt text.
        alt = target if not alias or _IMAGE_SIZE_ALIAS.match(alias) else alias
        state.append_token({"type": "image", "children": [{"type": "text", "raw": alt}],
                            "attrs": {"url": ""}, "wiki": target})
    else:
        state.append_token({"type": "link", "children": [{"type": "text", "raw": alias or target}],
                            "attrs": {"url": ""}, "wiki": target})
    return m.end()


def wiki_links(md: mistune.Markdown) -> None:
    """mistune plugin: `[[Page]]`, `[[Page|alias]]`, `[[Page#Heading]]`, `![[x.png]]` as link/image tokens
    carrying a `wiki` key, resolved later against the repository like any other link."""
    md.inline.register("wiki_link", _WIKI_PATTERN, _parse_wiki, before="link", start_chars=("!", "["))


class PostRenderer(mistune.HTMLRenderer):
    """HTML renderer whose images carry the size and lazy-loading attributes the link pass puts on them."""

    def image(self, text: str, url: str, title: str | None = None, width: int | None = None,
              height: int | None = None, loading: str | None = None) -> str:
        attrs: dict[str, object] = {"src": self.sanitize_url(url), "alt": mistune.util.striptags(text)}
        if title:
            attrs["title"] = title
        attrs.update({"width": width, "height": height, "loading": loading})
        return "<img" + self.render_attrs(attrs) + " />"


@lru_cache(maxsize=1)
def _parser() -> mistune.Markdown:
    plugins = [mistune.plugins.import_plugin(p) for p in _PLUGINS] + [wiki_links]
    return mistune.Markdown(renderer=None, inline=InlineParser(), plugins=plugins)


@lru_cache(maxsize=1)
def _renderer() -> PostRenderer:
    # Raw HTML is kept: the corpora rely on it (`<aside markdown="1">`, `<img>`, `<details>`).
    renderer = PostRenderer(escape=False)
    # A throwaway Markdown registers the plugins' render functions (tables, footnotes, …) on our renderer.
    mistune.Markdown(renderer=renderer, plugins=[mistune.plugins.import_plugin(p) for p in _PLUGINS])
    return renderer


@dataclass
class Problem:
    message: str
    severity: Severity = "warning"
    kind: str = "broken-link"


@dataclass
class Rendered:
    html: str
    tokens: list[Token]
    toc: list[dict[str, Any]] = field(default_factory=list)
    post_links: list[str] = field(default_factory=list)
    media_used: list[str] = field(default_factory=list)
    first_image: str | None = None
    problems: list[Problem] = field(default_factory=list)


def parse_tokens(body: str) -> list[Token]:
    tokens, _ = _parser().parse(body)
    assert isinstance(tokens, list)
    return tokens


def render_post(body: str, path: str, resolver: Resolver) -> Rendered:
    """HTML of one post body with every link, image and heading rewritten."""
    try:
        tokens = parse_tokens(mark_generator_links(body))
        out = Rendered(html="", tokens=tokens)
        _rewrite(tokens, path, resolver, out, UniqueIds())
        out.html = _renderer()(tokens, BlockState())
    except RecursionError as exc:
        raise ItemError(path, "markdown nested too deeply to render") from exc
    return out


def _rewrite(tokens: list[Token], path: str, resolver: Resolver, out: Rendered, ids: UniqueIds) -> None:
    for tok in tokens:
        kind = tok["type"]
        if kind == "heading":
            title = inline_text(tok.get("children", [])).strip()
            tok["attrs"]["id"] = ident = ids.make(title)
            out.toc.append({"id": ident, "title": title, "depth": tok["attrs"]["level"]})
        elif kind == "link":
            _rewrite_link(tok, path, resolver, out)
        elif kind == "image":
            _rewrite_image(tok, path, resolver, out)
        if "children" in tok:
            _rewrite(tok["children"], path, resolver, out, ids)


def _rewrite_link(tok: Token, path: str, resolver: Resolver, out: Rendered) -> None:
    wiki = tok.pop("wiki", None)
    resolved = resolver.wiki(wiki, path) if wiki is not None else resolver.link(tok["attrs"]["url"], path)
    if resolved is not None:
        _use(tok, resolved, out, "link")


def _rewrite_image(tok: Token, path: str, resolver: Resolver, out: Rendered) -> None:
    wiki = tok.pop("wiki", None)
    if wiki is not None and media_ext(wiki.partition("#")[0].strip()) is None:
        # `![[Some note]]` embeds a note; we have no transclusion, so it becomes a link to that note.
        tok["type"], tok["attrs"] = "link", {"url": ""}
        _use(tok, resolver.wiki(wiki, path), out, "link")
        return
    resolved = resolver.wiki_embed(wiki, path) if wiki is not None else resolver.image(tok["attrs"]["url"], path)
    tok["attrs"]["loading"] = "lazy"
    if resolved is not None:
        _use(tok, resolved, out, "image")
        if resolved.media is not None:
            info = resolver.medias[resolved.media]
            tok["attrs"]["width"], tok["attrs"]["height"] = info.get("width"), info.get("height")
    if out.first_image is None and not tok["attrs"]["url"].startswith("#"):
        out.first_image = tok["attrs"]["url"]


def _use(tok: Token, resolved: Resolved, out: Rendered, what: str) -> None:
    tok["attrs"]["url"] = resolved.url
    if resolved.broken is not None:
        out.problems.append(Problem(f"broken {what}: {resolved.broken}"))
    if resolved.unresolved is not None:
        shown = resolved.unresolved if len(resolved.unresolved) <= 200 else resolved.unresolved[:200] + "…"
        out.problems.append(Problem(f"link names no post: {shown}", "info", "unresolved-link"))
    if resolved.post is not None and resolved.post not in out.post_links:
        out.post_links.append(resolved.post)
    if resolved.media is not None and resolved.media not in out.media_used:
        out.media_used.append(resolved.media)
