"""One row of `make bench`'s table: a target of issue 12, what was measured against it, and the verdict.

Each measure lives in a module of its own (`benchmarks/p*.py`) with `measure(ctx) -> Row` (and a `main()` to run it
alone); `benchmarks/bench.py` runs them in one go and writes every row to `benchmarks/results/bench.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    id: str
    what: str
    target: str
    measured: str = "not measured yet"
    ratio: float | None = None  # measured / limit, where both are numbers: ≤ 1 meets the target
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the raw figures behind `measured`, for the JSON

    def cells(self) -> list[str]:
        verdict = "-" if self.passed is None else ("pass" if self.passed else "FAIL")
        return [self.id, self.what, self.target, self.measured,
                "-" if self.ratio is None else f"{self.ratio:.2f}", verdict]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def report(self) -> str:
        """What a measure run alone prints: its row, then the figures behind it."""
        return "\n" + table([self]) + "\n" + json.dumps(self.details, indent=2, default=str)


def table(found: list[Row]) -> str:
    head = ["id", "what", "target", "measured", "ratio", "pass/fail"]
    cells = [head] + [r.cells() for r in found]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
