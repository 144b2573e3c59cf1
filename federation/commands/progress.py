"""Terminal progress bars and summary tables for long operator commands (imports)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


class ProgressBar:
    """``[#####.....]  52%  5,200/10,000 rows  3,100 rows/s  ETA 2 s`` on one rewritten line.

    Draws only on a terminal (a log file gets nothing), and at most ten times a second.
    """

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._drawn = 0.0
        self.active = self.stream.isatty()

    def line(self, done: int, total: int, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(self.width * fraction)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}  "
                f"{done:,}/{total:,} rows  {rate:,.0f} rows/s  ETA {eta:.0f} s")

    def update(self, done: int, total: int) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        self.stream.write("\r" + self.line(done, total, now))
        self.stream.flush()

    def finish(self) -> None:
        if self.active:
            self.stream.write("\n")
            self.stream.flush()


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]]
    cells += [[f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("  ".join(parts))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
