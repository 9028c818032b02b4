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


def format_table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int = 1) -> str:
    """Rows of cells under a header and a rule, the first ``left`` columns left-aligned and the
    others right-aligned (numbers)."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def format_line(cells: Sequence[str]) -> str:
        text = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(text).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([format_line(header), rule, *(format_line(line) for line in lines)])
