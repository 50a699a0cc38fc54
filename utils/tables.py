"""Markdown tables for notebook output (rendered as tables by the book and by JupyterLab)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def markdown_table(header: Sequence, rows: Sequence[Sequence], floatfmt: str | None = ".3f") -> str:
    """A Markdown table from a header and rows.

    Floats are formatted with ``floatfmt`` (``None``: ``str(value)``, for rows the
    caller has already formatted); every other value with ``str``.
    """

    def fmt(v):
        if floatfmt is not None and isinstance(v, (float, np.floating)):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def show_table(header: Sequence, rows: Sequence[Sequence], floatfmt: str | None = ".3f") -> None:
    """Display :func:`markdown_table` as rich output in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(header, rows, floatfmt)))
