"""WordPress post HTML → markdown: shortcodes, a small wpautop for classic-editor content, markdownify.

See wordpress.py for the choices (why markdownify, what happens to `[caption]`, `[embed]` and other shortcodes).
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable
from typing import Any

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CAPTION = re.compile(r"\[caption(?P<attrs>[^\]]*)\](?P<body>.*?)\[/caption\]", re.S | re.I)
_CAPTION_MEDIA = re.compile(r"^\s*(?P<media>(?:<a\b[^>]*>\s*)?<img\b[^>]*>(?:\s*</a>)?)(?P<text>.*)$", re.S | re.I)
_CAPTION_ATTR = re.compile(r'\bcaption="([^"]*)"', re.I)
_EMBED = re.compile(r"\[embed[^\]]*\]\s*(?P<url>https?://[^\s\[\]<>\"]+)\s*\[/embed\]", re.I)
_BLOCK_TAGS = ("address|article|aside|audio|blockquote|dd|details|div|dl|dt|embed|fieldset|figcaption|figure|footer"
               "|form|h[1-6]|header|hr|iframe|li|main|math|nav|noscript|object|ol|p|pre|script|section|style|summary"
               "|svg|table|tbody|td|textarea|tfoot|th|thead|tr|ul|video")
_HAS_BLOCK = re.compile(rf"</?(?:{_BLOCK_TAGS})\b", re.I)
_VERBATIM = re.compile(r"<(pre|script|style|textarea)\b.*?</\1\s*>", re.I | re.S)
_BLOCK_END = re.compile(rf"<(?:br\b[^>]*|/(?:{_BLOCK_TAGS})\s*)>", re.I)
_STASHED = re.compile("\x00(\\d+)\x00")
_GALLERY = re.compile(r"\[gallery(?P<attrs>[^\]]*)\]", re.I)
_GALLERY_IDS = re.compile(r"""\bids\s*=\s*["']?(?P<ids>[\d,\s]+)""", re.I)
_BARE_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")

# (url as written, is an <img src>) -> new attribute value, or None to leave it alone
MediaRewriter = Callable[[str, bool], str | None]
# the attachment ids a [gallery] names ([] for "this post's attachments") -> (url, caption) of those in the export
GalleryLookup = Callable[[list[str]], list[tuple[str, str]]]


def _caption(m: re.Match[str]) -> str:
    body = m.group("body")
    media = _CAPTION_MEDIA.match(body)
    if media is None:
        return body
    text = media.group("text").strip()
    if not text:
        attr = _CAPTION_ATTR.search(m.group("attrs"))
        text = htmllib.escape(htmllib.unescape(attr.group(1))) if attr else ""
    caption = f"<figcaption>{text}</figcaption>" if text else ""
    return f"<figure>{media.group('media')}{caption}</figure>"


def _gallery(lookup: GalleryLookup | None) -> Callable[[re.Match[str]], str]:
    def expand(m: re.Match[str]) -> str:
        found = _GALLERY_IDS.search(m.group("attrs"))
        ids = [i.strip() for i in found.group("ids").split(",") if i.strip()] if found else []
        images = lookup(ids) if lookup is not None else []
        if not images:
            return m.group(0)  # nothing known to show: the shortcode stays, to be fixed by hand
        figures = []
        for url, caption in images:
            cap = htmllib.escape(caption)
            figures.append(f'<figure><img src="{htmllib.escape(url)}" alt="{cap}"/>'
                           + (f"<figcaption>{cap}</figcaption>" if cap else "") + "</figure>")
        return "\n".join(figures)

    return expand


def _embed(m: re.Match[str]) -> str:
    url = htmllib.escape(m.group("url"))
    return f'<p><a href="{url}">{url}</a></p>'


def autop(text: str) -> str:
    """A small wpautop: blank-line separated runs of inline content become paragraphs, single newlines `<br>`.

    Runs that contain a block-level tag are left as they are (the tag already structures them), and
    pre/script/style/textarea are never touched, so code keeps its blank lines.
    """
    kept: list[str] = []

    def stash(m: re.Match[str]) -> str:
        kept.append(m.group(0))
        return f"\n\n\x00{len(kept) - 1}\x00\n\n"

    out: list[str] = []
    for chunk in re.split(r"\n[ \t]*\n", _VERBATIM.sub(stash, text)):
        chunk = chunk.strip()
        if not chunk:
            continue
        if "\x00" in chunk or _HAS_BLOCK.search(chunk):
            out.append(chunk)
        else:
            out.append("<p>" + re.sub(r"[ \t]*\n[ \t]*", "<br />\n", chunk) + "</p>")
    return _STASHED.sub(lambda m: kept[int(m.group(1))], "\n\n".join(out))


