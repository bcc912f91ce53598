"""Reading a WordPress export (WXR): the site, its authors and its items, from untrusted XML.

The XML is parsed with defusedxml and any DTD is refused: WordPress never writes one, and a DTD is what entity
expansion (billion laughs) and external entities (XXE) need.
"""

from __future__ import annotations

import datetime as dt
import html as htmllib
import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring

from pipeline.errors import PermanentError

_NS_FIXED = {
    "http://purl.org/rss/1.0/modules/content/": "content",
    "http://purl.org/dc/elements/1.1/": "dc",
}
_NS_WP = re.compile(r"^https?://wordpress\.org/export/\d+\.\d+/$")
_NS_EXCERPT = re.compile(r"^https?://wordpress\.org/export/\d+\.\d+/excerpt/$")


def _qname(tag: str) -> tuple[str, str]:
    """(prefix we use, local name): WXR 1.0, 1.1 and 1.2 only differ by the version in their namespace URIs."""
    if not tag.startswith("{"):
        return "", tag
    uri, _, local = tag[1:].partition("}")
    if uri in _NS_FIXED:
        return _NS_FIXED[uri], local
    if _NS_WP.match(uri):
        return "wp", local
    if _NS_EXCERPT.match(uri):
        return "excerpt", local
    return uri, local


def _children(el: Element, prefix: str, local: str) -> list[Element]:
    return [c for c in el if _qname(c.tag) == (prefix, local)]


def _text(el: Element, prefix: str, local: str) -> str:
    found = _children(el, prefix, local)
    return (found[0].text or "").strip() if found else ""


def _raw(el: Element, prefix: str, local: str) -> str:
    """Like _text without stripping: leading blank lines in content matter to wpautop."""
    found = _children(el, prefix, local)
    return (found[0].text or "") if found else ""


@dataclass
class WxrItem:
    post_id: str
    post_type: str
    status: str
    title: str
    slug: str
    creator: str
    content: str
    excerpt: str
    date_gmt: str
    date_local: str
    categories: list[str]
    tags: list[str]
    meta: dict[str, str]
    attachment_url: str
    password: str = ""
    link: str = ""
    parent_id: str = ""
    sticky: bool = False
    post_format: str = ""
    comments: int = 0
    # (category name, nicename) in the order written, to place each in the export's category tree
    category_slugs: tuple[tuple[str, str], ...] = ()

    @property
    def id_sort(self) -> tuple[int, str]:
        return (int(self.post_id), self.post_id) if self.post_id.isdigit() else (2**63, self.post_id)


@dataclass
class WxrExport:
    site_url: str
    authors: dict[str, str]
    items: list[WxrItem]
    # category nicename -> (name, parent nicename or ""), from the channel's <wp:category> list
    categories: dict[str, tuple[str, str]] = field(default_factory=dict)

    def category_path(self, nicename: str, name: str) -> str:
        """`Parent/Child` for a category, from the export's tree; a loop in the tree stops where it repeats."""
        parts, seen, slug = [name], {nicename}, self.categories.get(nicename, (name, ""))[1]
        while slug and slug not in seen and slug in self.categories:
            seen.add(slug)
            parent_name, slug_next = self.categories[slug]
            parts.append(parent_name)
            slug = slug_next
        return "/".join(reversed(parts))


def _parse_xml(xml: bytes) -> Element:
    try:
        root: Element = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as exc:
        raise PermanentError("refused WXR file: it contains a DTD (<!DOCTYPE>); WordPress exports have none, and "
                             "DTDs carry entity-expansion and external-entity attacks") from exc
    except EntitiesForbidden as exc:
        raise PermanentError("refused WXR file: it declares XML entities (entity expansion is not allowed)") from exc
    except ExternalReferenceForbidden as exc:
        raise PermanentError("refused WXR file: it references an external entity or DTD") from exc
    except ParseError as exc:
        raise PermanentError(f"WXR file is not well-formed XML: {exc}") from exc
    return root


def parse_wxr(xml: bytes) -> WxrExport:
    root = _parse_xml(xml)
    channel = root.find("channel") if _qname(root.tag) == ("", "rss") else None
    if channel is None:
        raise PermanentError("not a WordPress export: expected <rss><channel>")
    site_url = _text(channel, "wp", "base_blog_url") or _text(channel, "", "link") or _text(channel, "wp",
                                                                                            "base_site_url")
    authors: dict[str, str] = {}
    for author in _children(channel, "wp", "author"):
        login = _text(author, "wp", "author_login")
        name = _text(author, "wp", "author_display_name")
        if not name:
            name = " ".join(p for p in (_text(author, "wp", "author_first_name"),
                                        _text(author, "wp", "author_last_name")) if p)
        if login:
            authors[login] = htmllib.unescape(name) if name else login
    categories: dict[str, tuple[str, str]] = {}
    for cat in _children(channel, "wp", "category"):
        nicename = _text(cat, "wp", "category_nicename")
        if nicename:
            name = htmllib.unescape(_text(cat, "wp", "cat_name")) or nicename
            categories[nicename] = (name, _text(cat, "wp", "category_parent"))
    items = [_parse_item(el) for el in _children(channel, "", "item")]
    return WxrExport(site_url=site_url, authors=authors, items=items, categories=categories)


def _parse_item(el: Element) -> WxrItem:
    categories: list[str] = []
    tags: list[str] = []
    slugs: list[tuple[str, str]] = []
    post_format = ""
    for cat in _children(el, "", "category"):
        name = htmllib.unescape((cat.text or "").strip()) or cat.get("nicename", "")
        domain = cat.get("domain", "")
        if domain == "post_format":
            post_format = cat.get("nicename", "").removeprefix("post-format-")
        target = {"category": categories, "post_tag": tags}.get(domain)
        if target is not None and name and name not in target:
            target.append(name)
            if domain == "category":
                slugs.append((name, cat.get("nicename", "")))
    meta: dict[str, str] = {}
    for pm in _children(el, "wp", "postmeta"):
        key = _text(pm, "wp", "meta_key")
        if key and key not in meta:
            meta[key] = _text(pm, "wp", "meta_value")
    return WxrItem(
        post_id=_text(el, "wp", "post_id"),
        post_type=_text(el, "wp", "post_type"),
        status=_text(el, "wp", "status"),
        title=htmllib.unescape(_text(el, "", "title")),
        slug=_text(el, "wp", "post_name"),
        creator=_text(el, "dc", "creator"),
        content=_raw(el, "content", "encoded"),
        excerpt=_raw(el, "excerpt", "encoded"),
        date_gmt=_text(el, "wp", "post_date_gmt"),
        date_local=_text(el, "wp", "post_date"),
        categories=categories,
        tags=tags,
        meta=meta,
        attachment_url=_text(el, "wp", "attachment_url"),
        password=_text(el, "wp", "post_password"),
        link=_text(el, "", "link"),
        parent_id=_text(el, "wp", "post_parent"),
        sticky=_text(el, "wp", "is_sticky") == "1",
        post_format=post_format,
        comments=len(_children(el, "wp", "comment")),
        category_slugs=tuple(slugs),
    )


def iso_date(gmt: str, local: str) -> str | None:
    """GMT as `...Z` when WordPress recorded it (drafts have 0000-00-00), else the site-local time without zone."""
    for value, suffix in ((gmt, "Z"), (local, "")):
        try:
            return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").isoformat() + suffix
        except ValueError:
            continue
    return None
