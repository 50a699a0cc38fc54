import numpy as np

from utils import tables


def test_markdown_table_layout_and_float_format():
    text = tables.markdown_table(["a", "b"], [[1, 0.12345], ["x", np.float32(2.5)]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x | 2.500 |"]


def test_markdown_table_without_float_format_uses_str():
    assert tables.markdown_table(["v"], [[0.12345]], floatfmt=None).splitlines()[-1] == "| 0.12345 |"


def test_markdown_table_formats_floats_with_three_decimals_by_default():
    text = tables.markdown_table(["a", "b"], [[1, 0.12345], ["x", np.float32(2)]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |", "| x | 2.000 |"]


def test_tables_is_the_one_table_api():
    """Issue 17: notebooks print tables with tables.show_table only; no module re-exports markdown_table."""
    from utils import classify

    assert not hasattr(classify, "markdown_table")
