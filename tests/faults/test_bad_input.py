"""Bad input: each is refused with a clear error of the runstash hierarchy, and NOTHING is
written.

"Nothing written" is checked byte for byte: a picture of the whole workspace (the store and
every source file, directory and link the test made; types, sizes and content hashes) is taken
right before the bad call and compared right after it, and again after the store is reopened;
the record count must not change either. The exception class is checked exactly (not just
"some RunstashError").

Where an older test already refuses the same input, it checked the error class and usually the
record count, but not the rest of the tree; the cases here add that. Cases fully covered
elsewhere are not repeated: tests/faults/README.md maps every bad input to its test.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import runstash
from runstash import ArtifactFacade
from tests.faults.helpers import tree, tree_diff


@dataclass
class Workspace:
    base: Path  # everything the test made lives under here, the store too
    store: runstash.Store
    fac: ArtifactFacade
    src: Path  # a 2 MiB source file (the kernel-copy path of save)
    small: Path  # a small source file
    existing: runstash.Artifact  # a stored artifact, for record_many


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    store = runstash.Store(tmp_path / "store", durability="os")
    existing = store.put_bytes(b"already here", kind="seed", labels={"k": "v"})
    store.put_bytes(b"pinned one", kind="seed", pin=True, metrics={"m": 1.0})
    src = tmp_path / "src" / "big.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(2 << 20))
    small = tmp_path / "src" / "small.json"
    small.write_bytes(b'{"a": 1}')
    fac = ArtifactFacade(store, run_id="r1", graph_id="g", node_id="n")
    return Workspace(tmp_path, store, fac, src, small, existing)


def refused(ws: Workspace, exc: type[BaseException], call: Callable[[], Any]) -> BaseException:
    """Runs ``call``, which must raise exactly ``exc`` and leave every byte as it was."""
    before = tree(ws.base)
    count = ws.store.count()
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, f"expected {exc.__name__}, got {type(info.value)!r}"
    assert str(info.value), "the error must say what was wrong"
    assert tree_diff(before, tree(ws.base)) == [], "a refused call wrote something"
    assert ws.store.count() == count, "a refused call recorded something"
    with runstash.Store(ws.store.root, durability="os") as again:
        assert again.count() == count
    assert tree_diff(before, tree(ws.base)) == [], "reopening after a refused call changed files"
    return info.value


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


BAD_META: dict[str, tuple[dict[str, Any], type[BaseException]]] = {
    "metric-nan": ({"metrics": {"m": float("nan")}}, runstash.InvalidArgumentError),
    "metric-inf": ({"metrics": {"m": float("inf")}}, runstash.InvalidArgumentError),
    "metric-minus-inf": ({"metrics": {"m": float("-inf")}}, runstash.InvalidArgumentError),
    "label-key-int": ({"labels": {1: "a"}}, runstash.InvalidArgumentError),
    "label-key-bytes": ({"labels": {b"k": "a"}}, runstash.InvalidArgumentError),
    "label-key-tuple": ({"labels": {("t",): "a"}}, runstash.InvalidArgumentError),
    "label-value-list": ({"labels": {"k": [1, 2]}}, runstash.InvalidArgumentError),
    "label-value-dict": ({"labels": {"k": {"x": 1}}}, runstash.InvalidArgumentError),
    "label-value-none": ({"labels": {"k": None}}, runstash.InvalidArgumentError),
    "kind-slash": ({"kind": "models/best"}, runstash.InvalidArgumentError),
    "kind-absolute": ({"kind": "/etc"}, runstash.InvalidArgumentError),
    "kind-backslash": ({"kind": "a\\b"}, runstash.InvalidArgumentError),
    "kind-nul": ({"kind": "a\0b"}, runstash.InvalidArgumentError),
    "kind-dotdot": ({"kind": ".."}, runstash.InvalidArgumentError),
    "kind-not-a-str": ({"kind": 123}, TypeError),
}


def _facade_kw(kw: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "report", **kw}


def _write_paths(ws: Workspace) -> dict[str, Callable[[dict[str, Any]], Callable[[], Any]]]:
    """Every way to write an artifact. Each entry prepares its inputs (a staged file or
    directory: the caller's own files, which must survive the refusal) and returns the call."""

    def put_bytes(kw: dict[str, Any]) -> Callable[[], Any]:
        return lambda: ws.store.put_bytes(b"payload", **kw)

    def save(kw: dict[str, Any]) -> Callable[[], Any]:
        return lambda: ws.store.save(ws.src, **kw)

    def writer(kw: dict[str, Any]) -> Callable[[], Any]:
        def go() -> None:
            with ws.store.writer(".bin", **kw) as w:
                w.write(b"streamed bytes" * 1000)

        return go

    def ingest(kw: dict[str, Any]) -> Callable[[], Any]:
        staged = ws.store.stage(".bin")
        Path(staged).write_bytes(b"staged bytes")
        return lambda: ws.store.ingest(staged, **kw)

    def record_many(kw: dict[str, Any]) -> Callable[[], Any]:
        return lambda: ws.store.record_many(ws.existing, [{"kind": "ok"}, kw])

    def facade_save(kw: dict[str, Any]) -> Callable[[], Any]:
        return lambda: arun(ws.fac.save(ws.small, **_facade_kw(kw)))

    def facade_ingest(kw: dict[str, Any]) -> Callable[[], Any]:
        staged = arun(ws.fac.stage(".csv"))
        Path(staged).write_bytes(b"x,y\n1,2\n")
        return lambda: arun(ws.fac.ingest(staged, **_facade_kw(kw)))

    def facade_writer(kw: dict[str, Any]) -> Callable[[], Any]:
        async def go() -> None:
            async with ws.fac.writer(planned_ext=".txt", **_facade_kw(kw)) as w:
                w.write(b"text")

        return lambda: arun(go())

    def facade_ingest_dir(kw: dict[str, Any]) -> Callable[[], Any]:
        d = Path(arun(ws.fac.stage_dir("_report")))
        (d / "a.txt").write_bytes(b"file a")
        (d / "sub").mkdir()
        (d / "sub" / "b.bin").write_bytes(os.urandom(3000))
        return lambda: arun(ws.fac.ingest_dir(str(d), **_facade_kw(kw)))

    return {
        "put_bytes": put_bytes,
        "save": save,
        "writer": writer,
        "ingest": ingest,
        "record_many": record_many,
        "facade.save": facade_save,
        "facade.ingest": facade_ingest,
        "facade.writer": facade_writer,
        "facade.ingest_dir": facade_ingest_dir,
    }


WRITE_PATHS = [
    "put_bytes",
    "save",
    "writer",
    "ingest",
    "record_many",
    "facade.save",
    "facade.ingest",
    "facade.writer",
    "facade.ingest_dir",
]


@pytest.mark.parametrize("path", WRITE_PATHS)
@pytest.mark.parametrize("case", sorted(BAD_META))
def test_bad_metadata_writes_nothing(ws: Workspace, case: str, path: str) -> None:
    kw, exc = BAD_META[case]
    if path.startswith("facade.") and exc is TypeError:
        exc = runstash.InvalidArgumentError  # the facade checks the kind itself
    call = _write_paths(ws)[path](kw)
    refused(ws, exc, call)


BAD_URIS = ["../x.png", "a/../../x.png", "..", "/abs/x.png", "file:///abs/x.png"]


@pytest.mark.parametrize("uri", BAD_URIS)
@pytest.mark.parametrize("path", ["facade.save", "facade.ingest", "facade.ingest_dir"])
def test_bad_suggested_uri_writes_nothing(ws: Workspace, path: str, uri: str) -> None:
    call = _write_paths(ws)[path]({"suggested_uri": uri})
    refused(ws, runstash.InvalidArgumentError, call)


SYMLINKS = {
    # each makes one link that leaves the staged directory `d`; `out` is outside it
    "file-link-absolute": lambda d, out: os.symlink(out / "secret.txt", d / "leak.txt"),
    "file-link-relative": lambda d, out: os.symlink("../../outside/secret.txt", d / "sub/leak"),
    "dir-link": lambda d, out: os.symlink(out, d / "leakdir"),
    "nested-dir-link": lambda d, out: os.symlink("../../../outside", d / "sub/deeper/up"),
    "link-to-etc": lambda d, out: os.symlink("/etc/hostname", d / "zzz_last"),
}


@pytest.mark.parametrize("case", sorted(SYMLINKS))
def test_ingest_dir_symlink_out_of_the_tree_writes_nothing(ws: Workspace, case: str) -> None:
    """Regular files sit beside the bad link (before and after it in walk order, small and
    over 1 MiB): none of their bytes may be stored when the directory is refused."""
    outside = ws.base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    d = Path(arun(ws.fac.stage_dir("_bad")))
    (d / "sub" / "deeper").mkdir(parents=True)
    for name in ("aaa_first.txt", "mmm.bin", "sub/b.txt", "sub/deeper/c.txt", "zzzz.txt"):
        (d / name).write_bytes(name.encode() * 10)
    (d / "big.bin").write_bytes(os.urandom((1 << 20) + 17))
    SYMLINKS[case](d, outside)
    err = refused(
        ws, runstash.InvalidArgumentError, lambda: arun(ws.fac.ingest_dir(str(d), kind="report"))
    )
    assert "symlink" in str(err)
    assert ws.fac.last_artifact is None


def test_save_of_a_directory_or_missing_file_writes_nothing(ws: Workspace) -> None:
    missing = ws.base / "src" / "missing.bin"
    refused(ws, runstash.InvalidArgumentError, lambda: ws.store.save(ws.src.parent))
    refused(
        ws,
        runstash.InvalidArgumentError,
        lambda: arun(ws.fac.save(ws.src.parent, kind="report")),
    )
    refused(ws, runstash.NotFoundError, lambda: ws.store.save(missing))
    refused(ws, runstash.NotFoundError, lambda: arun(ws.fac.save(missing, kind="report")))
    staged_missing = Path(ws.store.root, "staging", "stage.never-made.bin")
    refused(ws, runstash.NotFoundError, lambda: ws.store.ingest(staged_missing))
    err = refused(ws, runstash.NotFoundError, lambda: ws.store.save(missing))
    assert isinstance(err, FileNotFoundError)  # the built-in base class works too


def test_uri_of_another_store_writes_nothing(ws: Workspace) -> None:
    other = runstash.Store(ws.base / "other", durability="os")
    foreign = other.put_bytes(b'{"from": "elsewhere"}', kind="json")
    other_fac = ArtifactFacade(other, run_id="r1")
    tree_dir = Path(arun(other_fac.stage_dir()))
    (tree_dir / "f.txt").write_bytes(b"in the other store")
    foreign_tree = arun(other_fac.ingest_dir(str(tree_dir), kind="dir"))
    other.close()
    for uri in (foreign.uri, foreign_tree.uri):
        for call in (
            lambda u=uri: ws.store.read_bytes(u),
            lambda u=uri: ws.store.read_bytes(u, verify=True),
            lambda u=uri: ws.store.verify(u),
            lambda u=uri: ws.store.record_many(u, [{"kind": "stolen"}]),
            lambda u=uri: arun(ws.fac.load_artifact(u)),
            lambda u=uri: arun(ws.fac.load_artifact_bytes(u)),
        ):
            err = refused(ws, runstash.InvalidArgumentError, call)
            assert "does not belong" in str(err)
    assert not Path(ws.store.root, "trees").exists(), "no directory materialized"


def test_store_root_that_is_a_file_writes_nothing(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("my notes")
    before = tree(tmp_path)
    with pytest.raises(runstash.InvalidArgumentError, match="not a directory"):
        runstash.Store(f)
    with pytest.raises(runstash.StoreIOError) as info:
        runstash.Store(f / "sub")
    assert info.value.errno == errno.ENOTDIR
    assert tree_diff(before, tree(tmp_path)) == []


def test_newer_store_format_writes_nothing(ws: Workspace) -> None:
    """A refused open does not even do the housekeeping of a normal open (cleaning temps of
    dead writers, creating missing directories): a newer runstash owns those files."""
    root = Path(ws.store.root)
    count = ws.store.count()
    ws.store.close()
    dead_temp = root / "staging" / f".rstmp.{0x7FFFFFF0}.0.0"  # pid far above pid_max: dead
    dead_temp.write_bytes(b"a newer writer's temp")
    (root / "blobs").rename(root / "blobs-moved-by-newer-version")
    meta_path = root / "STORE.json"
    original = meta_path.read_bytes()
    meta = json.loads(original)
    meta["format_version"] += 1
    meta_path.write_text(json.dumps(meta))
    before = tree(ws.base)
    for durability in ("os", "fsync"):
        with pytest.raises(runstash.IncompatibleStoreError, match="newer") as info:
            runstash.Store(root, durability=durability)
        assert type(info.value) is runstash.IncompatibleStoreError
        assert tree_diff(before, tree(ws.base)) == [], "a refused open wrote something"
    meta_path.write_bytes(original)
    (root / "blobs-moved-by-newer-version").rename(root / "blobs")
    with runstash.Store(root, durability="os") as s:
        assert s.count() == count


def test_not_found_errors_keep_their_message(ws: Workspace) -> None:
    """A missing blob is a NotFoundError whose text says which blob (an OSError with a file
    name but no errno used to print only "[Errno None] None: '<path>'")."""
    missing = runstash.hash_bytes(b"never stored")
    for call in (
        lambda: ws.store.read_bytes(missing),
        lambda: ws.store.read_bytes(missing, verify=True),
        lambda: ws.store.verify(missing),
        lambda: ws.store.open(missing),
        lambda: ws.store.record_many(missing, [{"kind": "x"}]),
        lambda: ws.store.delete("01M848VAJ700HA800074NHXPTX"),
    ):
        err = refused(ws, runstash.NotFoundError, call)
        assert err.errno == errno.ENOENT
        assert "None" not in str(err), str(err)
        assert "no blob" in str(err) or "no artifact" in str(err) or "stat" in str(err), str(err)
