"""Checking out a cloned commit when its tree holds entries no file system takes.

To git a tree entry's name is only bytes: 300 of them, a `.git` or `..`, folders nested a thousand deep.
dulwich writes a tree in one go and stops at the first entry it cannot write, so one such entry failed the
whole fetch (and, being an OSError, was retried as if the server were unreachable). Here the tree is first
rebuilt without those entries, each reported once, and the rest is checked out as dulwich always does
(the repository's own settings for file modes, symlinks and `.gitattributes` filters apply).
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from dulwich.index import InvalidPathError, get_path_element_validator
from dulwich.objects import Commit, ObjectID, Tree
from dulwich.repo import Repo

from pipeline.errors import PermanentError

NAME_MAX_BYTES = 255  # per path segment on common file systems
PATH_MAX_BYTES = 2048  # within the repository: the artifact store's own path must still fit under 4096
MAX_DEPTH = 100  # folders within folders; deeper trees also defeat the recursive walks of later stages
_SHOWN_BYTES = 200  # of a skipped entry's path in its issue


@dataclass(frozen=True)
class SkippedEntry:
    """A tree entry left out of the checkout: its path (shortened when very long) and why."""

    path: str
    reason: str


def check_out(repo: Repo, commit: bytes) -> list[SkippedEntry]:
    """Write `commit`'s tree into the work tree of a fresh clone; what could not be written is returned."""
    obj = repo[commit]
    if not isinstance(obj, Commit):
        raise PermanentError(f"{commit.decode()} is not a commit")
    rebuild = _Rebuild(repo)
    tree = rebuild.tree(obj.tree, b"", 1)
    try:
        repo.get_worktree().reset_index(tree)
    except InvalidPathError as exc:
        # Only a path through a symlink the same checkout made is left to refuse, and that is the tree's doing.
        raise PermanentError("the repository's tree has an entry that cannot be checked out safely: "
                             f"{_shown(exc.args[0] if exc.args else b'')}") from exc
    return rebuild.skipped


class _Rebuild:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        # What dulwich's checkout refuses (`.git`, `..`, and their NTFS and HFS+ spellings), by the same rules.
        self.valid: Callable[[bytes], bool] = get_path_element_validator(repo.get_config())
        self.skipped: list[SkippedEntry] = []

    def tree(self, tree_id: ObjectID, prefix: bytes, depth: int) -> ObjectID:
        """`tree_id` itself when every entry below it can be written, else a tree without the others."""
        tree = self.repo.object_store[tree_id]
        assert isinstance(tree, Tree)
        kept = Tree()
        changed = False
        for entry in tree.iteritems():
            name, mode, sha = entry.path, entry.mode, entry.sha
            assert name is not None and mode is not None and sha is not None
            path = prefix + name
            why = self._problem(name, path)
            if why is None and stat.S_ISDIR(mode):
                if depth >= MAX_DEPTH:
                    why = f"folders nested more than {MAX_DEPTH} deep"
                else:
                    sub = self.tree(sha, path + b"/", depth + 1)
                    changed = changed or sub != sha
                    sha = sub
            if why is not None:
                self.skipped.append(SkippedEntry(_shown(path), why))
                changed = True
                continue
            kept.add(name, mode, sha)
        if not changed:
            return tree_id
        self.repo.object_store.add_object(kept)
        return kept.id

    def _problem(self, name: bytes, path: bytes) -> str | None:
        if len(name) > NAME_MAX_BYTES:
            return f"a name of {len(name):,} bytes, longer than the {NAME_MAX_BYTES} a file system allows"
        if len(path) > PATH_MAX_BYTES:
            return f"a path of {len(path):,} bytes, longer than the {PATH_MAX_BYTES} allowed"
        if b"/" in name or b"\0" in name or not self.valid(name):
            return "a name that is not safe to write (such as .git or ..)"
        return None


def _shown(path: bytes) -> str:
    text = path.decode("utf-8", errors="replace")
    return text if len(path) <= _SHOWN_BYTES else f"{path[:_SHOWN_BYTES].decode('utf-8', errors='ignore')}…"
