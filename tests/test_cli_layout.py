"""`runstash ls` on a real terminal (issue 12, point 12): rendered at 80 and 120 columns, every
row is one line that fits, columns drop (least useful first) or elide instead of wrapping into
a column of single characters; `ls` prints a default number of rows and says how many more;
`ls --sort` of a metric nothing has agrees with `best` (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

import runstash
from runstash.cli import LS_ROWS
from runstash.cli_text import render_table
from tests.test_cli import error_line, ok, rs


@pytest.fixture
def wide(tmp_path: Path) -> list[runstash.Artifact]:
    s = runstash.Store(tmp_path / "s", durability="os")
    arts = [
        s.put_bytes(
            f"frame {i}".encode(),
            kind="simulation-frame",
            run_id=f"sweep-2026-12-05-lr-{i}e-4-batch-512",
            labels={"task": "navier-stokes-3d", "seed": i, "grid": "1024x1024x512", "ok": True},
            metrics={"energy": 0.000123 * (i + 1), "residual": 1e-9, "step": 1000.0 * i},
        )
        for i in range(3)
    ]
    s.close()
    return arts


@pytest.mark.parametrize("width", [80, 120])
def test_each_row_is_one_line_that_fits(wide: list[runstash.Artifact], width: int) -> None:
    lines = render_table(wide, "energy", width).splitlines()
    assert len(lines) == 1 + len(wide), "\n".join(lines)  # a header and one line per row
    assert all(len(line) <= width for line in lines)
    for a, line in zip(wide, lines[1:], strict=True):
        assert a.id in line  # ids are never elided or dropped
        assert "simulation" in line
    assert "energy=" in lines[1], "the ranking metric is kept"


def test_narrow_terminals_drop_columns_wide_ones_keep_them(wide: list[runstash.Artifact]) -> None:
    narrow = render_table(wide, None, 80).splitlines()[0].split()
    roomy = render_table(wide, None, 400).splitlines()[0].split()
    assert "created" not in narrow and "created" in roomy
    assert {"id", "kind", "metrics"} <= set(narrow)
    assert {"id", "kind", "size", "run", "pin", "metrics", "labels"} <= set(roomy)


def test_ls_prints_a_default_number_of_rows_and_says_how_many_more(tmp_path: Path) -> None:
    root = tmp_path / "many"
    s = runstash.Store(root, durability="os")
    for i in range(LS_ROWS + 7):
        s.put_bytes(b"%d" % i, kind="tick", metrics={"m": float(i)})
    s.close()
    out = ok("--store", root, "ls").splitlines()
    assert len(out) == 1 + LS_ROWS + 1
    assert out[-1].startswith(f"{LS_ROWS} of {LS_ROWS + 7} matching") and "7 more" in out[-1]
    assert len(ok("--store", root, "ls", "--limit", "100").splitlines()) == 1 + LS_ROWS + 7 + 1
    assert "more" not in ok("--store", root, "ls", "--limit", "3").splitlines()[-1]


def test_ls_sort_by_an_unknown_metric_agrees_with_best(tmp_path: Path) -> None:
    root = tmp_path / "s"
    s = runstash.Store(root)
    s.put_bytes(b"x", kind="k", metrics={"acc": 1.0})
    s.close()
    for args in (["ls", "--sort", "nosuch"], ["best", "--metric", "nosuch"]):
        line = error_line(rs("--store", root, *args), 3)
        assert "nosuch" in line
    error_line(rs("--store", root, "ls", "--sort", "nosuch", "--json"), 3)
