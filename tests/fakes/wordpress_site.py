"""A fake WordPress site: its WXR export, built item by item, and a real HTTP server for its uploads."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PHOTO = b"\xff\xd8\xff\xe0JFIF-photo-bytes"
PHOTO_SMALL = b"\xff\xd8\xff\xe0JFIF-small-bytes"
COVER = b"\x89PNG\r\n\x1a\ncover-bytes"
SNEAKY = b"\x89PNG\r\n\x1a\nsneaky-bytes"
UPLOADS = "/wp-content/uploads/2023/01"


class MediaServer:
    """Serves fixed bytes by raw request path on 127.0.0.1 and records every path asked for; 404 otherwise.

    A path in `hang` is accepted and never answered (until stop), like a media host that has gone silent."""

    def __init__(self, routes: dict[str, bytes], hang: frozenset[str] = frozenset()) -> None:
        self.routes = routes
        self.hang = hang
        self.requests: list[str] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                if self.path in server.hang:
                    server.stopping.wait()
                    return
                body = server.routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test output readable; requests are recorded above

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def wxr(base: str, items: str, *, version: str = "1.2", doctype: str = "",
        channel_categories: tuple[tuple[str, str, str], ...] = ()) -> bytes:
    """`channel_categories`: (nicename, name, parent nicename) of the export's category tree."""
    cats = "\n".join(f"  <wp:category><wp:category_nicename>{n}</wp:category_nicename><wp:category_parent>{p}"
                     f"</wp:category_parent><wp:cat_name><![CDATA[{t}]]></wp:cat_name></wp:category>"
                     for n, t, p in channel_categories)
    return f"""<?xml version="1.0" encoding="UTF-8" ?>{doctype}
<rss version="2.0"
  xmlns:excerpt="http://wordpress.org/export/{version}/excerpt/"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:wfw="http://wellformedweb.org/CommentAPI/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:wp="http://wordpress.org/export/{version}/">
<channel>
  <title>Harbour Notes</title>
  <link>{base}</link>
  <description>Notes from the harbour</description>
  <language>en-GB</language>
  <wp:wxr_version>{version}</wp:wxr_version>
  <wp:base_site_url>{base}</wp:base_site_url>
  <wp:base_blog_url>{base}</wp:base_blog_url>
  <wp:author>
    <wp:author_id>1</wp:author_id>
    <wp:author_login><![CDATA[admin]]></wp:author_login>
    <wp:author_email><![CDATA[ada@example.org]]></wp:author_email>
    <wp:author_display_name><![CDATA[Ada Lovelace]]></wp:author_display_name>
    <wp:author_first_name><![CDATA[Ada]]></wp:author_first_name>
    <wp:author_last_name><![CDATA[Lovelace]]></wp:author_last_name>
  </wp:author>
  <generator>https://wordpress.org/?v=6.4.2</generator>
{cats}
{items}
</channel>
</rss>
""".encode()


def item(post_id: int | str, post_type: str, status: str, *, title: str = "", slug: str = "", content: str = "",
         excerpt: str = "", creator: str = "admin", date: str = "2023-01-05 11:00:00",
         date_gmt: str = "2023-01-05 10:00:00", categories: tuple[tuple[str, str, str], ...] = (),
         meta: tuple[tuple[str, str], ...] = (), attachment_url: str = "", password: str = "", parent: int = 0,
         sticky: bool = False, comments: int = 0, link: str = "") -> str:
    cats = "\n".join(f'    <category domain="{d}" nicename="{n}"><![CDATA[{t}]]></category>'
                     for d, n, t in categories)
    metas = "\n".join(f"    <wp:postmeta><wp:meta_key><![CDATA[{k}]]></wp:meta_key>"
                      f"<wp:meta_value><![CDATA[{v}]]></wp:meta_value></wp:postmeta>" for k, v in meta)
    attachment = f"    <wp:attachment_url><![CDATA[{attachment_url}]]></wp:attachment_url>" if attachment_url else ""
    comment_xml = "\n".join(f"    <wp:comment><wp:comment_id>{n}</wp:comment_id><wp:comment_content><![CDATA[c{n}]]>"
                            "</wp:comment_content></wp:comment>" for n in range(1, comments + 1))
    return f"""  <item>
    <title><![CDATA[{title}]]></title>
    <link>{link or f"https://harbour.example/?p={post_id}"}</link>
    <pubDate>Thu, 05 Jan 2023 10:00:00 +0000</pubDate>
    <dc:creator><![CDATA[{creator}]]></dc:creator>
    <guid isPermaLink="false">https://harbour.example/?p={post_id}</guid>
    <description></description>
    <content:encoded><![CDATA[{content}]]></content:encoded>
    <excerpt:encoded><![CDATA[{excerpt}]]></excerpt:encoded>
    <wp:post_id>{post_id}</wp:post_id>
    <wp:post_date><![CDATA[{date}]]></wp:post_date>
    <wp:post_date_gmt><![CDATA[{date_gmt}]]></wp:post_date_gmt>
    <wp:comment_status><![CDATA[open]]></wp:comment_status>
    <wp:post_name><![CDATA[{slug}]]></wp:post_name>
    <wp:status><![CDATA[{status}]]></wp:status>
    <wp:post_parent>{parent}</wp:post_parent>
    <wp:post_password><![CDATA[{password}]]></wp:post_password>
    <wp:menu_order>0</wp:menu_order>
    <wp:post_type><![CDATA[{post_type}]]></wp:post_type>
    <wp:is_sticky>{int(sticky)}</wp:is_sticky>
{attachment}
{comment_xml}
{cats}
{metas}
  </item>"""


