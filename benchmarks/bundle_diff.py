"""Compare two published bundles, ignoring what differs between two builds of the same content.

    python -m benchmarks.bundle_diff OUT_A/latest OUT_B/latest

Two builds of the same repository differ only in their revision (the job id), the job id and the
build time; everything else — every JSON file, every image variant, every row of `content.sqlite` —
must be the same. JSON files are compared after dropping those keys and replacing each side's
revision by a placeholder; `content.sqlite` row by row (its file bytes carry page layout, which says
nothing about content); every other file byte for byte. Exit 0 when equal, 1 with the differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import apsw
import sqlite_vec

VOLATILE_KEYS = frozenset({"revision", "jobId", "createdAt", "publishedAt"})
DB_NAME = "content.sqlite"


def _strip(value: Any, rev: str, volatile: frozenset[str] = VOLATILE_KEYS) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, rev, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_strip(v, rev, volatile) for v in value]
    if isinstance(value, str):
        return value.replace(rev, "<rev>")
    return value


def _rows(db: Path, ignore: frozenset[str] = frozenset()) -> dict[str, list[tuple[Any, ...]]]:
    con = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    con.enable_load_extension(True)
    con.load_extension(sqlite_vec.loadable_path())
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            try:
                rows = list(con.execute(f'SELECT * FROM "{table}"'))
            except apsw.SQLError:
                continue  # shadow tables of a virtual table that only its module may read
            if ignore and rows:
                names = [str(c[1]) for c in con.execute(f'PRAGMA table_info("{table}")')]
                rows = [tuple(None if n in ignore else v for n, v in zip(names, r, strict=True)) for r in rows]
            out[table] = sorted((tuple(r) for r in rows), key=repr)
        return out
    finally:
        con.close()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def diff(a: Path, b: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Differences between bundles `a` and `b`; `ignore` names more JSON keys and content.sqlite columns that
    may differ (e.g. the file times of a fresh git checkout: fsCreated, fsModified, _created, _modified)."""
    a, b = a.resolve(), b.resolve()
    volatile = VOLATILE_KEYS | ignore
    problems: list[str] = []
    fa, fb = _files(a), _files(b)
    problems += [f"only in {a}: {f}" for f in sorted(fa - fb)]
    problems += [f"only in {b}: {f}" for f in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        pa, pb = a / rel, b / rel
        if rel.endswith(".json"):
            same = (_strip(json.loads(pa.read_bytes()), a.name, volatile)
                    == _strip(json.loads(pb.read_bytes()), b.name, volatile))
        elif rel.endswith(DB_NAME):
            ra, rb = _rows(pa, ignore), _rows(pb, ignore)
            same = _strip(json.loads(json.dumps(ra, default=bytes.hex)), a.name) == \
                _strip(json.loads(json.dumps(rb, default=bytes.hex)), b.name)
        else:
            same = pa.read_bytes() == pb.read_bytes()
        if not same:
            problems.append(f"differs: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="a bundle folder (a revision, or OUT/latest)")
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    problems = diff(args.a, args.b)
    n = len(_files(args.a.resolve()))
    for line in problems:
        print(line)
    print(f"{n} files compared: " + ("identical, ignoring revision, job id and build time" if not problems
                                      else f"{len(problems)} differences"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
