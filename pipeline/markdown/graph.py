"""The link graph of a bundle: posts and media as nodes, links and image uses as edges."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.models import JSON

LINKS_TO = "POST_LINKS_TO_POST"
USES_IMAGE = "POST_USE_IMAGE"


def link_graph(posts: Iterable[dict[str, Any]], medias: Iterable[dict[str, Any]],
               post_media: dict[str, list[str]]) -> JSON:
    """`posts` are final entries (with `hash` and `links`), `medias` media entries, `post_media` maps a post
    hash to the hashes of the media it shows. Nodes in path order, edges in post order; both deduplicated
    (two identical image files are one node)."""
    nodes: list[JSON] = []
    seen: set[str] = set()
    edges: list[JSON] = []
    edge_seen: set[tuple[str, str, str]] = set()
    posts = list(posts)
    for post in posts:
        _node(nodes, seen, str(post["hash"]), "post", str(post["title"]))
    for media in medias:
        _node(nodes, seen, str(media["hash"]), "media", str(media["fileName"]))
    for post in posts:
        source = str(post["hash"])
        for kind, targets in ((LINKS_TO, post["links"]), (USES_IMAGE, post_media.get(source, []))):
            for target in targets:
                key = (source, str(target), kind)
                if key not in edge_seen:
                    edge_seen.add(key)
                    edges.append({"source": source, "target": str(target), "type": kind})
    return {"nodes": nodes, "edges": edges}


def _node(nodes: list[JSON], seen: set[str], ident: str, kind: str, label: str) -> None:
    if ident not in seen:
        seen.add(ident)
        nodes.append({"id": ident, "type": kind, "label": label})
