"""Output helpers shared by the benchmark scripts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


def log_to_stderr() -> None:
    """INFO logging to stderr (stdout is the report), without a line per HTTP request."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def columns_table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """A table of labelled rows under one header cell per column, cells right-aligned."""
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(header)]
    top = "  ".join([" " * label_width, *(h.rjust(w) for h, w in zip(header, widths, strict=True))])
    lines = [top, "-" * len(top)]
    for label, cells in rows:
        padded = (c.rjust(w) for c, w in zip(cells, widths, strict=True))
        lines.append("  ".join([label.ljust(label_width), *padded]))
    return lines
