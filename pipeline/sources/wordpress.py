"""A WordPress export (WXR) to a repository of markdown posts, in place of the npm `wordpress-export-to-markdown`.

Layout written under `dest` (every path checked to stay inside it):

    posts/<slug>/index.md            published posts
    pages/<slug>/index.md            published pages (flat: a child page names its parent's slug in `parent`)
    posts/_drafts/<slug>/index.md    draft, pending and future posts (`draft: true`; `id-<id>` when they have no slug)
    pages/_drafts/<slug>/index.md    the same for pages
    <folder>/images/<name>           media referenced by that post or page, and its cover image

Choices worth knowing:
- Private and password-protected posts are not written at all (an issue and a count each): a markdown repository
  has no way to keep them private, and it may be pushed to a public remote. Drafts, pending and scheduled posts are
  written with `draft: true`, and the build leaves drafts out of the bundle unless the job asks for them.
- Links to another imported post or page of the same site (its permalink or `?p=<id>`) become relative links to
  that post's `index.md`, so the build turns them into links between notes.
- The XML is read by wordpress_wxr.py, which refuses any DTD; names on disk come from wordpress_names.py.
- HTML becomes markdown with markdownify (BeautifulSoup underneath): it converts the whole tree including tables
  and code blocks, and lets us rewrite `img`/`a` in the parsed tree before converting instead of patching markdown
  text afterwards. html2text was the alternative; its output is tuned for reading, not for round-tripping.
- Content without block-editor comments is classic-editor content, stored before `wpautop`: blank lines separate
  paragraphs and single newlines are line breaks, so a small wpautop is applied before converting.
- `[caption]` becomes the image followed by its caption in italics (the caption also becomes the alt text when
  the image has none); `[embed]URL[/embed]` becomes a link; `[gallery ids=…]` (or without ids: the post's own
  attachments) becomes those images with their captions, when the export holds them. Every other shortcode
  (plugin ones) is kept verbatim as text, so nothing the author wrote disappears silently and it can be found and
  fixed by hand. Comments are not imported; they are counted (`commentsSkipped`).
- Media are fetched when the URL is an attachment's `wp:attachment_url`, or an `<img src>` on the site's own host
  (resized variants such as `photo-300x200.jpg` are not attachments themselves). A link (`<a href>`) to the same
  site is fetched only when it points at an attachment or an image file. A failed fetch is an issue on that item
  and the link keeps the original (absolute) URL.
"""

from __future__ import annotations

import html as htmllib
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import yaml

from pipeline.errors import ItemError, PipelineError
from pipeline.http.address_policy import AddressPolicy
from pipeline.http.safe_fetch import fetch_image
from pipeline.models import JSON, Issue, Severity
from pipeline.sources.wordpress_html import html_to_markdown, plain_excerpt
from pipeline.sources.wordpress_names import NAME_MAX_BYTES, SLUG_MAX_BYTES, UniqueNames, safe_name
from pipeline.sources.wordpress_report import ImportReport, host_key, url_key
from pipeline.sources.wordpress_wxr import WxrExport, WxrItem, iso_date, parse_wxr

STAGE = "wordpress"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024

# Fetches one URL and returns its bytes; raises a PipelineError (or OSError) when it cannot.
Downloader = Callable[[str], bytes]

_SKIPPED_STATUSES = {"trash", "auto-draft"}
_WRITTEN_TYPES = ("post", "page")
_SECTIONS = {"post": "posts", "page": "pages"}
_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".svg", ".bmp", ".tif", ".tiff", ".ico"}
# audio and video uploads are media of the site as much as its images
_MEDIA_EXTENSIONS = _IMAGE_EXTENSIONS | {".mp3", ".m4a", ".ogg", ".oga", ".wav", ".flac", ".mp4", ".m4v", ".mov",
                                         ".webm", ".ogv", ".pdf"}


def default_downloader(*, policy: AddressPolicy | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                       timeout_s: float = 15.0) -> Downloader:
    """The SSRF-safe fetch of safe_fetch: the outbound address policy (public only when None), size-capped."""

    def download(url: str) -> bytes:
        return fetch_image(url, policy=policy or AddressPolicy(), max_bytes=max_bytes, timeout_s=timeout_s)

    return download


