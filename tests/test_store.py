"""The sync Store API: writes, dedup, reads, the streaming writer with real libraries, staging,
and the errors callers get for bad input."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import runstash
from tests.conftest import blob_files, blob_scheme, staging_entries

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


def test_put_read_dedup(store: runstash.Store) -> None:
    a = store.put_bytes(b"hello")
    b = store.put_bytes(bytearray(b"hello"))
    assert a.hash == b.hash == runstash.hash_bytes(b"hello")
    assert a.id != b.id, "every write is its own artifact"
    assert a.size == 5
    assert store.read_bytes(a) == b"hello"
    assert store.read_bytes(a.hash) == b"hello"
    assert store.read_bytes(a.uri) == b"hello"
    assert store.stats().disk_blobs == 0, "small payloads are packed into the index"
    assert a.uri.startswith(blob_scheme(store)) and a.uri.endswith(a.hash.split(":")[1][2:])
    assert store.path_of(a) == store.path_of(b.uri)
    if not store.is_remote:
        assert len(blob_files(store.root)) == 1, "path_of gave the packed blob its one file"
    mode = os.stat(store.path_of(a)).st_mode
    assert mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0, "blobs are read-only"
    with store.open(a) as f:
        assert f.read() == b"hello"
    assert store.exists(a) and store.verify(a)


def test_layout_and_metadata(tmp_path: Path) -> None:
    s = runstash.Store(tmp_path / "st")
    meta = json.loads((tmp_path / "st" / "STORE.json").read_text())
    assert meta["format"] == "runstash" and meta["format_version"] == 1
    assert meta["hash"] == "blake3" and meta["created_at"].endswith("Z")
    for sub in ("blobs", "staging", "index"):
        assert (tmp_path / "st" / sub).is_dir()
    assert s.durability == "fsync" and s.hash_algo == "blake3"
    blob = s.put_bytes(b"x")
    hexd = blob.hash.split(":")[1]
    assert Path(s.path_of(blob)) == tmp_path / "st" / "blobs" / hexd[:2] / hexd[2:]


def test_sha256_store(tmp_path: Path) -> None:
    import hashlib

    s = runstash.Store(tmp_path / "st", hash="sha256")
    b = s.put_bytes(b"abc")
    assert b.hash == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert runstash.Store(tmp_path / "st").hash_algo == "sha256"
    with pytest.raises(runstash.IncompatibleStoreError, match="sha256"):
        runstash.Store(tmp_path / "st", hash="blake3")
    with pytest.raises(runstash.InvalidArgumentError):
        s.read_bytes(runstash.hash_bytes(b"abc"))  # a blake3 digest in a sha256 store


def test_save_leaves_source_untouched(store: runstash.Store, tmp_path: Path) -> None:
    for size in (0, 10, 3 * (1 << 20) + 7):
        src = tmp_path / f"src{size}.bin"
        data = os.urandom(size)
        src.write_bytes(data)
        before = os.stat(src)
        b = store.save(src)
        assert b.hash == runstash.hash_bytes(data) and b.size == size
        assert src.read_bytes() == data
        after = os.stat(src)
        assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_mode,
        )
        assert store.read_bytes(b) == data
    assert staging_entries(store) == []


def test_stage_and_ingest_is_a_rename(store: runstash.Store) -> None:
    staged = store.stage(".csv")
    assert staged.endswith(".csv") and Path(staged).parent == Path(store.staging_dir)
    Path(staged).write_text("x,y\n1,2\n")
    inode = os.stat(staged).st_ino
    b = store.ingest(staged)
    assert not os.path.exists(staged)
    assert os.stat(store.path_of(b)).st_ino == inode, "ingest must move the file, not copy it"
    assert store.read_bytes(b) == b"x,y\n1,2\n"
    # Ingesting identical content again dedups and still consumes the staged file.
    again = store.stage(".csv")
    Path(again).write_text("x,y\n1,2\n")
    assert store.ingest(again).hash == b.hash
    assert store.stats().blob_count == 1
    assert not os.path.exists(again)
    assert staging_entries(store) == []


def test_writer_with_pil(store: runstash.Store) -> None:
    img = Image.new("RGB", (64, 48), (255, 122, 26))
    with store.writer(ext=".png") as w:
        img.save(w, format="PNG")
    assert w.artifact is not None
    data = store.read_bytes(w.artifact)
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size == (64, 48)
    assert w.artifact.hash == runstash.hash_bytes(data)


def test_writer_with_numpy_and_polars(store: runstash.Store) -> None:
    arr = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    with store.writer(ext=".npy") as w:
        np.save(w, arr)
    assert w.artifact is not None
    np.testing.assert_array_equal(np.load(io.BytesIO(store.read_bytes(w.artifact))), arr)

    df = pl.DataFrame({"step": list(range(1000)), "loss": [1.0 / (i + 1) for i in range(1000)]})
    with store.writer(ext=".parquet") as w2:
        df.write_parquet(w2)
    assert w2.artifact is not None
    back = pl.read_parquet(io.BytesIO(store.read_bytes(w2.artifact)))
    assert back.equals(df)
    assert w2.artifact.hash == runstash.hash_bytes(store.read_bytes(w2.artifact))


def test_writer_with_json_text_wrapper(store: runstash.Store) -> None:
    obj = {"a": [1, 2, 3], "b": "ünïcode"}
    with store.writer(ext=".json") as w:
        with io.TextIOWrapper(w, encoding="utf-8") as t:
            json.dump(obj, t)
    assert w.artifact is not None
    assert json.loads(store.read_bytes(w.artifact)) == obj


def test_writer_seek_rehashes(store: runstash.Store) -> None:
    with store.writer() as w:
        w.write(b"\0" * 8)
        w.write(b"payload")
        w.seek(0)
        w.write(b"HEADER!!")
        w.seek(0, io.SEEK_END)
        w.write(b"-tail")
    assert w.artifact is not None
    expect = b"HEADER!!payload-tail"
    assert store.read_bytes(w.artifact) == expect
    assert w.artifact.hash == runstash.hash_bytes(expect)
    assert w.artifact.size == len(expect)


def test_writer_exception_leaves_nothing(store: runstash.Store) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with store.writer(ext=".bin") as w:
            w.write(os.urandom(1 << 20))
            raise RuntimeError("boom")
    assert w.artifact is None
    assert store.stats().disk_blobs == 0
    assert staging_entries(store) == []


def test_empty_writer_stores_empty_blob(store: runstash.Store) -> None:
    with store.writer() as w:
        pass
    assert w.artifact is not None and w.artifact.size == 0
    assert w.artifact.hash == runstash.hash_bytes(b"")


def test_read_missing_and_corrupt(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "files", durability="os", pack_max=0)
    missing = runstash.hash_bytes(b"never stored")
    with pytest.raises(runstash.NotFoundError):
        store.read_bytes(missing)
    with pytest.raises(FileNotFoundError):  # the built-in base class works too
        store.open(missing)
    assert not store.exists(missing)
    b = store.put_bytes(b"precious bytes")
    os.chmod(store.path_of(b), 0o644)
    with open(store.path_of(b), "r+b") as f:
        f.write(b"X")
    assert store.read_bytes(b) == b"Xrecious bytes"  # unchecked read
    path = store.path_of(b)
    assert store.verify(b) is False  # damage found: moved to quarantine/
    assert not Path(path).exists()
    with pytest.raises(runstash.NotFoundError):
        store.read_bytes(b, verify=True)
    report = store.verify()
    assert isinstance(report, runstash.VerifyReport)
    assert report.checked == 0 and report.missing == (b.hash,) and not report.ok
    store.put_bytes(b"precious bytes")  # the same bytes again: healed
    assert store.read_bytes(b, verify=True) == b"precious bytes"
    assert store.verify().ok


def test_a_checked_read_finds_damage_and_moves_it_aside(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "files", durability="os", pack_max=0)
    b = store.put_bytes(b"precious bytes")
    os.chmod(store.path_of(b), 0o644)
    with open(store.path_of(b), "r+b") as f:
        f.write(b"X")
    path = store.path_of(b)
    with pytest.raises(runstash.CorruptError):
        store.read_bytes(b, verify=True)
    assert not Path(path).exists()
    assert store.stats().quarantined_files == 1


@pytest.mark.local_only
def test_packed_blob_corruption_is_caught(store: runstash.Store) -> None:
    """A flipped byte in packed bytes inside the index log: every read checks the frame's
    CRC, so unchecked reads refuse too (CorruptError, never the flipped bytes), verify()
    reports it, and reopening refuses the damaged log rather than cutting good records after
    it."""
    a = store.put_bytes(b"packed precious bytes")
    after = store.put_bytes(b"a later record")
    (seg,) = sorted(Path(store.root, "index").glob("log-*"))
    data = bytearray(seg.read_bytes())
    at = data.find(b"packed precious bytes")
    assert at > 0 and data.find(b"packed precious bytes", at + 1) < 0
    data[at] ^= 0x20
    seg.write_bytes(bytes(data))
    with pytest.raises(runstash.CorruptError, match="damaged"):
        store.read_bytes(a)
    with pytest.raises(runstash.CorruptError):
        store.read_bytes(a, verify=True)
    assert store.verify(a) is False and store.verify(after) is True
    report = store.verify()
    assert report.checked == 2 and len(report.corrupt) == 1 and not report.ok
    assert "log-" in report.corrupt[0]
    store.close()
    with pytest.raises(runstash.CorruptError, match="damaged"):
        runstash.Store(store.root, durability="os")


def test_pack_max(tmp_path: Path) -> None:
    s = runstash.Store(tmp_path / "s", durability="os", pack_max=10)
    assert s.pack_max == 10
    small, big = s.put_bytes(b"0123456789"), s.put_bytes(b"0123456789A")
    assert blob_files(s.root) == [Path(s.path_of(big))]
    assert s.read_bytes(small) == b"0123456789" and s.exists(small)
    with pytest.raises(runstash.InvalidArgumentError, match="pack_max"):
        runstash.Store(tmp_path / "t", pack_max=1 << 30)


def test_bad_input_errors(store: runstash.Store, tmp_path: Path) -> None:
    with pytest.raises(runstash.NotFoundError):
        store.save(tmp_path / "missing.bin")
    with pytest.raises(runstash.InvalidArgumentError, match="directory"):
        store.save(tmp_path)
    with pytest.raises(runstash.InvalidArgumentError):
        store.read_bytes("blake3:nothex")
    with pytest.raises(runstash.InvalidArgumentError, match="does not belong"):
        store.read_bytes("file:///etc/passwd")
    with pytest.raises(TypeError):
        store.read_bytes(123)  # type: ignore[arg-type]
    with pytest.raises(runstash.InvalidArgumentError, match="durability"):
        runstash.Store(tmp_path / "x", durability="sometimes")
    with pytest.raises(runstash.InvalidArgumentError, match="hash"):
        runstash.Store(tmp_path / "y", hash="md5")
    assert store.stats().disk_blobs == 0 and store.count() == 0


def test_uri_of_another_store_is_refused(tmp_path: Path) -> None:
    a = runstash.Store(tmp_path / "a", durability="os")
    b = runstash.Store(tmp_path / "b", durability="os")
    blob = a.put_bytes(b"only in a")
    with pytest.raises(runstash.InvalidArgumentError, match="does not belong"):
        b.read_bytes(blob.uri)


def test_store_root_checks(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a store")
    with pytest.raises(runstash.InvalidArgumentError, match="not a directory"):
        runstash.Store(f)
    d = tmp_path / "mydata"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    with pytest.raises(runstash.InvalidArgumentError, match="not a runstash store"):
        runstash.Store(d)
    assert sorted(os.listdir(d)) == ["thesis.tex"], "nothing written into a foreign directory"


def test_newer_format_is_refused(tmp_path: Path) -> None:
    runstash.Store(tmp_path / "st")
    meta_path = tmp_path / "st" / "STORE.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(runstash.IncompatibleStoreError, match="newer"):
        runstash.Store(tmp_path / "st")


def test_write_atomic_replaces(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    runstash.write_atomic(p, b"one")
    runstash.write_atomic(p, b"two", durability="os")
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_write_atomic_bare_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runstash.write_atomic("state.json", b"{}", durability="fsync")
    assert (tmp_path / "state.json").read_bytes() == b"{}"


def test_small_writer_stays_in_memory_and_large_one_spills(tmp_path: Path) -> None:
    s = runstash.Store(tmp_path / "s", durability="os", pack_max=100)
    with s.writer(ext=".bin") as w:
        w.write(b"a" * 60)
        w.seek(10)
        w.write(b"B" * 5)
        w.flush()
        assert staging_entries(s.root) == [], "up to pack_max bytes stay in memory"
        w.seek(0, 2)
        w.write(b"c" * 60)  # 120 bytes: past pack_max, now a temp file in staging/
        w.flush()
        assert len(staging_entries(s.root)) == 1
        w.seek(12)
        w.write(b"D")
    want = b"a" * 10 + b"BBDBB" + b"a" * 45 + b"c" * 60
    assert s.read_bytes(w.artifact, verify=True) == want
    assert w.artifact.hash == runstash.hash_bytes(want)
    assert staging_entries(s.root) == [] and len(blob_files(s.root)) == 1
    with s.writer() as w2:
        w2.write(b"xy")
        w2.seek(5)
        w2.write(b"z")  # a hole inside memory reads back as zeros
    assert s.read_bytes(w2.artifact) == b"xy\0\0\0z" and blob_files(s.root) != []


@pytest.mark.local_only
def test_odd_escapes_in_a_uri_are_refused_not_a_panic(store: runstash.Store) -> None:
    # Before: "%a" followed by a multi-byte character sliced text mid-character, a Rust
    # panic that reached Python as PanicException.
    blobs = Path(store.root, "blobs").as_uri()
    for uri in ["file:///x%a\u00e9", "file:///x%", "file://%C3", f"{blobs}/%a\u00e9/%zz"]:
        with pytest.raises(runstash.InvalidArgumentError):
            store.read_bytes(uri)
        with pytest.raises(runstash.InvalidArgumentError):
            store.exists(uri)


def test_ingest_dir_and_dir_of_on_the_sync_store(store: runstash.Store) -> None:
    d = Path(store.stage_dir("_run"))
    (d / "sub").mkdir()
    (d / "a.txt").write_bytes(b"alpha")
    (d / "sub" / "b.bin").write_bytes(b"\x00" * 70_000)
    art = store.ingest_dir(d, kind="report", labels={"k": "v"}, run_id="r1")
    assert not d.exists(), "a staged directory is removed once stored"
    assert art.mime == runstash.TREE_MIME and art.kind == "report" and art.run_id == "r1"
    tree = Path(store.dir_of(art))
    assert (tree / "a.txt").read_bytes() == b"alpha"
    assert (tree / "sub" / "b.bin").read_bytes() == b"\x00" * 70_000
    assert Path(store.dir_of(art.uri)) == tree
    outside = d.parent.parent.parent / "outside-dir"
    outside.mkdir()
    (outside / "c.txt").write_bytes(b"c")
    again = store.ingest_dir(outside, kind="report")
    assert outside.is_dir(), "a directory outside staging/ is never removed"
    assert (Path(store.dir_of(again)) / "c.txt").read_bytes() == b"c"
    with pytest.raises(runstash.InvalidArgumentError, match="not a directory"):
        store.ingest_dir(outside / "c.txt")