def _code_language(el: Any) -> str | None:
    for node in (el, el.find("code")):
        if isinstance(node, Tag):
            for cls in node.get_attribute_list("class"):
                if cls and cls.startswith(("language-", "lang-")):
                    return str(cls.partition("-")[2]) or None
    return None


class _Converter(MarkdownConverter):
    """markdownify with the fixes WordPress content needs; see each method."""

    def convert_br(self, el: Any, text: str, parent_tags: set[str]) -> str:
        # a backslash break inside code is a literal backslash: in code a line break is just a newline
        if parent_tags & {"pre", "code", "kbd", "samp"}:
            return "\n"
        base: Any = super()  # markdownify's stub does not declare its convert_* methods
        return str(base.convert_br(el, text, parent_tags))

    def convert_td(self, el: Any, text: str, parent_tags: set[str]) -> str:
        # an unescaped `|` in a cell ends the cell, and a row with too many cells is no table at all
        base: Any = super()
        return str(base.convert_td(el, text.replace("|", "\\|"), parent_tags))

    def convert_th(self, el: Any, text: str, parent_tags: set[str]) -> str:
        base: Any = super()
        return str(base.convert_th(el, text.replace("|", "\\|"), parent_tags))

    def convert_dl(self, el: Any, text: str, parent_tags: set[str]) -> str:
        # the `Term\n:   definition` syntax is an extension our renderer does not know; HTML it renders as is
        return "\n\n" + re.sub(r"\s*\n\s*", " ", str(el)).strip() + "\n\n"

    def _inline_html(self, el: Any, text: str, parent_tags: set[str]) -> str:
        # kept as inline HTML: markdown has no syntax for these, and dropping the tag changes the meaning ("H2O")
        if not text.strip() or "_noformat" in parent_tags or "pre" in parent_tags:
            return text
        title = el.get("title") if el.name == "abbr" else None
        attr = f' title="{htmllib.escape(str(title))}"' if title else ""
        return f"<{el.name}{attr}>{text}</{el.name}>"

    convert_sub = convert_sup = convert_u = convert_ins = convert_abbr = _inline_html
    convert_mark = convert_kbd = convert_small = _inline_html


_CONVERTER = _Converter(heading_style="ATX", bullets="-", newline_style="backslash",
                        code_language_callback=_code_language)