def convert_wxr(xml: bytes, dest: Path, *, download: Downloader | None = None, fetch_media: bool = True,
                policy: AddressPolicy | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                timeout_s: float = 15.0) -> ImportReport:
    """Write the posts and pages of a WXR export under `dest` as markdown; see the module docstring for the layout.

    `download` fetches one media URL (default: the SSRF-safe `default_downloader` with `policy`,
    `max_bytes` and `timeout_s`); `fetch_media=False` keeps every media URL as it is. Raises PermanentError when
    the file is refused or is no WXR; any problem with one item or one media file becomes an issue in the report.
    """
    export = parse_wxr(xml)
    fetch = download or default_downloader(policy=policy, max_bytes=max_bytes, timeout_s=timeout_s)
    run = _Run(export, dest, fetch if fetch_media else None, max_bytes)
    run.convert()
    return run.report


def media_urls(xml: bytes) -> list[str]:
    """Every media URL a conversion of `xml` would download, in the order it would: what a stage fetches (and
    checkpoints) before converting with `cached_downloader`."""
    wanted: dict[str, None] = {}

    def record(url: str) -> bytes:
        wanted.setdefault(url)
        raise ItemError(url, "planning only")

    with tempfile.TemporaryDirectory() as scratch:
        convert_wxr(xml, Path(scratch), download=record)
    return list(wanted)


