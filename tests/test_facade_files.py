"""The AetherGraph facade's file work: writers, saves, loads and decoders, directories, URIs,
argument checks, and an event loop that never stalls during a 1 GiB save (split from
test_facade.py, which holds the seed's examples and the query surface)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import runstash
from runstash import ArtifactFacade
from tests.conftest import staging_entries
from tests.facade_helpers import CountingExecutor, HopCounter, StubContext, run
from tests.test_facade import (
    REPORT_FILES,
    example_4_directory,
    facade,
    ids,
    src_file,
    write_report_files,
)

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


def test_writer_exception_leaves_nothing(fac: ArtifactFacade, tmp_path: Path) -> None:
    async def go() -> None:
        first = await fac.save(src_file(tmp_path, "a.bin", b"a"), kind="x")
        stored_before = fac.store.stats().disk_blobs
        count_before = fac.store.count()
        with pytest.raises(RuntimeError, match="boom"):
            async with fac.writer(kind="image", planned_ext=".png") as w:
                w.write(os.urandom(1 << 20))  # more than the write buffer: bytes hit the disk
                w.flush()
                raise RuntimeError("boom")
        assert fac.store.count() == count_before, "no new record"
        assert staging_entries(fac.store) == [], "no staging file"
        assert fac.store.stats().disk_blobs == stored_before, "no new blob"
        assert fac.last_artifact is first, "last_artifact unchanged"
        assert ids(await fac.list(scope="all")) == [first.id]

    run(go())


def test_writer_is_a_real_file_and_commits(fac: ArtifactFacade) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)

    async def go() -> None:
        async with fac.writer(kind="array", planned_ext=".npy") as w:
            np.save(w, arr)
        a = fac.last_artifact
        assert a is not None and a.kind == "array"
        np.testing.assert_array_equal(await fac.load_artifact(a.uri), arr)
        async with fac.writer(kind="table", planned_ext=".json") as w:
            t = io.TextIOWrapper(w, encoding="utf-8")
            json.dump({"k": [1, 2]}, t)
            t.flush()
            w.seek(0)
            w.write(b"{")  # seeking and overwriting works
        b = fac.last_artifact
        assert await fac.load_artifact(b.uri) == {"k": [1, 2]}
        async with fac.writer(kind="empty"):
            pass
        e = fac.last_artifact
        assert e.size == 0 and await fac.load_artifact_bytes(e.uri) == b""
        assert staging_entries(fac.store) == []
        assert ids(await fac.list()) == [e.id, b.id, a.id], "newest first"

    run(go())


def test_last_artifact_set_by_every_write(fac: ArtifactFacade, tmp_path: Path) -> None:
    async def go() -> None:
        assert fac.last_artifact is None
        a = await fac.save(src_file(tmp_path, "a.txt", b"a"), kind="text")
        assert fac.last_artifact is a
        staged = await fac.stage(".txt")
        Path(staged).write_bytes(b"b")
        b = await fac.ingest(staged, kind="text")
        assert fac.last_artifact is b
        async with fac.writer(kind="text", planned_ext=".txt") as w:
            w.write(b"c")
        c = fac.last_artifact
        assert c is not None and c.id not in (a.id, b.id)
        assert fac.store.read_bytes(c) == b"c"
        d_dir = await fac.stage_dir()
        Path(d_dir, "f").write_bytes(b"d")
        d = await fac.ingest_dir(d_dir, kind="dir")
        assert fac.last_artifact is d
        e = await fac.save_file(src_file(tmp_path, "e.txt", b"e"), kind="text")
        assert fac.last_artifact is e
        staged = await fac.stage_path(".txt")
        Path(staged).write_bytes(b"f")
        f = await fac.ingest_file(staged, kind="text")
        assert fac.last_artifact is f
        # reads, queries and failures leave it alone
        await fac.list()
        await fac.best(kind="text", metric="m", mode="max")
        with pytest.raises(runstash.RunstashError):
            await fac.save(src_file(tmp_path, "g.txt", b"g"), kind="text", suggested_uri="../x")
        with pytest.raises(FileNotFoundError):
            await fac.save(tmp_path / "missing.txt", kind="text")
        assert fac.last_artifact is f

    run(go())


def test_save_leaves_source_unless_cleanup(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = src_file(tmp_path, "keep.bin", b"keep me")
    before = os.stat(src)

    async def go() -> None:
        a = await fac.save(src, kind="x")
        assert src.read_bytes() == b"keep me"
        after = os.stat(src)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert os.stat(fac.store.path_of(a)).st_ino != before.st_ino, "the store has a copy"
        b = await fac.save(src, kind="x", cleanup=True)
        assert not src.exists()
        assert fac.store.read_bytes(b) == b"keep me"

    run(go())


def test_identical_bytes_two_records_one_blob(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = src_file(tmp_path, "same.bin", b"identical content")
    other = facade(fac.store, "run-2")

    async def go() -> None:
        a = await fac.save(src, kind="model", labels={"n": 1}, metrics={"acc": 0.5})
        b = await other.save(src, kind="model", labels={"n": 2}, metrics={"acc": 0.9})
        assert a.id != b.id and a.hash == b.hash and a.sha256 == b.sha256
        assert fac.store.path_of(a) == fac.store.path_of(b)
        assert fac.store.stats().blob_count == 1
        a2, b2 = fac.store.get(a.id), fac.store.get(b.id)
        assert (a2.metrics, a2.labels["n"], a2.run_id) == ({"acc": 0.5}, 1, "run-1")
        assert (b2.metrics, b2.labels["n"], b2.run_id) == ({"acc": 0.9}, 2, "run-2")
        assert ids(await other.list()) == [b.id]
        assert ids(await fac.list()) == [a.id]

    run(go())


class _Trap:
    """Unpickling this creates a directory: proof that a loader unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).write_parquet(buf)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(4), y=np.eye(2))
    return buf.getvalue()