def html_to_markdown(content: str, rewrite: MediaRewriter | None = None,
                     gallery: GalleryLookup | None = None) -> tuple[str, list[str]]:
    """(markdown, notes) for one post body; the notes say what could not be converted faithfully."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    blocks = "<!-- wp:" in text
    text = _COMMENT.sub("", text)
    text = _GALLERY.sub(_gallery(gallery), _EMBED.sub(_embed, _CAPTION.sub(_caption, text)))
    if not blocks:
        # The block editor stores finished HTML; only classic content still needs its paragraphs made.
        text = autop(text)
    # The trailing newline keeps BeautifulSoup from warning that a short bare URL "looks like a URL, not markup".
    soup = BeautifulSoup(text + "\n", "html.parser")
    _prepare(soup, rewrite)
    try:
        markdown = _CONVERTER.convert_soup(soup)
    except RecursionError:
        # markdownify recurses once per nesting level; hostile or page-builder HTML can go deeper than Python.
        plain = soup.get_text("\n")
        return re.sub(r"\n{3,}", "\n\n", plain).strip(), ["HTML nested too deeply to convert; kept as plain text"]
    return markdown.strip(), []


def _prepare(soup: BeautifulSoup, rewrite: MediaRewriter | None) -> None:
    """Reshape the tree where markdownify would lose or garble something, and rewrite media URLs."""
    _iframes_as_links(soup)
    _players_as_links(soup)
    _bare_urls_as_links(soup)
    _address_lines(soup)
    _figures_as_blocks(soup)
    _clean_images(soup, rewrite)
    if rewrite is not None:
        _rewrite_links(soup, rewrite)


def _iframes_as_links(soup: BeautifulSoup) -> None:
    for frame in soup.find_all("iframe"):
        src = str(frame.get("src") or "")
        if src.startswith(("http://", "https://", "//")):
            # markdownify drops iframes (they have no text), which would lose every embedded video.
            link = soup.new_tag("a", href=src)
            link.string = src
            para = soup.new_tag("p")
            para.append(link)
            frame.replace_with(para)
        else:
            frame.decompose()


def _players_as_links(soup: BeautifulSoup) -> None:
    """<audio>/<video> have no markdown form and no text: a link to the file, named for what it is."""
    for player in soup.find_all(["audio", "video"]):
        source = player.find("source")
        src = str(player.get("src") or (source.get("src") if isinstance(source, Tag) else "") or "")
        if not src:
            player.decompose()
            continue
        name = src.rsplit("/", 1)[-1].split("?", 1)[0] or src
        link = soup.new_tag("a", href=src)
        link.string = f"{player.name.capitalize()}: {name}"
        para = soup.new_tag("p")
        para.append(link)
        player.replace_with(para)


def _bare_urls_as_links(soup: BeautifulSoup) -> None:
    """A URL written as text becomes a link, so markdownify neither escapes its `_` nor breaks it elsewhere."""
    for node in list(soup.find_all(string=_BARE_URL)):
        if node.find_parent(["a", "code", "pre", "script", "style", "textarea"]) is not None:
            continue
        text, pos = str(node), 0
        parts: list[str | Tag] = []
        for m in _BARE_URL.finditer(text):
            parts.append(text[pos:m.start()])
            link = soup.new_tag("a", href=m.group(0))
            link.string = m.group(0)
            parts.append(link)
            pos = m.end()
        parts.append(text[pos:])
        for part in parts:
            if part:
                node.insert_before(part)
        node.extract()


def _address_lines(soup: BeautifulSoup) -> None:
    """An address's lines are its meaning; markdownify would fold its newlines into spaces."""
    for address in soup.find_all("address"):
        for node in list(address.find_all(string=re.compile("\n"))):
            lines = str(node).strip("\n").split("\n")
            for n, line in enumerate(lines):
                if n:
                    node.insert_before(soup.new_tag("br"))
                node.insert_before(line.strip())
            node.extract()
        address.name = "p"


def _figures_as_blocks(soup: BeautifulSoup) -> None:
    for figure in soup.find_all("figure"):
        # markdownify treats <figure> as inline, so two image blocks in a row would share one paragraph
        figure.name = "div"
        # a gallery is a figure of figures: each caption belongs to the image of its own figure only
        img = next((i for i in figure.find_all("img") if i.find_parent(["figure", "div"]) is figure), None)
        cap = next((c for c in figure.find_all("figcaption", recursive=False)), None)
        if isinstance(cap, Tag):
            if isinstance(img, Tag) and not img.get("alt"):
                img["alt"] = cap.get_text(" ", strip=True)
            inner = [c for c in cap.contents if not (isinstance(c, str) and not c.strip())]
            if len(inner) == 1 and isinstance(inner[0], Tag) and inner[0].name in ("em", "i"):
                continue  # already emphasised: a second <em> would make it bold
            em = soup.new_tag("em")
            for child in list(cap.contents):
                em.append(child.extract())
            cap.append(em)


def _clean_images(soup: BeautifulSoup, rewrite: MediaRewriter | None) -> None:
    for img in soup.find_all("img"):
        alt = " ".join(str(img.get("alt") or "").split())
        # markdownify writes alt text verbatim between [ and ]
        img["alt"] = alt.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
        for attr in ("srcset", "sizes"):
            if attr in img.attrs:
                del img[attr]
        src = str(img.get("src") or "")
        if rewrite is not None and src:
            new = rewrite(src, True)
            if new is not None:
                img["src"] = new


def _rewrite_links(soup: BeautifulSoup, rewrite: MediaRewriter) -> None:
    for a in soup.find_all("a"):
        href = str(a.get("href") or "")
        if href:
            new = rewrite(href, False)
            if new is not None:
                if a.get_text() == href:
                    a.string = new if new.startswith(("http://", "https://")) else href
                a["href"] = new


def plain_excerpt(excerpt: str) -> str:
    if not excerpt.strip():
        return ""
    # a space where a block or line ends, none between inline tags: `<b>summary</b>.` stays `summary.`
    spaced = _BLOCK_END.sub(" ", excerpt)
    return " ".join(BeautifulSoup(spaced + "\n", "html.parser").get_text("").split())
