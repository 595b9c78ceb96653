"""Plain-text tables (the CLI's text outputs and the files under ``docs/results``).

Rich draws the interactive tables; these are the plain ones that must read the same in a file,
a log or a terminal without colours.
"""
from __future__ import annotations


def text_table(head, rows, first_left: bool = True) -> list:
    """Lines of a table: the header, a rule of dashes, one line per row. Columns are two spaces
    apart and as wide as their widest cell; the first is left-aligned (``first_left``), the
    others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if (i == 0 and first_left) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(list(head)), line(["-" * w for w in widths])] + [line(r) for r in rows]