def test_load_artifact_decodes_by_kind_and_extension(fac: ArtifactFacade, tmp_path: Path) -> None:
    cases: list[tuple[str, str, bytes, object]] = [
        ("r.json", "result", b'{"a": [1, 2], "b": null}', {"a": [1, 2], "b": None}),
        ("notes.bin", "text", "h\u00e9llo".encode(), "h\u00e9llo"),
        ("log.bin", "log", b"line\n", "line\n"),
        ("readme.txt", "blob", b"plain", "plain"),
        ("t.csv", "table", b"x,y\n1,2\n", "x,y\n1,2\n"),
        ("w.bin", "model", b"\x00\x01binary", b"\x00\x01binary"),
        ("noext", "blob", b'{"looks": "json"}', b'{"looks": "json"}'),
        ("img.png", "image", b"\x89PNG fake", b"\x89PNG fake"),
    ]

    async def go() -> None:
        for name, kind, data, want in cases:
            a = await fac.save(src_file(tmp_path, name, data), kind=kind)
            got = await fac.load_artifact(a.uri)
            assert type(got) is type(want) and got == want, (name, kind, got)
            assert await fac.load_artifact_bytes(a.uri) == data

        a = await fac.save(src_file(tmp_path, "df.parquet", _parquet_bytes()), kind="table")
        df = await fac.load_artifact(a.uri)
        assert isinstance(df, pl.DataFrame)
        assert df.equals(pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}))

        arr = np.arange(6, dtype=np.int16).reshape(2, 3)
        a = await fac.save(src_file(tmp_path, "a.npy", _npy_bytes(arr)), kind="array")
        got = await fac.load_artifact(a.uri)
        assert isinstance(got, np.ndarray) and got.dtype == np.int16
        np.testing.assert_array_equal(got, arr)

        a = await fac.save(src_file(tmp_path, "a.npz", _npz_bytes()), kind="arrays")
        got = await fac.load_artifact(a.uri)
        assert sorted(got) == ["x", "y"]
        np.testing.assert_array_equal(got["x"], np.arange(4))
        np.testing.assert_array_equal(got["y"], np.eye(2))

    run(go())


