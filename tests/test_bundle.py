"""runstash.bundle: the crv.io.artifacts-compatible run-bundle helpers.

Every function's happy path and crv's exact return keys; the CRV_IO_* settings; and each
upstream flaw pinned: concurrent writers of one path, fsync of text writes, directory fsync
after the rename (strace), no temp file after a failure, bare file names, unsafe run ids,
TypeError before touching the disk. Then the optional registration in a runstash index.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import runstash
from runstash import bundle
from runstash.bundle import (
    IoSettings,
    artifacts_root,
    file_stat,
    lab_dir,
    register_file,
    run_root,
    write_parquet_atomic,
    write_text_atomic,
)
from tests.conftest import STRACE, traced_region

STAT_KEYS = {"path", "bytes", "created_at"}
TEXT_KEYS = STAT_KEYS | {"wrote_text"}
PARQUET_KEYS = STAT_KEYS | {"rows"}
ENV_NAMES = (
    "ROOT_DIR",
    "PARTITIONING",
    "TICK_BUCKET_SIZE",
    "ROW_GROUP_SIZE",
    "COMPRESSION",
    "FS_PROTOCOL",
    "STRICT_SCHEMA",
    "WRITE_MANIFEST_EVERY_N",
)
BAD_RUN_IDS = ["", ".", "..", "/abs", "/", "a/b", "../up", "a\\b", "nul\x00", None]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv("CRV_IO_" + name, raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> IoSettings:
    return IoSettings(root_dir=str(tmp_path / "out"))


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".rstmp." in p.name or p.name.endswith(".tmp")]


def iso_utc(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    assert t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None)
    return t


# -- settings ---------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = IoSettings()
    assert s.root_dir == "out"
    assert (s.partitioning, s.compression, s.fs_protocol) == ("tick_buckets", "zstd", "file")
    assert (s.tick_bucket_size, s.row_group_size, s.write_manifest_every_n) == (100, 131072, 1)
    assert s.strict_schema is True and s.fs_options == {}
    assert IoSettings(root_dir="x").root_dir == "x"


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ROOT_DIR": "env_out",
        "PARTITIONING": "tick_buckets",
        "TICK_BUCKET_SIZE": "512",
        "ROW_GROUP_SIZE": "4096",
        "COMPRESSION": " LZ4 ",
        "FS_PROTOCOL": "s3",
        "STRICT_SCHEMA": "off",
        "WRITE_MANIFEST_EVERY_N": "7",
    }
    for k, v in env.items():
        monkeypatch.setenv("CRV_IO_" + k, v)
    s = IoSettings.from_env()
    assert s == IoSettings(
        root_dir="env_out",
        tick_bucket_size=512,
        row_group_size=4096,
        compression="lz4",
        fs_protocol="s3",
        strict_schema=False,
        write_manifest_every_n=7,
    )
    assert IoSettings() == IoSettings(), "the constructor itself never reads the environment"
    # A custom prefix, as crv allows.
    monkeypatch.setenv("MY_ROOT_DIR", "mine")
    assert IoSettings.from_env(prefix="MY_").root_dir == "mine"


def test_settings_env_ignores_empty_and_unparsable(monkeypatch: pytest.MonkeyPatch) -> None:
    base = IoSettings(root_dir="base", tick_bucket_size=3)
    monkeypatch.setenv("CRV_IO_ROOT_DIR", "")  # empty: ignored
    monkeypatch.setenv("CRV_IO_TICK_BUCKET_SIZE", "lots")  # not an int: ignored
    monkeypatch.setenv("CRV_IO_COMPRESSION", "brotli")  # unknown codec: ignored
    monkeypatch.setenv("CRV_IO_PARTITIONING", "daily")  # only tick_buckets exists: ignored
    monkeypatch.setenv("CRV_IO_STRICT_SCHEMA", "Yes")
    s = IoSettings.from_env(base=base)
    assert (s.root_dir, s.tick_bucket_size, s.compression) == ("base", 3, "zstd")
    assert s.partitioning == "tick_buckets" and s.strict_schema is True
    monkeypatch.setenv("CRV_IO_STRICT_SCHEMA", "maybe")
    assert IoSettings.from_env().strict_schema is False, "crv: anything not truthy is false"


def test_settings_load_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert IoSettings.load() == IoSettings(), "no file, no env: the defaults"
    (tmp_path / "pyproject.toml").write_text('[tool.crv.io]\nroot_dir = "pp"\nrow_group_size = 9\n')
    assert IoSettings.load() == IoSettings(root_dir="pp", row_group_size=9)
    (tmp_path / "crv.toml").write_text(
        '[io]\nroot_dir = "toml_out"\ntick_bucket_size = 256\ncompression = "lz4"\n'
        "strict_schema = false\n[io.fs_options]\nanon = true\n"
    )
    s = IoSettings.load()  # crv.toml wins over pyproject.toml
    assert (s.root_dir, s.tick_bucket_size, s.compression) == ("toml_out", 256, "lz4")
    assert s.strict_schema is False and s.fs_options == {"anon": True}
    assert s.row_group_size == 131072
    monkeypatch.setenv("CRV_IO_ROOT_DIR", "env_out")
    monkeypatch.setenv("CRV_IO_COMPRESSION", "zstd")
    s = IoSettings.load()
    assert (s.root_dir, s.tick_bucket_size, s.compression) == ("env_out", 256, "zstd")
    flat = tmp_path / "flat.toml"
    flat.write_text('root_dir = "flat"\n')
    assert IoSettings.from_toml(flat).root_dir == "flat"


# -- paths ------------------------------------------------------------------------------------


def test_paths_are_pure(settings: IoSettings, tmp_path: Path) -> None:
    root = settings.root_dir
    assert run_root(settings, "r1") == os.path.join(root, "runs", "r1")
    assert artifacts_root(settings, "r1") == os.path.join(root, "runs", "r1", "artifacts")
    assert artifacts_root(IoSettings(), "r1") == os.path.join("out", "runs", "r1", "artifacts")
    assert not Path(root).exists(), "run_root/artifacts_root must not create anything"


def test_lab_dir_creates_each_subdir(settings: IoSettings) -> None:
    for sub in ("tidy", "policy", "probes", "audit"):
        p = lab_dir(settings, "r1", sub)  # type: ignore[arg-type]
        assert p == os.path.join(settings.root_dir, "runs", "r1", "artifacts", "lab", sub)
        assert os.path.isdir(p)
        assert lab_dir(settings, "r1", sub) == p  # type: ignore[arg-type]  (idempotent)


def test_lab_dir_rejects_unknown_subdir(settings: IoSettings) -> None:
    with pytest.raises(ValueError, match="'world'") as e:
        lab_dir(settings, "r1", "world")  # type: ignore[arg-type]
    assert isinstance(e.value, runstash.InvalidArgumentError)
    with pytest.raises(ValueError, match=r"'\.\./tidy'"):
        lab_dir(settings, "r1", "../tidy")  # type: ignore[arg-type]
    assert not Path(settings.root_dir).exists()


@pytest.mark.parametrize("bad", BAD_RUN_IDS)
def test_unsafe_run_ids_are_refused(settings: IoSettings, bad: str) -> None:
    for fn in (run_root, artifacts_root):
        with pytest.raises(runstash.InvalidArgumentError):
            fn(settings, bad)
    with pytest.raises(ValueError):
        lab_dir(settings, bad, "tidy")
    assert not Path(settings.root_dir).exists()


# -- file_stat --------------------------------------------------------------------------------


def test_file_stat(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"12345")
    st = file_stat(str(f))
    assert set(st) == STAT_KEYS
    assert st["path"] == str(f) and st["bytes"] == 5
    assert abs((datetime.now(UTC) - iso_utc(st["created_at"])).total_seconds()) < 60
    assert file_stat(f)["path"] == str(f), "a PathLike comes back as its str"
    missing = file_stat(str(tmp_path / "nope"))
    assert set(missing) == STAT_KEYS and missing["bytes"] == 0


# -- writes: happy paths ----------------------------------------------------------------------


def test_write_text_atomic(settings: IoSettings) -> None:
    path = os.path.join(lab_dir(settings, "r1", "audit"), "summary.json")
    text = json.dumps({"ok": True, "note": "é✓"})
    st = write_text_atomic(path, text)
    assert set(st) == TEXT_KEYS and st["wrote_text"] is True
    assert st["path"] == path
    assert st["bytes"] == len(text.encode("utf-8")) == os.path.getsize(path)
    iso_utc(st["created_at"])
    assert json.loads(Path(path).read_text(encoding="utf-8")) == {"ok": True, "note": "é✓"}
    write_text_atomic(path, "v2")
    assert Path(path).read_text() == "v2"
    # Missing parents are created, as crv does.
    deep = Path(settings.root_dir) / "a" / "b" / "c.txt"
    assert write_text_atomic(deep, "deep")["path"] == str(deep)
    assert deep.read_text() == "deep"
    assert temps(Path(settings.root_dir)) == []


def test_write_parquet_atomic(settings: IoSettings) -> None:
    df = pl.DataFrame({"tick": [1, 2, 3], "price": [1.5, 2.5, None], "agent": ["a", "b", "c"]})
    path = os.path.join(lab_dir(settings, "r1", "tidy"), "trades.parquet")
    st = write_parquet_atomic(path, df)
    assert set(st) == PARQUET_KEYS
    assert st["path"] == path and st["rows"] == 3
    assert st["bytes"] == os.path.getsize(path) > 0
    iso_utc(st["created_at"])
    assert pl.read_parquet(path).equals(df)
    empty = pl.DataFrame({"x": []}, schema={"x": pl.Int64})
    assert write_parquet_atomic(path, empty)["rows"] == 0
    assert pl.read_parquet(path).equals(empty)
    assert temps(Path(settings.root_dir)) == []


def test_parquet_type_error_before_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "never" / "made" / "x.parquet"
    bad = [
        {"a": [1]},
        [1, 2],
        None,
        "x",
        pl.DataFrame({"a": [1]}).lazy(),
        pl.Series("a", [1]),
        pl.DataFrame({"a": [1]}).to_arrow(),
    ]
    for obj in bad:
        with pytest.raises(TypeError, match="polars.DataFrame"):
            write_parquet_atomic(str(target), obj)  # type: ignore[arg-type]
    assert not (tmp_path / "never").exists()


def test_text_type_error_before_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "never" / "x.txt"
    for obj in (b"bytes", 3, None):
        with pytest.raises(TypeError):
            write_text_atomic(str(target), obj)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(str(target), "lone surrogate \udc80")
    with pytest.raises(TypeError):
        write_text_atomic(str(target), "ok", store="not a store")  # type: ignore[arg-type]
    assert not (tmp_path / "never").exists()


def test_bare_file_name_writes_into_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    st = write_text_atomic("summary.json", '{"a": 1}')
    assert st["path"] == "summary.json" and (tmp_path / "summary.json").read_text() == '{"a": 1}'
    df = pl.DataFrame({"a": [1, 2]})
    st = write_parquet_atomic("table.parquet", df)
    assert st["path"] == "table.parquet" and st["rows"] == 2
    assert pl.read_parquet(tmp_path / "table.parquet").equals(df)
    assert sorted(os.listdir(tmp_path)) == ["summary.json", "table.parquet"]


# -- writes: the upstream flaws ---------------------------------------------------------------


def _run_threads(n: int, target: object) -> list[BaseException | None]:
    """Start n threads together (a barrier, no sleeps); each returns its error or None."""
    barrier = threading.Barrier(n)
    errors: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            target(i)  # type: ignore[operator]
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_eight_threads_one_parquet_path_all_succeed(settings: IoSettings) -> None:
    # crv writes every thread's bytes to the same "<path>.tmp": renames race and most threads
    # fail (5 of 8). Unique O_EXCL temp names make every write succeed, and the final file is
    # always exactly one thread's complete frame.
    path = os.path.join(lab_dir(settings, "r1", "tidy"), "shared.parquet")
    frames = [
        pl.DataFrame({"writer": [i] * (1000 + 997 * i), "v": [float(i)] * (1000 + 997 * i)})
        for i in range(8)
    ]
    for _round in range(5):
        results: list[dict | None] = [None] * 8

        def write(i: int, results: list[dict | None] = results) -> None:
            results[i] = write_parquet_atomic(path, frames[i])

        assert _run_threads(8, write) == [None] * 8
        assert [r["rows"] for r in results] == [f.height for f in frames]  # type: ignore[index]
        out = pl.read_parquet(path)
        winners = [i for i, f in enumerate(frames) if out.equals(f)]
        assert len(winners) == 1, "the file must be one complete version"
        assert os.path.getsize(path) == results[winners[0]]["bytes"]  # type: ignore[index]
        assert os.listdir(os.path.dirname(path)) == ["shared.parquet"], "no temp left"


def test_eight_threads_one_text_path_all_succeed(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    versions = [json.dumps({"writer": i, "pad": "x" * (50_000 * (i + 1))}) for i in range(8)]
    assert _run_threads(8, lambda i: write_text_atomic(path, versions[i])) == [None] * 8
    assert Path(path).read_text() in versions
    assert os.listdir(tmp_path) == ["state.json"]


def test_polars_failure_midway_leaves_no_temp_and_old_version(
    settings: IoSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = lab_dir(settings, "r1", "probes")
    path = os.path.join(d, "p.parquet")
    old = pl.DataFrame({"a": [1, 2, 3]})
    write_parquet_atomic(path, old)
    before = all_files(Path(settings.root_dir))

    def broken(self: pl.DataFrame, file: object, *a: object, **k: object) -> None:
        assert isinstance(file, io.IOBase)
        file.write(b"PAR1" + b"\0" * 100_000)  # half a file, then the writer dies
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_parquet_atomic(path, pl.DataFrame({"a": [9]}))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_parquet_atomic(os.path.join(d, "new.parquet"), pl.DataFrame({"a": [9]}))
    monkeypatch.undo()
    assert all_files(Path(settings.root_dir)) == before
    assert pl.read_parquet(path).equals(old)


def test_publish_failure_leaves_no_temp(tmp_path: Path) -> None:
    blocker = tmp_path / "occupied"
    (blocker / "child").mkdir(parents=True)  # a non-empty directory where the file should go
    with pytest.raises(OSError):
        write_text_atomic(str(blocker), "text")
    with pytest.raises(OSError):
        write_parquet_atomic(str(blocker), pl.DataFrame({"a": [1]}))
    assert temps(tmp_path) == [] and all_files(tmp_path) == ["occupied", "occupied/child"]
    (tmp_path / "file").write_text("x")  # a file where a parent directory should go
    with pytest.raises(OSError):
        write_text_atomic(str(tmp_path / "file" / "x.txt"), "text")
    assert temps(tmp_path) == []


WRITES = r"""
import os, sys
import polars as pl
from runstash.bundle import IoSettings, lab_dir, write_parquet_atomic, write_text_atomic
s = IoSettings(root_dir=sys.argv[1])
df = pl.DataFrame({"a": list(range(100))})
os.write(2, b"@@BEGIN@@")
write_text_atomic(os.path.join(lab_dir(s, "r1", "audit"), "a.json"), '{"a": 1}')
write_parquet_atomic(os.path.join(lab_dir(s, "r1", "tidy"), "t.parquet"), df)
write_text_atomic(os.path.join(sys.argv[1], "new", "deeper", "b.txt"), "b")
write_text_atomic("bare.txt", "bare")
os.write(2, b"@@END@@")
"""


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)")
def test_fsync_file_before_rename_and_directory_after(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    root = tmp_path / "out"
    trace = tmp_path / "trace.txt"
    cmd = [
        str(STRACE), "-f", "-y", "-s", "256", "-o", str(trace),
        "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write",
        sys.executable, "-c", WRITES, str(root),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, cwd=cwd)
    assert res.returncode == 0, res.stderr.decode()
    calls = traced_region(trace)
    renames = [i for i, (n, _) in enumerate(calls) if n.startswith("rename")]
    assert len(renames) == 4, calls  # one publish per write, text included
    published = set()
    for i in renames:
        src, dest = re.findall(r'"([^"]+)"', calls[i][1])[:2]
        assert ".rstmp." in os.path.basename(src), f"temp names must be unique: {src}"
        dest_abs = os.path.normpath(os.path.join(cwd, dest))
        published.add(os.path.basename(dest_abs))
        before = [a for n, a in calls[:i] if n in ("fsync", "fdatasync")]
        assert any(os.path.basename(src) in a for a in before), f"{src} not fsynced: {calls}"
        after = [a for n, a in calls[i + 1 :] if n == "fsync"]
        dest_dir = os.path.dirname(dest_abs)
        assert any(a.rstrip(">").endswith("<" + dest_dir) for a in after), (
            f"directory {dest_dir} not fsynced after the rename: {calls}"
        )
    assert published == {"a.json", "t.parquet", "b.txt", "bare.txt"}
    # Directories the helpers created are durable too: their parents were fsynced.
    fsynced = {a.split("<", 1)[1].rstrip(">") for n, a in calls if n == "fsync" and "<" in a}
    for d in (tmp_path, root, root / "runs" / "r1" / "artifacts" / "lab", root / "new"):
        assert str(d) in fsynced, f"{d} not fsynced after creating a child: {calls}"


# -- registration -----------------------------------------------------------------------------


def test_register_with_store_records_lab_kind(settings: IoSettings, store: runstash.Store) -> None:
    df = pl.DataFrame({"a": [1, 2]})
    path = os.path.join(lab_dir(settings, "r7", "tidy"), "t.parquet")
    st = write_parquet_atomic(path, df, store=store)
    assert set(st) == PARQUET_KEYS, "registering must not change crv's return keys"
    (a,) = store.list(kind="lab.tidy")
    assert a.run_id == "r7" and a.labels == {"path": "artifacts/lab/tidy/t.parquet"}
    assert store.read_bytes(a) == Path(path).read_bytes() and a.size == st["bytes"]
    assert a.mime == "application/vnd.apache.parquet"

    jpath = os.path.join(lab_dir(settings, "r7", "audit"), "audit.json")
    st = write_text_atomic(jpath, '{"x": 1}', store=store, register=False)  # store implies it
    assert set(st) == TEXT_KEYS
    (b,) = store.list(kind="lab.audit", run_id="r7")
    assert b.labels == {"path": "artifacts/lab/audit/audit.json"}
    assert store.read_bytes(b) == b'{"x": 1}' and b.mime == "application/json"
    assert store.count() == 2

    write_text_atomic(jpath, "{}")  # no register, no store: nothing recorded
    assert store.count() == 2


def test_register_true_uses_default_store(
    settings: IoSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = os.path.join(lab_dir(settings, "r1", "policy"), "pol.parquet")
    st = write_parquet_atomic(path, pl.DataFrame({"a": [1]}), register=True)
    assert set(st) == PARQUET_KEYS
    write_text_atomic("notes.txt", "hello", register=True)
    default = runstash.Store(tmp_path / ".runstash")
    (a,) = default.list(kind="lab.policy")
    assert a.run_id == "r1" and a.labels == {"path": "artifacts/lab/policy/pol.parquet"}
    (b,) = default.list(kind="lab.file")
    assert b.run_id is None and b.labels == {"path": "notes.txt"}
    assert default.read_bytes(b) == b"hello"


def test_register_file(settings: IoSettings, store: runstash.Store, tmp_path: Path) -> None:
    p = os.path.join(lab_dir(settings, "r2", "probes"), "probe.json")
    write_text_atomic(p, "[1, 2]")
    a = register_file(p, store=store)
    assert isinstance(a, runstash.Artifact)
    assert (a.kind, a.run_id) == ("lab.probes", "r2")
    assert a.labels == {"path": "artifacts/lab/probes/probe.json"}
    assert store.read_bytes(a) == b"[1, 2]" and Path(p).read_text() == "[1, 2]"
    # Outside the layout: lab.file with the file name; explicit subdir and run id win.
    loose = tmp_path / "loose.csv"
    loose.write_text("a,b\n")
    b = register_file(loose, store=store)
    assert (b.kind, b.run_id, b.labels) == ("lab.file", None, {"path": "loose.csv"})
    c = register_file(loose, store=store, subdir="audit", run_id="r9")
    assert (c.kind, c.run_id, c.labels) == ("lab.audit", "r9", {"path": "loose.csv"})
    # A file under runs/<id>/artifacts but not in a lab subdir: lab.file, path from run root.
    other = Path(artifacts_root(settings, "r3")) / "world" / "w.txt"
    write_text_atomic(other, "w")
    d = register_file(other, store=store)
    assert (d.kind, d.run_id, d.labels) == ("lab.file", "r3", {"path": "artifacts/world/w.txt"})
    assert store.list(kind="lab.probes") == [a]
    n = store.count()
    with pytest.raises(ValueError, match="'world'"):
        register_file(loose, store=store, subdir="world")
    with pytest.raises(runstash.InvalidArgumentError):
        register_file(loose, store=store, run_id="../x")
    with pytest.raises(runstash.NotFoundError):
        register_file(tmp_path / "missing.txt", store=store)
    assert store.count() == n


def test_root_dir_named_runs(tmp_path: Path, store: runstash.Store) -> None:
    s = IoSettings(root_dir=str(tmp_path / "runs"))
    p = os.path.join(lab_dir(s, "runs", "tidy"), "x.parquet")
    write_parquet_atomic(p, pl.DataFrame({"a": [1]}), store=store)
    (a,) = store.list(kind="lab.tidy")
    assert a.run_id == "runs" and a.labels == {"path": "artifacts/lab/tidy/x.parquet"}


def test_public_names() -> None:
    assert runstash.bundle is bundle and "bundle" in runstash.__all__
    for name in bundle.__all__:
        obj = getattr(bundle, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
