"""Which files of a repository are posts, which are media, and the list of every source file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from pipeline.errors import PermanentError
from pipeline.models import JSON

MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "tif": "image/tiff",
    "svg": "image/svg+xml",
    "mp4": "video/mp4",
    "webm": "video/webm",
    # audio and the other video formats WordPress sites upload: published as they are, like mp4
    "mov": "video/quicktime",
    "m4v": "video/x-m4v",
    "ogv": "video/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "wav": "audio/wav",
    "flac": "audio/flac",
}
EXCLUDED_FOLDERS = frozenset({"node_modules", "dist", "build"})
EXCLUDED_POST_NAMES = frozenset({"readme.md", "contributing.md", "license.md"})
IGNORE_FILE = ".repoignore"


def repository_root(tree: Path, subfolder: str | None) -> Path:
    """The folder that is the repository for this job: the whole tree, or one subfolder of it."""
    if not subfolder or not subfolder.strip():
        return tree
    if subfolder.startswith(("/", "\\")) or (len(subfolder) > 1 and subfolder[1] == ":"):
        raise PermanentError(f"repositoryFolder must be relative to the repository, got {subfolder!r}")
    rel = PurePosixPath(subfolder.strip().replace("\\", "/"))
    if any(part == ".." for part in rel.parts):
        raise PermanentError(f"repositoryFolder must stay inside the repository, got {subfolder!r}")
    root = tree / rel
    # resolve() also catches a symlinked folder on the way that points outside the tree.
    if not root.resolve().is_relative_to(tree.resolve()) or not root.is_dir():
        raise PermanentError(f"repositoryFolder {subfolder!r} is not a folder of the repository")
    return root


def media_ext(name: str) -> str | None:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if ext in MEDIA_TYPES else None


def is_post_name(name: str) -> bool:
    return name.lower().endswith(".md") and name.lower() not in EXCLUDED_POST_NAMES


@dataclass(frozen=True)
class Discovered:
    posts: list[str]
    medias: list[str]


def discover(root: Path) -> Discovered:
    """Posts and media under `root` as sorted relative POSIX paths.

    Hidden files are skipped as well as hidden folders (`._x.png` AppleDouble files are not images), and so
    are symlinks: a cloned repository must not make us read files outside itself.
    """
    ignore = _ignore_spec(root)
    posts: list[str] = []
    medias: list[str] = []
    for rel_dir, files in _walk(root, ignore):
        for name in files:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name.startswith(".") or (ignore is not None and ignore.match_file(rel)):
                continue
            if is_post_name(name):
                posts.append(rel)
            elif media_ext(name) is not None:
                medias.append(rel)
    return Discovered(sorted(posts), sorted(medias))


def source_files(root: Path) -> list[JSON]:
    """Every regular file outside hidden folders, in the original's `files-source.json` shape."""
    entries: list[JSON] = []
    for rel_dir, files in _walk(root, None, prune_build_folders=False):
        folder = rel_dir.split("/") if rel_dir else []
        for name in files:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            entries.append({
                "path": rel,
                "filename": name,
                "extension": name.rsplit(".", 1)[-1] if "." in name.lstrip(".") else "",
                "size": (root / rel).stat().st_size,
                "folder": folder,
            })
    return sorted(entries, key=lambda e: str(e["path"]))


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    path = root / IGNORE_FILE
    if not path.is_file() or path.is_symlink():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    # GitIgnoreSpec rather than the deprecated GitWildMatchPattern: same gitignore syntax, git's own precedence.
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(root: Path, ignore: pathspec.GitIgnoreSpec | None,
          prune_build_folders: bool = True) -> Iterator[tuple[str, list[str]]]:
    """(relative folder, sorted regular file names) for each folder kept, top-down in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        kept = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d.startswith(".") or (Path(dirpath) / d).is_symlink():
                continue
            if prune_build_folders and (d in EXCLUDED_FOLDERS or (ignore is not None and ignore.match_file(rel + "/"))):
                continue
            kept.append(d)
        dirnames[:] = kept
        files = sorted(f for f in filenames if (Path(dirpath) / f).is_file() and not (Path(dirpath) / f).is_symlink())
        yield rel_dir, files
