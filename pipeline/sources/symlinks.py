"""Symlinks in a fetched repository: one rule for a git checkout and a copied folder alike.

A repository is hostile input, and so are its links: `passwd.md -> /etc/passwd` or `env.md -> /proc/self/environ`
would publish the machine's files (the worker's own secrets among them), `up -> ..` or `loop -> .` would make a
copy walk the whole disk or forever. So a link is never followed out of its tree, and after a checkout or a copy
each one is judged by looking only at entries inside the tree:

- a link to a file or folder inside the tree is kept, rewritten as the direct relative link to it, so it means the
  same wherever the tree is materialised (an S3 artifact store recreates links from their text) and no other link
  has to stay for it to work; posts and media are never read through links (pipeline/markdown/discovery.py);
- a link out of the tree (absolute, or `..` above its root), a dangling one, a loop (a chain of links that never
  ends, or a link to a folder that holds it) is removed.

Each link is one issue, and nothing here fails the job. `copy_folder` is the copy of a plain local folder that
keeps links as links; the fetch stage applies `contain_symlinks` to whichever tree it got.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import Severity

MAX_HOPS = 40  # links followed while resolving one; Linux gives up at 40 as well
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TreeProblem:
    """Something about one entry of a tree: its relative POSIX path, what was done and why."""

    path: str
    message: str
    severity: Severity = "warning"


class _Outside(Exception):
    pass


class _Loop(Exception):
    pass


def contain_symlinks(root: Path) -> list[TreeProblem]:
    """Keep the links of `root` that lead inside it (rewritten), remove the others; one problem per link."""
    problems: list[TreeProblem] = []
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is not entered
        here = Path(dirpath)
        parts = here.relative_to(root).parts
        for name in sorted(dirnames + filenames):
            if (here / name).is_symlink():
                problems.append(_settle(root, list(parts), name))
    return sorted(problems, key=lambda p: p.path)


def _settle(root: Path, parts: list[str], name: str) -> TreeProblem:
    link = root.joinpath(*parts, name)
    rel = "/".join([*parts, name])
    try:
        target = _resolve_inside(root, parts, os.readlink(link))
    except _Outside:
        return _removed(link, rel, "a symlink to outside the repository: removed, not followed")
    except _Loop:
        return _removed(link, rel, "a symlink loop (links that never end): removed")
    found = root.joinpath(*target)
    if not found.exists():
        return _removed(link, rel, "a dangling symlink (its target does not exist): removed")
    if found.is_dir() and target == [*parts, name][:len(target)]:
        return _removed(link, rel, "a symlink to a folder that holds it (a loop): removed")
    direct = posixpath.relpath("/".join(target) or ".", "/".join(parts) or ".")
    if os.readlink(link) != direct:
        fresh = link.with_name(f".{name}.relink")
        fresh.unlink(missing_ok=True)
        os.symlink(direct, fresh)
        os.replace(fresh, link)
    return TreeProblem(rel, f"a symlink to {direct} inside the repository: kept as a link, never read as a post "
                            f"or media", "info")


def _removed(link: Path, rel: str, message: str) -> TreeProblem:
    link.unlink()
    return TreeProblem(rel, message)


def _resolve_inside(root: Path, start: list[str], text: str) -> list[str]:
    """The path inside `root` that link text `text`, in folder `start`, leads to, as real components.

    Resolved as the kernel would, one component at a time, but only ever looking at entries under `root`:
    an absolute target or a `..` above the root is out at once, whatever it would have led to.
    """
    parts = list(start)
    pending = text.split("/")
    if text.startswith("/"):
        raise _Outside
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise _Outside
            parts.pop()
            continue
        here = root.joinpath(*parts, name)
        if here.is_symlink():
            hops += 1
            if hops > MAX_HOPS:
                raise _Loop
            inner = os.readlink(here)
            if inner.startswith("/"):
                raise _Outside
            pending = inner.split("/") + pending  # relative to the folder holding that link: `parts`
            continue
        parts.append(name)
    return parts


def copy_folder(src: Path, dest: Path) -> list[TreeProblem]:
    """Copy the folder `src` to `dest` (which must not exist), `.git` left out, without following any link.

    Folders and regular files are copied with their mtimes (files with their modes), links as links, for
    `contain_symlinks` to judge. A FIFO, a device or a socket is not copied, nor is what cannot be read; each is a
    problem. Failing to write `dest` raises: that is this machine's trouble, not the repository's.
    """
    problems: list[TreeProblem] = []
    dest.mkdir()
    folders: list[tuple[Path, os.stat_result]] = []
    stack: list[tuple[Path, Path, str]] = [(src, dest, "")]
    while stack:  # a stack, not recursion: a tree a thousand folders deep is still copied
        here, there, rel = stack.pop()
        try:
            with os.scandir(here) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            problems.append(TreeProblem(rel or ".", "a folder that cannot be read: not copied"))
            continue
        for entry in entries:
            if entry.name == ".git":
                continue
            name = f"{rel}/{entry.name}" if rel else entry.name
            target = there / entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(_read_link(entry.path), target)
                elif stat.S_ISREG(st.st_mode):
                    _copy_file(Path(entry.path), target)
                elif stat.S_ISDIR(st.st_mode):
                    target.mkdir()
                    folders.append((target, st))
                    stack.append((Path(entry.path), target, name))
                else:
                    problems.append(TreeProblem(name, "not a regular file (a FIFO, device or socket): not copied"))
            except (_Unreadable, FileNotFoundError):  # unreadable, or gone since the folder was listed
                problems.append(TreeProblem(name, "a file that cannot be read: not copied"))
    for target, st in reversed(folders):  # after their content, whose copying changed their mtimes
        _keep_times(target, st)
    return sorted(problems, key=lambda p: p.path)


class _Unreadable(Exception):
    pass


def _read_link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        raise _Unreadable from None


def _copy_file(path: Path, target: Path) -> None:
    try:
        # O_NOFOLLOW: a file swapped for a link since it was listed is not followed; O_NONBLOCK: a FIFO put in its
        # place does not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise _Unreadable from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unreadable
        with open(target, "xb") as out:
            while True:
                try:
                    chunk = src.read(_COPY_CHUNK)
                except OSError:
                    out.close()
                    target.unlink()
                    raise _Unreadable from None
                if not chunk:
                    break
                out.write(chunk)
    # readable by the stages after this one, whatever the source's mode
    os.chmod(target, stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
    _keep_times(target, st)


def _keep_times(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