def test_load_artifact_never_unpickles(fac: ArtifactFacade, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    obj = np.array([_Trap(str(marker)), 1], dtype=object)

    async def go() -> None:
        a = await fac.save(src_file(tmp_path, "obj.npy", _npy_bytes(obj)), kind="array")
        with pytest.raises(ValueError):
            await fac.load_artifact(a.uri)  # decoded by extension
        stranger = facade(fac.store, "run-1")
        with pytest.raises(ValueError):
            await stranger.load_artifact(a.uri)  # decoded by sniffing the npy magic
        buf = io.BytesIO()
        np.savez(buf, o=obj)
        a = await fac.save(src_file(tmp_path, "obj.npz", buf.getvalue()), kind="arrays")
        with pytest.raises(ValueError):
            await fac.load_artifact(a.uri)

    run(go())
    assert not marker.exists(), "a loader unpickled"


def test_load_artifact_decodes_from_another_facade(store: runstash.Store, tmp_path: Path) -> None:
    writer = facade(store, "run-1", graph_id="g", node_id="producer")
    reader = facade(store, "run-1", graph_id="g", node_id="consumer")

    async def go() -> None:
        j = await writer.save(src_file(tmp_path, "r.json", b'{"a": 1}'), kind="result")
        t = await writer.save(src_file(tmp_path, "n.bin", b"hi"), kind="text")
        d = await writer.stage_dir()
        Path(d, "f.txt").write_bytes(b"f")
        tree = await writer.ingest_dir(d, kind="report")
        assert await reader.load_artifact(j.uri) == {"a": 1}
        assert await reader.load_artifact(t.uri) == "hi"
        assert Path(await reader.load_artifact(tree.uri)).is_dir()

    run(go())


@pytest.mark.xfail(
    strict=True,
    reason="known limitation (documented in facade.py): a URI names the bytes, not the "
    "artifact, so artifacts with identical bytes share a URI and load_artifact decodes them "
    "the way the most recent write asked",
)
def test_load_artifact_identical_bytes_different_extensions(
    fac: ArtifactFacade, tmp_path: Path
) -> None:
    async def go() -> None:
        j = await fac.save(src_file(tmp_path, "r.json", b'{"a": 1}'), kind="result")
        await fac.save(src_file(tmp_path, "r.txt", b'{"a": 1}'), kind="note")
        assert await fac.load_artifact(j.uri) == {"a": 1}

    run(go())


def test_ingest_dir_bytes_is_the_manifest_size(fac: ArtifactFacade) -> None:
    # A documented difference: size/bytes is the manifest blob's (the artifact's own bytes);
    # the files' total is in the manifest.
    art, _ = run(example_4_directory(StubContext(fac)))
    manifest = json.loads(fac.store.read_bytes(art))
    assert art.bytes == len(fac.store.read_bytes(art))
    assert sum(e["size"] for e in manifest["files"]) == sum(len(d) for d in REPORT_FILES.values())


def test_ingest_dir_refuses_symlinks_out_of_the_tree(fac: ArtifactFacade, tmp_path: Path) -> None:
    secret = src_file(tmp_path, "outside/secret.txt", b"secret")

    async def go() -> None:
        for make_link in (
            lambda d: os.symlink(secret, Path(d, "leak.txt")),
            lambda d: os.symlink(secret.parent, Path(d, "leakdir")),
            lambda d: (Path(d, "sub").mkdir(), os.symlink("../../outside", Path(d, "sub", "up"))),
        ):
            d = await fac.stage_dir("_bad")
            Path(d, "ok.txt").write_bytes(b"ok")
            make_link(d)
            with pytest.raises(runstash.InvalidArgumentError, match="symlink"):
                await fac.ingest_dir(d, kind="report")
            assert fac.store.count() == 0, "nothing recorded"
            assert fac.last_artifact is None
        # a link that stays inside the tree is fine
        d = await fac.stage_dir()
        Path(d, "real.txt").write_bytes(b"real")
        os.symlink("real.txt", Path(d, "alias.txt"))
        art = await fac.ingest_dir(d, kind="report")
        files = json.loads(await fac.load_artifact_bytes(art.uri))["files"]
        assert [e["path"] for e in files] == ["alias.txt", "real.txt"]
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.ingest_dir(str(secret), kind="report")  # not a directory

    run(go())


def test_ingest_dir_of_an_outside_directory_keeps_it(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = tmp_path / "mine"
    write_report_files(str(src))

    async def go() -> None:
        art = await fac.ingest_dir(str(src), kind="report")
        assert src.is_dir(), "only staged directories are cleaned up"
        root = Path(await fac.load_artifact(art.uri))
        got = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert got == set(REPORT_FILES)
        empty = await fac.stage_dir()
        e = await fac.ingest_dir(empty, kind="report")
        assert json.loads(await fac.load_artifact_bytes(e.uri))["files"] == []
        assert Path(await fac.load_artifact(e.uri)).is_dir()
        with pytest.raises(TypeError):
            await fac.ingest_dir(str(src), kind="report", no_such_option=1)

    run(go())


def test_foreign_uris_are_refused(fac: ArtifactFacade, tmp_path: Path) -> None:
    other = facade(runstash.Store(tmp_path / "other", durability="os"), "run-1")
    outside = src_file(tmp_path, "plain.txt", b"not an artifact")

    async def go() -> None:
        foreign = await other.save(src_file(tmp_path, "f.json", b"{}"), kind="json")
        for uri in (foreign.uri, outside.as_uri(), "file:///etc/passwd", "s3://bucket/key"):
            for load in (fac.load_artifact, fac.load_artifact_bytes):
                with pytest.raises(runstash.RunstashError) as ei:
                    await load(uri)
                assert isinstance(ei.value, runstash.InvalidArgumentError | runstash.NotFoundError)
        with pytest.raises(runstash.InvalidArgumentError, match="does not belong"):
            await fac.load_artifact(foreign.uri)

    run(go())


def test_suggested_uri(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = src_file(tmp_path, "s.png", b"png")

    async def go() -> None:
        for bad in ("../x.png", "a/../../x.png", "/abs/x.png", "file:///abs/x.png", "..", "a/.."):
            with pytest.raises(runstash.InvalidArgumentError):
                await fac.save(src, kind="image", suggested_uri=bad)
            staged = await fac.stage(".png")
            with pytest.raises(runstash.InvalidArgumentError):
                await fac.ingest(staged, kind="image", suggested_uri=bad)
            assert Path(staged).exists(), "a refused ingest leaves the staged file"
            os.unlink(staged)
            d = await fac.stage_dir()
            with pytest.raises(runstash.InvalidArgumentError):
                await fac.ingest_dir(d, kind="report", suggested_uri=bad)
            os.rmdir(d)
        assert fac.store.count() == 0
        a = await fac.save(src, kind="image", suggested_uri="plots/epoch1.png")
        assert a.labels["filename"] == "epoch1.png"
        assert src.exists()

    run(go())


def test_staging_paths_and_aliases(fac: ArtifactFacade) -> None:
    staging = Path(fac.store.staging_dir)

    async def go() -> None:
        paths = [
            await fac.stage(".png"),
            await fac.stage(),
            await fac.tmp_path(".csv"),
            await fac.stage_path(".npy"),
        ]
        for p in paths:
            assert Path(p).parent == staging and Path(p).is_file()
            assert Path(p).stat().st_size == 0
        assert paths[0].endswith(".png") and paths[2].endswith(".csv")
        assert len(set(paths)) == len(paths)
        d = await fac.stage_dir("_report")
        assert Path(d).parent == staging and Path(d).is_dir() and d.endswith("_report")
        assert list(Path(d).iterdir()) == []

    run(go())


def test_bad_arguments(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = src_file(tmp_path, "b.bin", b"b")

    async def go() -> None:
        with pytest.raises(FileNotFoundError):
            await fac.save(tmp_path / "missing.bin", kind="x")
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.save(src, kind="")
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.save(src, kind="x", metrics={"m": float("nan")})
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.pin(123)  # type: ignore[arg-type]
        assert fac.store.count() == 0

    run(go())
    with pytest.raises(runstash.InvalidArgumentError):
        ArtifactFacade(fac.store, run_id="")


def test_list_order_and_limit(fac: ArtifactFacade, tmp_path: Path) -> None:
    src = src_file(tmp_path, "o.bin", b"o")

    async def go() -> None:
        made = [await fac.save(src, kind="x", metrics={"i": float(i)}) for i in range(5)]
        newest_first = list(reversed(ids(made)))
        assert ids(await fac.list()) == newest_first
        assert ids(await fac.list(limit=2)) == newest_first[:2]
        assert ids(await fac.search(kind="x", limit=3)) == newest_first[:3]
        top = await fac.search(kind="x", metric="i", mode="max", limit=2)
        assert ids(top) == newest_first[:2]

    run(go())


@pytest.mark.local_only  # on S3 a query may refresh (requests): it hops to a worker thread
def test_index_calls_make_no_thread_hop(
    fac: ArtifactFacade, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = src_file(tmp_path, "h.bin", b"h")
    counter = HopCounter(monkeypatch)

    async def go() -> None:
        ex = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(ex)
        a = await fac.save(src, kind="model", metrics={"acc": 1.0})
        assert counter.hops >= 1, "file work runs on runstash's worker threads"
        assert ex.submitted == 0, "and needs no Python thread pool"
        counter.hops = 0
        await fac.list()
        await fac.list(scope="all")
        await fac.search(kind="model", labels={"x": 1}, scope="graph")
        await fac.search(metric="acc", mode="max")
        await fac.best(kind="model", metric="acc", mode="max")
        await fac.pin(a.id)
        await fac.pin(a.id, False)
        assert counter.hops == 0 and ex.submitted == 0

    run(go())


# --------------------------------------------------------------------------------------------
# 3. the event loop never stalls
# --------------------------------------------------------------------------------------------

GIB = 1 << 30
CHUNK = 64 << 20


def _steal_ms() -> float:
    """CPU time the hypervisor took from this machine's vCPUs (Linux /proc/stat), in ms."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _run_delay_ms() -> float:
    """How long this thread has waited on a CPU run queue (Linux schedstat), in ms."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return float("nan")


@pytest.mark.slow
def test_1gib_save_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    store = runstash.Store(tmp_path / "store")  # the default durability: fsync
    fac = ArtifactFacade(store, run_id="big")
    big = tmp_path / "big.bin"
    chunk = os.urandom(CHUNK)
    with open(big, "wb") as f:
        for _ in range(GIB // CHUNK):
            f.write(chunk)
        # Flush the setup's own gigabyte before measuring: its background writeback would
        # otherwise compete with the save for the (virtual) disk inside the measured window.
        os.fsync(f.fileno())
    del chunk

    # per tick: (seconds since start, gap, of which waiting for a CPU, vCPU steal in the gap)
    ticks: list[tuple[float, float, float, float]] = []
    done = asyncio.Event()

    async def ticker(t0: float) -> None:
        last, last_delay, last_steal = time.perf_counter(), _run_delay_ms(), _steal_ms()
        while not done.is_set():
            await asyncio.sleep(0.005)  # the tick being measured, not a wait for state
            now, delay, steal = time.perf_counter(), _run_delay_ms(), _steal_ms()
            ticks.append((now - t0, now - last, (delay - last_delay) / 1000, steal - last_steal))
            last, last_delay, last_steal = now, delay, steal

    async def go() -> tuple[runstash.Artifact, float]:
        t0 = time.perf_counter()
        t = asyncio.create_task(ticker(t0))
        await asyncio.sleep(0)  # let the ticker take its first timestamp
        try:
            art = await fac.save(big, kind="model", metrics={"acc": 0.5})
            best = await fac.best(kind="model", metric="acc", mode="max")
            assert best is not None and best.id == art.id
        finally:
            elapsed = time.perf_counter() - t0
            done.set()
            await t
        return art, elapsed

    art, elapsed = run(go())
    assert art.size == GIB
    assert art.hash == runstash.hash_file(big)
    assert big.stat().st_size == GIB, "the source stays"
    assert len(ticks) >= 5, f"the save took {elapsed:.3f}s: too short to measure anything"
    # A stall is time the loop could have run but did not: a gap spent waiting for a CPU
    # (the machine busy with other work, not this save holding the GIL or blocking the loop)
    # is left out. Waiting on the GIL is sleeping, never counted as waiting for a CPU.
    stalls = [t for t in ticks if t[1] - (0.0 if math.isnan(t[2]) else t[2]) >= 0.020]
    worst = max(ticks, key=lambda t: t[1])
    assert not stalls, (
        f"event loop stalled {worst[1] * 1000:.1f} ms during a {elapsed:.2f} s save "
        f"({len(ticks)} ticks); stalls as (at s, gap ms, of which this thread waited for a CPU "
        "ms, vCPU time stolen by the hypervisor meanwhile ms): "
        + ", ".join(f"({a:.2f}, {g * 1e3:.1f}, {w * 1e3:.1f}, {st:.0f})" for a, g, w, st in stalls)
    )


def test_ingest_dir_manifest_is_the_json_runstash_wrote_before(
    fac: ArtifactFacade, tmp_path: Path
) -> None:
    # The manifest moved into the core; a directory stored before and after has one hash.
    src = tmp_path / "tree"
    names = ["z.txt", "sub/a b.txt", "caf\u00e9/\u00fcber \U0001f600.txt", 'q"uo\\te.txt']
    for i, name in enumerate(names):
        src_file(src, name, b"file %d" % i)

    async def go() -> None:
        art = await fac.ingest_dir(str(src), kind="report")
        raw = await fac.load_artifact_bytes(art.uri)
        files = sorted(
            (
                {
                    "path": n,
                    "size": len(b"file %d" % i),
                    "hash": runstash.hash_bytes(b"file %d" % i, fac.store.hash_algo),
                }
                for i, n in enumerate(names)
            ),
            key=lambda e: e["path"],
        )
        want = json.dumps(
            {"format": "runstash.tree/1", "files": files}, sort_keys=True, separators=(",", ":")
        ).encode()
        assert raw == want
        root = Path(await fac.load_artifact(art.uri))
        assert (root / names[2]).read_bytes() == b"file 2"

    run(go())
