"""The ``runstash`` command, run as a real process (``python -m runstash``).

Each subcommand's output and exit code: 0 ok, 1 verify found problems, 2 usage error, 3 not
found or store error; errors are one ``runstash: error: ...`` line on stderr; ``--json``
prints exactly one JSON document on stdout. Also: no store is ever created by a command other
than ``demo``; the console script is installed; the demo still works on the default store.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runstash
from tests.conftest import blob_files
from tests.test_gc import blob_set, flip_byte

SUBCOMMANDS = ["ls", "show", "best", "cat", "verify", "gc", "keep-best", "stats", "export", "demo"]


def rs(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "runstash", *map(str, args)],
        capture_output=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )


def ok(*args: str | Path, cwd: Path | None = None) -> str:
    p = rs(*args, cwd=cwd)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def as_json(*args: str | Path) -> object:
    p = rs(*args, "--json")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    return json.loads(p.stdout)


def error_line(p: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The process failed with `code`, one error line on stderr and nothing on stdout."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == b""
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runstash: error: "), lines
    return lines[0]


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, dict[str, runstash.Artifact]]:
    root = tmp_path / "store"
    s = runstash.Store(root, durability="os", pack_max=0)
    arts = {
        "m1": s.put_bytes(b"model one", kind="model", metrics={"acc": 0.7}, run_id="r1"),
        "m2": s.put_bytes(b"model two", kind="model", metrics={"acc": 0.9}, run_id="r1"),
        "m3": s.put_bytes(
            b"model three", kind="model", metrics={"acc": 0.8}, run_id="r2", labels={"seed": 3}
        ),
        "m4": s.put_bytes(b"model four", kind="model", metrics={"acc": 0.1}, run_id="r2", pin=True),
        "img": s.put_bytes(
            bytes(range(256)) * 4, kind="image", run_id="r1", labels={"seed": "3", "ok": True}
        ),
    }
    s.close()
    return root, arts


# -- help and usage ------------------------------------------------------------------------


def test_help_lists_every_subcommand_and_each_has_help() -> None:
    out = ok("--help")
    for name in SUBCOMMANDS:
        assert name in out
    assert "exit codes" in out
    for name in SUBCOMMANDS:
        assert "usage: runstash " + name in ok(name, "--help")


def test_the_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "runstash"
    assert exe.exists()
    p = subprocess.run([exe, "--help"], capture_output=True, timeout=60)
    assert p.returncode == 0 and b"keep-best" in p.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["ls", "--mode", "best"],
        ["ls", "--limit", "-1"],
        ["ls", "--label", "novalue"],
        ["gc", "--grace", "soon"],
        ["keep-best", "--kind", "model", "--metric", "acc", "--mode", "max"],  # no --k
        ["best", "--kind", "model"],  # no --metric
    ],
)
def test_usage_errors_exit_2_with_one_line(populated: tuple[Path, dict], args: list[str]) -> None:
    root, _ = populated
    error_line(rs("--store", root, *args), 2)


def test_no_store_exits_3_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing here"
    for cmd in (["ls"], ["verify"], ["gc", "--yes"], ["stats"], ["show", "X"]):
        line = error_line(rs("--store", missing, *cmd), 3)
        assert "no runstash store" in line
    assert not missing.exists()


def test_store_option_after_the_subcommand(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    got = json.loads(ok("ls", "--store", root, "--json"))
    assert len(got) == len(arts)


# -- ls, show, best, cat ---------------------------------------------------------------------


def test_ls_text_and_filters(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    out = ok("--store", root, "ls")
    for a in arts.values():
        assert a.id in out
    assert "5 of 5 matching" in out
    out = ok("--store", root, "ls", "--kind", "model", "--run", "r2")
    assert arts["m3"].id in out and arts["m4"].id in out and arts["m1"].id not in out


def test_ls_json_matches_the_api(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    got = as_json("--store", root, "ls")
    assert got == [a.to_dict() for a in arts.values()]  # oldest first
    assert as_json("--store", root, "ls", "--limit", "2") == [
        arts["m1"].to_dict(),
        arts["m2"].to_dict(),
    ]


def test_ls_labels_are_typed(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    ids = lambda *a: [d["id"] for d in as_json("--store", root, "ls", *a)]  # noqa: E731
    assert ids("--label", "seed=3") == [arts["m3"].id]  # the int 3
    assert ids("--label", 'seed="3"') == [arts["img"].id]  # the string "3"
    assert ids("--label", 'seed="3"', "--label", "ok=true") == [arts["img"].id]
    assert ids("--label", "seed=4") == []


def test_ls_sort_by_metric(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    order = [d["id"] for d in as_json("--store", root, "ls", "--sort", "acc")]
    assert order == [arts[n].id for n in ("m2", "m3", "m1", "m4")]
    order = [
        d["id"]
        for d in as_json("--store", root, "ls", "--sort", "acc", "--mode", "min", "--limit", "2")
    ]
    assert order == [arts["m4"].id, arts["m1"].id]
    out = ok("--store", root, "ls", "--sort", "acc", "--limit", "1")
    assert arts["m2"].id in out and "best first by acc" in out


def test_ls_pinned(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    assert [d["id"] for d in as_json("--store", root, "ls", "--pinned")] == [arts["m4"].id]
    assert len(as_json("--store", root, "ls", "--unpinned")) == 4


def test_ls_nothing_matches(populated: tuple[Path, dict]) -> None:
    root, _ = populated
    p = rs("--store", root, "ls", "--kind", "nope")
    assert p.returncode == 0 and p.stdout == b"" and b"no artifacts match" in p.stderr
    assert as_json("--store", root, "ls", "--kind", "nope") == []


def test_show(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    a = arts["m3"]
    got = as_json("--store", root, "show", a.id)
    hexd = a.hash.split(":", 1)[1]
    assert got == {**a.to_dict(), "path": str(Path(root, "blobs", hexd[:2], hexd[2:]))}
    out = ok("--store", root, "show", a.id)
    assert a.hash in out and "seed=3" in out and "acc=0.8" in out
    line = error_line(rs("--store", root, "show", "01M8485WTJ01KA6000YJEDFK3E"), 3)
    assert "no artifact with id" in line
    error_line(rs("--store", root, "show", "not-an-id", "--json"), 3)


def test_best(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    assert as_json("--store", root, "best", "--metric", "acc")["id"] == arts["m2"].id
    got = as_json("--store", root, "best", "--metric", "acc", "--mode", "min", "--run", "r1")
    assert got["id"] == arts["m1"].id
    got = as_json("--store", root, "best", "--metric", "acc", "--label", "seed=3")
    assert got["id"] == arts["m3"].id
    assert arts["m2"].id in ok("--store", root, "best", "--kind", "model", "--metric", "acc")
    line = error_line(rs("--store", root, "best", "--metric", "loss"), 3)
    assert "loss" in line


def test_cat_writes_the_raw_bytes(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    img = arts["img"]
    p = rs("--store", root, "cat", img.id)
    assert p.returncode == 0 and p.stdout == bytes(range(256)) * 4 and p.stderr == b""
    assert rs("--store", root, "cat", img.hash).stdout == bytes(range(256)) * 4
    assert rs("--store", root, "cat", "--verify", img.id).stdout == bytes(range(256)) * 4
    error_line(rs("--store", root, "cat", "01M8485WTJ01KA6000YJEDFK3E"), 3)
    error_line(rs("--store", root, "cat", runstash.hash_bytes(b"never stored")), 3)


def test_looking_never_writes_into_the_store(tmp_path: Path) -> None:
    """show / best / cat / ls / stats / verify of packed (small) artifacts create no file."""
    root = tmp_path / "packed"
    s = runstash.Store(root)  # default pack_max: these bytes live in the index log
    a = s.put_bytes(b"small model", kind="model", metrics={"acc": 0.5})
    s.close()

    def files() -> dict[str, int]:
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}

    before = files()
    assert blob_files(root) == []
    shown = as_json("--store", root, "show", a.id)
    assert isinstance(shown, dict) and shown["path"] is None and shown["hash"] == a.hash
    assert "packed in the index" in ok("--store", root, "show", a.id)
    assert "packed in the index" in ok("--store", root, "best", "--metric", "acc")
    assert rs("--store", root, "cat", a.id).stdout == b"small model"
    ok("--store", root, "ls")
    ok("--store", root, "stats")
    ok("--store", root, "verify")
    assert files() == before, "a read-only command wrote into the store"


def test_cat_verify_refuses_corrupt_bytes(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    s = runstash.Store(root)
    flip_byte(s.path_of(arts["m1"]))
    line = error_line(rs("--store", root, "cat", "--verify", arts["m1"].id), 3)
    assert "does not match" in line
    os.unlink(s.path_of(arts["m2"]))
    error_line(rs("--store", root, "cat", arts["m2"].id), 3)


# -- verify, gc, keep-best, stats, export ------------------------------------------------------


def test_verify_clean_store(populated: tuple[Path, dict]) -> None:
    root, _ = populated
    out = ok("--store", root, "verify")
    assert "5 blobs checked" in out and "0 missing, 0 corrupt, 0 orphaned" in out
    assert as_json("--store", root, "verify")["ok"] is True


def test_verify_reports_flipped_missing_and_orphaned(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    s = runstash.Store(root)
    flip_byte(s.path_of(arts["m1"]), 2)
    os.unlink(s.path_of(arts["m2"]))
    s.delete(arts["m3"])  # its blob becomes an orphan
    p = rs("--store", root, "verify")
    assert p.returncode == 1, p.stderr
    out = p.stdout.decode()
    assert re.search(rf"missing +{arts['m2'].hash} +named by {arts['m2'].id}", out)
    assert re.search(rf"corrupt +{arts['m1'].hash}", out)
    assert re.search(rf"orphaned +{arts['m3'].hash}", out)
    assert "1 missing, 1 corrupt, 1 orphaned" in out
    # The first verify moved the damaged blob to quarantine/: now it is missing.
    p = rs("--store", root, "verify", "--json")
    assert p.returncode == 1
    rep = json.loads(p.stdout)
    by_hash = {m["hash"]: m["records"] for m in rep["missing"]}
    assert by_hash == {arts["m1"].hash: [arts["m1"].id], arts["m2"].hash: [arts["m2"].id]}
    assert rep["corrupt"] == []
    assert [q["hash"] for q in rep["quarantined"]] == [arts["m1"].hash]
    assert [o["hash"] for o in rep["orphaned"]] == [arts["m3"].hash]
    assert rep["ok"] is False and rep["intact"] is False


def test_verify_orphans_alone(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    runstash.Store(root).delete(arts["m3"])
    p = rs("--store", root, "verify")
    assert p.returncode == 1 and b"runstash gc" in p.stdout
    assert rs("--store", root, "verify", "--orphans-ok").returncode == 0


def test_gc_dry_run_then_yes(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    s = runstash.Store(root)
    s.delete(arts["m1"])
    s.delete(arts["m4"])  # a pinned record can be deleted by hand; then its blob is garbage
    before = blob_set(s)
    out = ok("--store", root, "gc", "--grace", "0")
    assert "gc (dry run): would delete 2 unreferenced blobs" in out and "--yes" in out
    assert blob_set(s) == before
    out = ok("--store", root, "gc")  # default grace: the fresh orphans stay
    assert "would delete 0" in out and "kept 2 younger than 15m" in out
    rep = as_json("--store", root, "gc", "--yes", "--grace", "0")
    assert rep["dry_run"] is False
    assert set(rep["deleted"]) == {arts["m1"].hash, arts["m4"].hash}
    assert blob_set(s) == before - {arts["m1"].hash, arts["m4"].hash}
    assert rs("--store", root, "verify").returncode == 0
    assert "gc: deleted 0 unreferenced blobs" in ok("--store", root, "gc", "--yes", "--grace", "0")


def test_keep_best(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    s = runstash.Store(root)
    before = {a.id for a in s.list()}
    args = ["--kind", "model", "--metric", "acc", "--mode", "max", "--k", "1", "--per", "run"]
    out = ok("--store", root, "keep-best", *args, "--grace", "0")
    assert "keep-best (dry run)" in out and "would delete: 1 record" in out
    assert arts["m1"].id in out and arts["m3"].id not in out
    assert {a.id for a in s.list()} == before
    rep = as_json("--store", root, "keep-best", *args, "--grace", "0", "--yes")
    assert set(rep["deleted"]) == {arts["m1"].id}  # m4 is pinned: kept
    assert rep["kept"] == 2 and rep["kept_pinned"] == 1
    assert rep["gc"]["deleted"] == [arts["m1"].hash]
    assert {a.id for a in s.list()} == before - {arts["m1"].id}
    assert arts["m1"].hash not in blob_set(s)


def test_keep_best_without_yes_by_mistake_deletes_nothing(populated: tuple[Path, dict]) -> None:
    root, _ = populated
    n = len(blob_files(root))
    ok("--store", root, "keep-best", "--kind", "model", "--metric", "acc", "--mode", "min",
       "--k", "0", "--grace", "0")  # fmt: skip
    assert len(blob_files(root)) == n
    assert len(runstash.Store(root).list()) == 5


def test_stats(populated: tuple[Path, dict]) -> None:
    root, arts = populated
    s = runstash.Store(root)
    s.put_bytes(b"model one", kind="copy")  # a duplicate of m1's bytes
    Path(s.stage(".tmp")).write_bytes(b"left over")
    got = as_json("--store", root, "stats")
    assert got["records"] == 6
    assert got["blob_count"] == 5 and got["disk_blobs"] == 5
    assert got["live_bytes"] == sum(a.size for a in arts.values()) + 9
    assert got["staging_files"] == 1 and got["staging_bytes"] == 9
    assert got == s.stats().to_dict()
    out = ok("--store", root, "stats")
    assert "dedup ratio" in out and "staging leftovers" in out


def test_export_parquet(populated: tuple[Path, dict], tmp_path: Path) -> None:
    import polars as pl

    root, arts = populated
    dest = tmp_path / "index.parquet"
    out = ok("--store", root, "export", "--parquet", dest)
    assert "exported 5 artifacts" in out
    df = pl.read_parquet(dest)
    assert df["id"].to_list() == [a.id for a in arts.values()]
    assert df.filter(pl.col("kind") == "model")["metrics.acc"].to_list() == [0.7, 0.9, 0.8, 0.1]
    error_line(rs("--store", root, "export"), 2)  # --parquet is required
    error_line(rs("--store", root, "export", "--parquet", tmp_path / "no" / "dir.parquet"), 3)


def test_demo_then_ls_on_the_default_store(tmp_path: Path) -> None:
    out = ok("demo", "--steps", "60", "--durability", "os", cwd=tmp_path)
    assert "verify: 121 blobs checked, all intact" in out
    assert Path(tmp_path, ".runstash", "STORE.json").is_file()
    ls = json.loads(ok("ls", "--kind", "checkpoint", "--json", cwd=tmp_path))
    assert len(ls) == 1 and ls[0]["metrics"]["step"] == 49.0
    assert rs("verify", cwd=tmp_path).returncode == 0


def test_readme_shows_the_help_of_every_subcommand() -> None:
    """The README's "Command line" section has each subcommand's --help, with every option."""
    from runstash.cli import build_parser

    readme = Path(__file__).parent.parent.joinpath("README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        start = readme.index(f"$ runstash {name} --help\n")
        block = readme[start : readme.index("```", start)]
        for action in p._actions:
            for opt in action.option_strings:
                if action.help != argparse.SUPPRESS:
                    assert opt in block, f"README help of {name} lacks {opt}"
    assert set(sub.choices) == set(SUBCOMMANDS)