class _Run:
    def __init__(self, export: WxrExport, dest: Path, download: Downloader | None, max_bytes: int) -> None:
        self.export = export
        dest.mkdir(parents=True, exist_ok=True)
        self.dest = dest.resolve()
        self.download = download
        self.max_bytes = max_bytes
        self.report = ImportReport()
        self.site = export.site_url.rstrip("/") + "/" if export.site_url else ""
        self.attachments: dict[str, WxrItem] = {}
        self.attachment_keys: set[str] = set()
        self.site_hosts: set[str] = set()
        if self.site:
            self.site_hosts.add(host_key(self.site))
        # url -> written file to copy from, or the reason it could not be fetched: each URL is fetched once per run
        self.fetched: dict[str, Path] = {}
        self.failed: dict[str, str] = {}
        self.sections: dict[str, UniqueNames] = {}
        self.files: set[str] = set()
        self.seen_issues: set[tuple[str, str]] = set()
        # post id -> folder of every item written, and permalink (host + path) -> folder, for links between posts
        self.folders: dict[str, str] = {}
        self.permalinks: dict[str, str] = {}
        self.slugs: dict[str, str] = {}

    def convert(self) -> None:
        items = sorted(self.export.items, key=lambda i: (i.id_sort, i.post_type, i.slug))
        for item in items:
            if item.post_type == "attachment":
                self.report.attachments += 1
                if item.post_id and item.attachment_url:
                    self.attachments.setdefault(item.post_id, item)
                    url = self._absolute(item.attachment_url)
                    if url:
                        self.attachment_keys.add(url_key(url))
                        # uploads may live on a media host of their own (a CDN): it is the site's all the same
                        self.site_hosts.add(host_key(url))
        written: list[WxrItem] = []
        for item in items:
            if item.post_type == "attachment":
                continue
            self.report.comments_skipped += item.comments
            if item.post_type not in _WRITTEN_TYPES:
                self._skip(f"type:{item.post_type or '(none)'}")
            elif item.status in _SKIPPED_STATUSES:
                self._skip(f"status:{item.status}")
            elif item.status == "private" or item.password:
                why = "private" if item.status == "private" else "password-protected"
                self._skip(why)
                self.report.withheld += 1
                self._issue(f"{item.post_type}:{item.post_id}", f"{why} {item.post_type} not imported: "
                            "it would be public in the repository", kind="withheld", severity="info")
            else:
                folder = self._folder(item)
                self.folders[item.post_id] = folder
                self.slugs[item.post_id] = folder.rsplit("/", 1)[1]
                link = self._absolute(item.link) if item.link else None
                # only published posts are linked to: a draft is left out of the bundle, the link would break
                # `?p=<id>` links are matched by id; a permalink without a path of its own would be the home page
                if link is not None and item.status == "publish" and not urlsplit(link).query \
                        and urlsplit(link).path.strip("/"):
                    self.permalinks[url_key(link).rstrip("/")] = folder
                written.append(item)
        for item in written:
            try:
                self._write_item(item, self.folders[item.post_id])
            except ItemError as exc:
                self._issue(exc.path, exc.reason, kind="item", severity="error")
        self.report.issues.sort(key=lambda i: (i.path, i.message))
        self.report.files = sorted(self.files)

    def _skip(self, reason: str) -> None:
        self.report.skipped += 1
        self.report.skipped_reasons[reason] = self.report.skipped_reasons.get(reason, 0) + 1

    def _issue(self, path: str, message: str, *, kind: str, severity: Severity = "warning") -> None:
        # one failed URL used nine times in a post is one issue of that post
        if (path, message) in self.seen_issues:
            return
        self.seen_issues.add((path, message))
        self.report.issues.append(Issue(stage=STAGE, path=path, message=message, severity=severity, kind=kind))

    def _names(self, section: str) -> UniqueNames:
        return self.sections.setdefault(section, UniqueNames())

    def _folder(self, item: WxrItem) -> str:
        section = _SECTIONS[item.post_type]
        fallback_id = safe_name(item.post_id, "unknown")
        if item.status == "publish":
            slug = safe_name(unquote(item.slug), f"{item.post_type}-{fallback_id}", max_bytes=SLUG_MAX_BYTES)
            return f"{section}/{self._names(section).claim(slug)}"
        # an unknown status is treated as unpublished: publishing what the author did not is the worse mistake
        drafts = f"{section}/_drafts"
        slug = safe_name(unquote(item.slug), f"id-{fallback_id}", max_bytes=SLUG_MAX_BYTES)
        return f"{drafts}/{self._names(drafts).claim(slug)}"

    def _write_item(self, item: WxrItem, folder: str) -> None:
        index = f"{folder}/index.md"
        draft = item.status != "publish"
        images = UniqueNames()
        names: dict[str, str] = {}

        def rewrite(url: str, is_img: bool) -> str | None:
            absolute = self._absolute(url)
            if absolute is None:
                return None
            if not is_img:
                target = self._post_link(absolute)
                if target is not None:
                    return posixpath.relpath(f"{target}/index.md", folder)
            if not self._wanted(absolute, is_img):
                return None
            return self._media(absolute, folder, index, images, names) or absolute

        def gallery(ids: list[str]) -> list[tuple[str, str]]:
            # a [gallery] without ids shows the post's own attachments, in their order
            children = [a.post_id for a in self.attachments.values() if a.parent_id == item.post_id]
            return self._gallery_urls(ids or children)

        body, notes = html_to_markdown(item.content, rewrite, gallery)
        for note in notes:
            self._issue(index, note, kind="content")
        fm = self._frontmatter(item, folder, index)
        cover = self._cover(item, folder, index, images, names)
        if cover is not None:
            fm["coverImage"] = cover
        excerpt = plain_excerpt(item.excerpt)
        if excerpt:
            fm["excerpt"] = excerpt
        fm["draft"] = draft
        fm["wpId"] = int(item.post_id) if item.post_id.isdigit() else item.post_id
        head = yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)
        self._write(index, f"---\n{head}---\n\n{body}\n".encode())
        if draft:
            self.report.drafts += 1
        elif item.post_type == "page":
            self.report.pages += 1
        else:
            self.report.posts += 1

    def _frontmatter(self, item: WxrItem, folder: str, index: str) -> JSON:
        # an empty title would make the build fall back to the file name, `index`
        fm: JSON = {"title": item.title.strip() or _title_from_slug(folder.rsplit("/", 1)[1])}
        date = iso_date(item.date_gmt, item.date_local)
        if date is not None:
            fm["date"] = date
        if item.creator:
            fm["author"] = self.export.authors.get(item.creator, item.creator)
        if item.categories:
            fm["categories"] = list(item.categories)
            paths = [self.export.category_path(slug, name) for name, slug in item.category_slugs]
            if any("/" in p for p in paths):
                fm["categoryPaths"] = paths
        parent = self.slugs.get(item.parent_id) if item.parent_id not in ("", "0") else None
        if parent is not None:
            fm["parent"] = parent
        elif item.parent_id not in ("", "0") and item.post_type == "page":
            self._issue(index, f"parent page {item.parent_id} is not imported (private, draft or missing)",
                        kind="structure", severity="info")
        if item.sticky:
            fm["sticky"] = True
        if item.post_format:
            fm["format"] = item.post_format
        if item.tags:
            fm["tags"] = list(item.tags)
        return fm

    def _cover(self, item: WxrItem, folder: str, index: str, images: UniqueNames, names: dict[str, str]) -> str | None:
        thumb = item.meta.get("_thumbnail_id", "")
        if not thumb:
            return None
        attachment = self.attachments.get(thumb)
        url = self._absolute(attachment.attachment_url) if attachment is not None else None
        if url is None:
            self._issue(index, f"featured image: attachment {thumb} is not in the export", kind="attachment")
            return None
        return self._media(url, folder, index, images, names) or url

    def _post_link(self, url: str) -> str | None:
        """The folder of the imported post `url` points at (its permalink or `?p=<id>` on the site), or None."""
        if host_key(url) not in self.site_hosts:
            return None
        parts = urlsplit(url)
        query = dict(pair.partition("=")[::2] for pair in parts.query.split("&") if pair)
        for name in ("p", "page_id"):
            if query.get(name, "").isdigit():
                folder = self.folders.get(query[name])
                return folder if folder is not None and "/_drafts/" not in folder else None
        return self.permalinks.get(url_key(url).rstrip("/"))

    def _gallery_urls(self, ids: list[str]) -> list[tuple[str, str]]:
        """(url, caption) of the attachments a `[gallery ids=…]` names that the export holds."""
        out = []
        for attachment_id in ids:
            attachment = self.attachments.get(attachment_id)
            if attachment is not None:
                out.append((attachment.attachment_url, attachment.excerpt or attachment.title))
        return out

    def _absolute(self, url: str) -> str | None:
        url = htmllib.unescape(url.strip())
        absolute = urljoin(self.site, url) if self.site else url
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        return absolute

    def _wanted(self, url: str, is_img: bool) -> bool:
        if url_key(url) in self.attachment_keys:
            return True
        if host_key(url) not in self.site_hosts:
            return False
        return is_img or posixpath.splitext(urlsplit(url).path)[1].lower() in _MEDIA_EXTENSIONS

    def _media(self, url: str, folder: str, index: str, images: UniqueNames, names: dict[str, str]) -> str | None:
        """`images/<name>` once `url` is saved in the item's folder, or None (and an issue) when it cannot be."""
        if url in names:
            return f"images/{names[url]}"
        if self.download is None:
            return None
        reason = self.failed.get(url)
        data: bytes | None = None
        if reason is None and url not in self.fetched:
            try:
                data = self.download(url)
            except ItemError as exc:
                reason = exc.reason  # a downloader that fetched earlier says why it failed then
            except (PipelineError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if len(data) > self.max_bytes:
                    reason = f"larger than {self.max_bytes} bytes"
            if reason is not None:
                self.failed[url] = reason
                self.report.attachments_failed += 1
            else:
                self.report.attachments_downloaded += 1
        if reason is not None:
            self._issue(index, f"media not downloaded, original URL kept: {url} ({reason})", kind="attachment")
            return None
        basename = unquote(posixpath.basename(urlsplit(url).path))
        name = images.claim(safe_name(basename, "image", keep_extension=True), NAME_MAX_BYTES, keep_extension=True)
        rel = f"{folder}/images/{name}"
        if data is None:
            data = self.fetched[url].read_bytes()
        self.fetched.setdefault(url, self._write(rel, data))
        names[url] = name
        return f"images/{name}"

    def _write(self, rel: str, data: bytes) -> Path:
        target = self.dest.joinpath(*rel.split("/"))
        # resolve() follows symlinks already in dest, so a planted link cannot carry a write outside it
        if not target.resolve().is_relative_to(self.dest):
            raise ItemError(rel, "refused to write outside the destination folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.dest):
            raise ItemError(rel, "refused to write outside the destination folder")
        target.write_bytes(data)
        self.files.add(rel)
        return target


def _title_from_slug(slug: str) -> str:
    words = slug.replace("-", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words and not words.startswith("id ") else "Untitled"
