"""The benchmark's corpus: the English posts of opensource-guide and their images, and the one-post edit.

The corpora folder is found as the tests find it: `$REPOBUILD_CORPORA`, else `<project>/../shared/corpora`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("REPOBUILD_CORPORA") or ROOT.parent / "shared" / "corpora")
GUIDE = CORPORA / "opensource-guide"
TIL = CORPORA / "til"
EDITED_POST = "getting-paid.md"
TIL_FOLDER = "til"  # where guide_and_til puts the til posts: the guide's absolute image paths keep the root
EDITED_TIL_POST = "python/pyproject.md"
EDIT_SENTENCE = " (The benchmark added this sentence to measure an incremental rebuild.)"
IMAGE_LINK = re.compile(r"/assets/images/[^\s)\"'>]+")
# Corpora by the name the benchmarks take them under: a folder of CORPORA copied whole (".git" left out).
# "guide-all" is the whole opensource-guide, every language (349 posts, 47 media): the largest run of P6.
WHOLE_CORPORA = {"guide-all": GUIDE, "til": CORPORA / "til"}


def whole_corpus(name: str, dest: Path) -> Path:
    """A copy of the corpus `name` of WHOLE_CORPORA (or a folder of that name in CORPORA) at `dest`."""
    src = WHOLE_CORPORA.get(name, CORPORA / name)
    if not src.is_dir():
        raise SystemExit(f"corpus not found: {src} (set REPOBUILD_CORPORA to the corpora folder)")
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git"))
    return dest


def english_corpus(dest: Path, articles: int | None = None) -> tuple[Path, int, int]:
    """The English posts (`_articles/*.md`, not `_articles/<lang>/`), the images they link to, the licence;
    with `articles`, only the first that many posts (by name) and their images."""
    folder = GUIDE / "_articles"
    if not folder.is_dir():
        raise SystemExit(f"corpus not found: {folder} (set REPOBUILD_CORPORA to the corpora folder)")
    (dest / "_articles").mkdir(parents=True)
    posts, links = 0, set()
    for md in sorted(folder.glob("*.md"))[:articles]:  # top level only: the translations live in subfolders
        shutil.copy2(md, dest / "_articles" / md.name)
        links.update(IMAGE_LINK.findall(md.read_text(encoding="utf-8")))
        posts += 1
    images = 0
    for link in sorted(links):
        src = GUIDE / link.lstrip("/")
        if src.is_file():
            (dest / link.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / link.lstrip("/"))
            images += 1
    if (GUIDE / "LICENSE").is_file():
        shutil.copy2(GUIDE / "LICENSE", dest / "LICENSE")
    return dest, posts, images


def guide_and_til(dest: Path) -> tuple[Path, int, int]:
    """One repository: the English guide (as english_corpus lays it out) with every til post and image under
    `til/`, so one job builds both and the per-job overhead is paid once."""
    if not TIL.is_dir():
        raise SystemExit(f"corpus not found: {TIL} (set REPOBUILD_CORPORA to the corpora folder)")
    _, posts, images = english_corpus(dest)
    shutil.copytree(TIL, dest / TIL_FOLDER)
    tree = list((dest / TIL_FOLDER).rglob("*"))
    posts += sum(1 for p in tree if p.suffix == ".md")
    images += sum(1 for p in tree if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".webp"})
    return dest, posts, images


def edit_one_post(corpus: Path) -> str:
    """Append a sentence to the middle prose paragraph of the guide's EDITED_POST; returns that paragraph's start."""
    return edit_post(corpus / "_articles" / EDITED_POST)


def edit_til_post(corpus: Path) -> str:
    """The same edit in a til post of a guide_and_til corpus (til posts have no frontmatter)."""
    return edit_post(corpus / TIL_FOLDER / EDITED_TIL_POST)


def edit_post(path: Path) -> str:
    """Append a sentence to the middle prose paragraph of a post's body; returns that paragraph's start."""
    text = path.read_text(encoding="utf-8")
    body_at = text.index("\n---\n", 4) + 5 if text.startswith("---\n") else 0  # after the frontmatter
    body = text[body_at:]
    paras = list(re.finditer(r"(?m)^[A-Z][^\n]{80,}$", body))  # prose: not headings, lists, HTML or tables
    target = paras[len(paras) // 2]
    path.write_text(text[:body_at] + body[:target.end()] + EDIT_SENTENCE + body[target.end():], encoding="utf-8")
    return target.group()[:50]