def realistic(base: str) -> bytes:
    photo = f"{base}{UPLOADS}/photo.jpg"
    hello = (
        '<!-- wp:heading -->\n<h2 class="wp-block-heading">Getting started</h2>\n<!-- /wp:heading -->\n\n'
        "<!-- wp:paragraph -->\n<p>Some <em>emphasis</em>, some <strong>strong words</strong> and "
        '<a href="https://example.org/docs">a link</a>.</p>\n<!-- /wp:paragraph -->\n\n'
        "<!-- wp:list -->\n<ul><li>first</li><li>second</li></ul>\n<!-- /wp:list -->\n\n"
        "<!-- wp:list {\"ordered\":true} -->\n<ol><li>one</li><li>two</li></ol>\n<!-- /wp:list -->\n\n"
        '<!-- wp:image {"id":20,"sizeSlug":"full"} -->\n<figure class="wp-block-image size-full">'
        f'<img src="{photo}" alt="A photo" class="wp-image-20" srcset="{photo} 1024w"/></figure>\n'
        "<!-- /wp:image -->\n\n"
        '<!-- wp:image -->\n<figure class="wp-block-image"><img src="https://cdn.example.invalid/remote.png" '
        'alt="Remote"/></figure>\n<!-- /wp:image -->'
    )
    second = (
        "An intro in the classic editor.\n\n"
        f'<img src="{UPLOADS}/photo.jpg" alt="Same photo, relative URL" />\n\n'
        f'<img src="{base}/wp-content/uploads/missing.png" alt="Gone" />\n\n'
        f'See <a href="{photo}">the full photo</a>.'
    )
    about = "<h2>About me</h2>\n\nI write <strong>things</strong>.\n\n<ol>\n<li>one</li>\n<li>two</li>\n</ol>"
    classic = ("First paragraph with <em>style</em>.\n\nSecond paragraph\nwith a line break.\n\n"
               "<ul>\n<li>item one</li>\n<li>item two</li>\n</ul>\n\n<pre>def f():\n\n    return 1</pre>\n\n"
               "<!--more-->\n\nLast paragraph.")
    caption = (f'[caption id="attachment_20" align="aligncenter" width="300"]<a href="{photo}">'
               f'<img class="size-medium wp-image-20" src="{base}{UPLOADS}/photo-300x200.jpg" alt="" width="300" '
               'height="200" /></a> The harbour at dawn[/caption]\n\nAfter the caption. [gallery ids="20,21"]')
    items = [
        item(10, "post", "publish", title="Hello World", slug="hello-world", content=hello,
             excerpt="<p>A short <b>summary</b>.</p>",
             categories=(("category", "travel", "Travel"), ("category", "food-drink", "Food &amp; Drink"),
                         ("post_tag", "python", "python"), ("post_tag", "sea", "sea"))),
        item(11, "post", "publish", title="Second Post", slug="second-post", content=second, creator="guest",
             date_gmt="2023-01-06 08:15:00", categories=(("post_tag", "sea", "sea"),)),
        item(12, "page", "publish", title="About", slug="about", content=about),
        item(13, "post", "draft", title="Work in progress", content="<p>Not yet.</p>",
             date="2023-02-01 09:30:00", date_gmt="0000-00-00 00:00:00"),
        item(14, "post", "trash", title="Binned", slug="binned__trashed", content="<p>gone</p>"),
        item(15, "post", "publish", title="With a cover", slug="with-cover", content="Just text.",
             meta=(("_edit_last", "1"), ("_thumbnail_id", "21"))),
        item(16, "post", "publish", title="Classic", slug="classic-autop", content=classic),
        item(17, "post", "publish", title="Caption", slug="with-caption", content=caption),
        item(18, "post", "publish", title="Hello again", slug="hello-world", content="<p>Same slug.</p>"),
        item(20, "attachment", "inherit", title="photo", slug="photo", attachment_url=photo,
             meta=(("_wp_attached_file", "2023/01/photo.jpg"),)),
        item(21, "attachment", "inherit", title="cover", slug="cover", attachment_url=f"{base}{UPLOADS}/cover.png"),
        item(22, "attachment", "inherit", title="missing", slug="missing",
             attachment_url=f"{base}/wp-content/uploads/missing.png"),
        item(30, "nav_menu_item", "publish", title="Home", slug="home"),
    ]
    return wxr(base, "\n".join(items))


# A DTD whose entities would expand to a billion "lol"s: refused before anything is expanded.
BILLION_LAUGHS = """<!DOCTYPE rss [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>"""
