"""The shell's table renderer: alignment, NULL, blobs, wide characters."""

from __future__ import annotations

from turso_dbapi.cli import table


def test_numbers_align_right_text_left_and_null_is_spelled_out():
    out = table.render(["n", "s"], [(1, "a"), (100, None), (None, "")])
    assert out.splitlines() == [
        "+------+------+",
        "| n    | s    |",
        "+------+------+",
        "|    1 | a    |",
        "|  100 | NULL |",
        "| NULL |      |",
        "+------+------+",
    ]


def test_blobs_show_as_hex_literals_and_long_ones_are_cut():
    assert table.cell(b"\x00\xff") == "x'00ff'"
    long = table.cell(bytes(range(100)))
    assert long.startswith("x'000102") and long.endswith("'...")
    assert len(long) == len("x''...") + 2 * table.BLOB_SHOWN


def test_control_characters_do_not_break_rows():
    assert table.cell("a\nb\tc") == "a\\nb\\tc"
    assert len(table.render(["x"], [("a\nb",)]).splitlines()) == 5


def test_wide_characters_keep_the_grid_aligned():
    out = table.render(["name"], [("日本",), ("ab",)]).splitlines()
    assert out[3] == "| 日本 |"
    assert out[4] == "| ab   |"
    assert {table.width(line) for line in out} == {8}


def test_floats_keep_their_full_precision():
    assert table.cell(0.1 + 0.2) == "0.30000000000000004"
    assert table.cell(True) == "True" and table.cell(2**70) == str(2**70)
