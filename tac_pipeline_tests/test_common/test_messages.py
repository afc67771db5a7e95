"""How messages and UI tables list many items: the first few, then how many more."""

import numpy as np

from tac_pipeline.common.messages import listed, listed_lines, more_row


def test_listed_names_the_first_items_then_the_count_of_the_rest():
    assert listed([1, 2, 3]) == "1, 2, 3"
    assert listed(np.arange(8, dtype=np.int64), limit=5) == "0, 1, 2, 3, 4 and 3 more"


def test_listed_lines_indents_and_counts_what_is_cut():
    assert listed_lines(["a", "b"], 2, indent="  ") == ["  a", "  b"]
    assert listed_lines(["a", "b", "c"], 1, indent="  ") == ["  a", "  … and 2 more"]


def test_more_row_closes_a_cut_markdown_table_with_as_many_cells_as_its_header():
    assert more_row(50, 50) == []
    assert more_row(60, 50) == ["| … | 10 more |"]
    [row] = more_row(12, 10, "centres", columns=4)
    assert row == "| … | 2 more centres | | |" and row.count("|") == 5
