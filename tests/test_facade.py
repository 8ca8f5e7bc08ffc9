"""runstash.ArtifactFacade: the AetherGraph-compatible async ``context.artifacts()``.

Conformance: the seed document's five practical examples and its writer example run verbatim
against a stub ``context``. Then every method's edge cases (empty results, best() with no
match, min/max, missing metrics, pin/unpin, scope boundaries between runs and nodes, both
keyword spellings, search merging, writer failures, last_artifact, dedup with own records,
typed label filters, load_artifact decoding without unpickling, directory artifacts, symlinks,
foreign URIs, suggested_uri), and an event-loop stall test around a 1 GiB save.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

import runstash
from runstash import ArtifactFacade
from runstash.facade import TREE_MIME
from tests.conftest import blob_scheme, staging_entries
from tests.facade_helpers import SEED_DOC, StubContext, run, seed_code_blocks

# --------------------------------------------------------------------------------------------
# The seed document's examples, verbatim. Only the "# ... <do something> ..." placeholders are
# filled in, right after the placeholder comment. test_examples_are_verbatim checks the lines.
# --------------------------------------------------------------------------------------------

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


# fmt: off
async def make_png(*, context):
    import PIL.Image as Image
    img = Image.new("RGB", (128, 128), (255, 122, 26))
    async with context.artifacts().writer(kind="image", planned_ext=".png") as w:
        # writer exposes a real file handle underneath
        img.save(w, format="PNG")
    art = context.artifacts().last_artifact
    await context.channel().send_image(url=art.uri, title="Generated PNG")
    return {"uri": art.uri}


async def example_1_direct_save(context):
    uri = "/tmp/plot.png"
    # ... generate image to uri ...
    Image.new("RGB", (64, 48), (12, 34, 56)).save(uri, format="PNG")
    art = await context.artifacts().save(uri, kind="image", labels={"task":"eval"}, metrics={"psnr": 31.2})  # noqa: E501
    return art


async def example_2_stage_write_ingest(context):
    staged = await context.artifacts().stage(".csv")
    with open(staged, "w", encoding="utf-8") as f:
        f.write("x,y\n1,2\n3,4\n")
    art = await context.artifacts().ingest(staged_path=staged, kind="table", labels={"split":"val"})  # noqa: E501
    return art, staged


async def example_3_search_best(context):
    winner = await context.artifacts().best(kind="model", metric="val_acc", mode="max", scope="run")  # noqa: E501
    if winner:
        await context.channel().send_text(f"Best model: {winner.uri} acc={winner.metrics['val_acc']:.3f}")  # noqa: E501
    return winner


async def example_4_directory(context):
    dir_path = await context.artifacts().stage_dir("_report")
    # ... write several files to dir_path ...
    write_report_files(dir_path)
    art = await context.artifacts().ingest_dir(dir_path, kind="report", labels={"format":"html"})  # noqa: E501
    return art, dir_path


async def example_5_pin(context, art):
    await context.artifacts().pin(artifact_id=art.id, pinned=True)


async def scoped_search_example(context):
    best_imgs = await context.artifacts().search(kind="image", scope="graph")
    return best_imgs
# fmt: on

REPORT_FILES = {
    "index.html": b"<html><body>report</body></html>",
    "assets/style.css": b"body { color: #333; }",
    "assets/img/logo.bin": bytes(range(256)) * 3,
    "data.json": b'{"rows": 3}',
}


def write_report_files(dir_path: str) -> None:
    for rel, data in REPORT_FILES.items():
        p = Path(dir_path, rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


def facade(store: runstash.Store, run_id: str = "run-1", **kw: str) -> ArtifactFacade:
    return ArtifactFacade(store, run_id=run_id, **kw)


def src_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def ids(arts: list[runstash.Artifact]) -> list[str]:
    return [a.id for a in arts]


def is_read_only_tree(root: Path) -> bool:
    """No write bit anywhere (checked by mode bits: the tests may run as root)."""
    paths = [root, *root.rglob("*")]
    wbits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return all(os.stat(p).st_mode & wbits == 0 for p in paths)


# --------------------------------------------------------------------------------------------
# 1. conformance: the seed's examples
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SEED_DOC.exists(), reason="seed document not available")
def test_examples_are_verbatim() -> None:
    """Every line of the seed's code blocks appears, in order, in the example functions."""
    funcs = [
        make_png,
        scoped_search_example,
        example_1_direct_save,
        example_2_stage_write_ingest,
        example_3_search_best,
        example_4_directory,
        example_5_pin,
    ]
    blocks = seed_code_blocks()
    assert len(blocks) == len(funcs)
    for block, fn in zip(blocks, funcs, strict=True):
        src = [ln.split("  # noqa: E501")[0].strip() for ln in inspect.getsource(fn).splitlines()]
        pos = 0
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith(("from aethergraph", "@graph_fn")):
                continue
            assert line in src[pos:], f"{fn.__name__}: {line!r} not copied verbatim"
            pos = src.index(line, pos) + 1


def test_writer_example_png(fac: ArtifactFacade) -> None:
    ctx = StubContext(fac)
    out = run(make_png(context=ctx))
    art = fac.last_artifact
    assert art is not None and out == {"uri": art.uri}
    assert ctx.channel().sent == [("image", {"url": art.uri, "title": "Generated PNG"})]
    assert art.kind == "image" and art.mime == "image/png"
    assert (art.run_id, art.graph_id, art.node_id) == ("run-1", "g1", "n1")
    data = run(fac.load_artifact_bytes(art.uri))
    assert art.size == art.bytes == len(data) > 0
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size == (128, 128)
    assert img.getpixel((5, 5)) == (255, 122, 26)
    assert fac.store.get(art.id) is not None
    assert staging_entries(fac.store) == []


def test_example_1_direct_save(fac: ArtifactFacade) -> None:
    ctx = StubContext(fac)
    try:
        art = run(example_1_direct_save(ctx))
        data = Path("/tmp/plot.png").read_bytes()
        assert Path("/tmp/plot.png").exists(), "save() leaves the caller's file in place"
    finally:
        Path("/tmp/plot.png").unlink(missing_ok=True)
    assert art.kind == "image" and art.mime == "image/png"
    assert art.labels == {"task": "eval", "filename": "plot.png"}
    assert art.metrics == {"psnr": 31.2}
    assert (art.run_id, art.graph_id, art.node_id, art.project_id) == (
        "run-1",
        "g1",
        "n1",
        "proj",
    )
    assert art.hash == runstash.hash_bytes(data) and art.size == len(data)
    assert fac.store.read_bytes(art) == data
    assert fac.last_artifact is art
    assert ids(run(fac.list())) == [art.id]


def test_example_2_stage_write_ingest_moves_without_copy(fac: ArtifactFacade) -> None:
    ctx = StubContext(fac)
    inode: dict[str, int] = {}
    real_ingest = fac.ingest

    async def spy_ingest(staged_path: str, **kw: object) -> runstash.Artifact:
        inode["staged"] = os.stat(staged_path).st_ino
        return await real_ingest(staged_path, **kw)  # type: ignore[arg-type]

    fac.ingest = spy_ingest  # type: ignore[method-assign]
    art, staged = run(example_2_stage_write_ingest(ctx))
    assert Path(staged).parent == Path(fac.store.staging_dir)
    assert staged.endswith(".csv")
    assert not os.path.exists(staged), "ingest moves the staged file"
    assert os.stat(fac.store.path_of(art)).st_ino == inode["staged"], "a rename, not a copy"
    assert art.kind == "table"
    assert art.labels["split"] == "val"
    assert art.metrics == {}
    assert fac.store.read_bytes(art) == b"x,y\n1,2\n3,4\n"
    assert run(fac.load_artifact(art.uri)) == "x,y\n1,2\n3,4\n"
    assert fac.last_artifact is art


def test_example_3_search_best(fac: ArtifactFacade, tmp_path: Path) -> None:
    ctx = StubContext(fac)
    assert run(example_3_search_best(ctx)) is None, "no model yet"
    assert ctx.channel().sent == []

    other_run = facade(fac.store, "run-2", graph_id="g1", node_id="n1")
    m = src_file(tmp_path, "m.pt", b"weights")

    async def populate() -> dict[float, runstash.Artifact]:
        out = {}
        for acc in (0.71, 0.93, 0.88):
            out[acc] = await fac.save(m, kind="model", metrics={"val_acc": acc})
        await fac.save(m, kind="model", metrics={"loss": 0.1})  # no val_acc: left out
        await fac.save(m, kind="image", metrics={"val_acc": 0.97})  # another kind
        await other_run.save(m, kind="model", metrics={"val_acc": 0.99})  # another run
        return out

    models = run(populate())
    winner = run(example_3_search_best(ctx))
    assert winner is not None and winner.id == models[0.93].id
    assert ctx.channel().sent == [("text", {"text": f"Best model: {winner.uri} acc=0.930"})]


def test_example_4_directory_and_manifest(fac: ArtifactFacade) -> None:
    ctx = StubContext(fac)
    art, dir_path = run(example_4_directory(ctx))
    assert art.kind == "report" and art.labels["format"] == "html"
    assert art.mime == TREE_MIME
    assert fac.last_artifact is art
    assert not os.path.exists(dir_path), "the staged directory is cleaned up"

    manifest_bytes = run(fac.load_artifact_bytes(art.uri))
    assert art.size == len(manifest_bytes)
    assert runstash.hash_bytes(manifest_bytes) == art.hash, "the manifest's hash is the artifact's"
    files = json.loads(manifest_bytes)["files"]
    assert [e["path"] for e in files] == sorted(REPORT_FILES)
    for e in files:
        data = REPORT_FILES[e["path"]]
        assert e["size"] == len(data)
        assert e["hash"] == runstash.hash_bytes(data)
        assert fac.store.read_bytes(e["hash"]) == data, "every file's bytes are kept"

    root = Path(run(fac.load_artifact(art.uri)))
    assert root.is_dir()
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert got == REPORT_FILES
    assert is_read_only_tree(root)
    assert run(fac.load_artifact(art.uri)) == str(root), "materialized once"


def test_example_5_pin(fac: ArtifactFacade) -> None:
    ctx = StubContext(fac)
    art, _ = run(example_4_directory(ctx))
    assert fac.store.get(art.id).pinned is False
    assert run(example_5_pin(ctx, art)) is None
    assert fac.store.get(art.id).pinned is True


def test_scoped_search_example(store: runstash.Store, tmp_path: Path) -> None:
    here = facade(store, graph_id="g1", node_id="n1")
    sibling = facade(store, graph_id="g1", node_id="n2")
    other_graph = facade(store, graph_id="g2", node_id="n1")
    f = src_file(tmp_path, "i.png", b"png")

    async def go() -> list[runstash.Artifact]:
        a = await here.save(f, kind="image")
        b = await sibling.save(f, kind="image")
        await other_graph.save(f, kind="image")
        await here.save(f, kind="table")
        return [a, b]

    expected = run(go())
    got = run(scoped_search_example(StubContext(here)))
    assert sorted(ids(got)) == sorted(ids(expected))


# --------------------------------------------------------------------------------------------
# 2. edge cases, method by method
# --------------------------------------------------------------------------------------------


def test_artifact_carries_aethergraph_fields(fac: ArtifactFacade, tmp_path: Path) -> None:
    art = run(fac.save(src_file(tmp_path, "r.json", b"{}"), kind="json", labels={"a": "b"}))
    for name in (
        "artifact_id",
        "run_id",
        "graph_id",
        "node_id",
        "tool_name",
        "tool_version",
        "kind",
        "sha256",
        "bytes",
        "mime",
        "mimetype",
        "created_at",
        "tags",
        "labels",
        "metrics",
        "pinned",
        "uri",
        "preview_uri",
        "org_id",
        "user_id",
        "client_id",
        "app_id",
        "session_id",
        "occurrence_id",
        "id",
    ):
        assert hasattr(art, name), name
    assert art.artifact_id == art.id
    # An attribute named after an algorithm holds that algorithm's digest or None.
    assert art.sha256 is None and art.hash.startswith("blake3:")  # a default (BLAKE3) store
    assert art.bytes == art.size == 2
    assert art.mimetype == art.mime == "application/json"
    assert art.uri.startswith(blob_scheme(fac.store))
    assert art.pinned is False
    assert isinstance(art.metrics, dict) and art.metrics == {}


def test_sha256_is_the_sha256_of_the_bytes_on_the_facades_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"aethergraph content id"
    want = hashlib.sha256(data).hexdigest()
    src = src_file(tmp_path, "c.txt", data)
    monkeypatch.chdir(tmp_path)
    for store in (None, tmp_path / "by-path"):  # the default ./.runstash, and a path
        fac = ArtifactFacade(store, run_id="r")
        assert fac.store.hash_algo == "sha256"
        art = run(fac.save(src, kind="text"))
        assert art.sha256 == want and art.hash == f"sha256:{want}"
        assert run(fac.list())[0].sha256 == want
        fac.store.close()
        # Reopened by a facade it keeps its hash; an existing BLAKE3 store keeps BLAKE3.
        assert ArtifactFacade(store, run_id="r").store.hash_algo == "sha256"
    runstash.Store(tmp_path / "b3").close()
    b3 = ArtifactFacade(tmp_path / "b3", run_id="r")
    assert b3.store.hash_algo == "blake3"
    assert run(b3.save(src, kind="text")).sha256 is None
    # The documented way of building a store for AetherGraph users.
    shared = runstash.Store(tmp_path / "shared", hash="sha256")
    art = run(ArtifactFacade(shared, run_id="r").save(src, kind="text"))
    assert art.sha256 == want


def test_labels_naming_a_scope_id_cannot_move_a_write_out_of_the_facades_scope(
    fac: ArtifactFacade, tmp_path: Path
) -> None:
    src = src_file(tmp_path, "s.txt", b"s")

    async def go() -> None:
        for key, value in (("run_id", "evil"), ("graph_id", "g9"), ("project_id", "p9")):
            with pytest.raises(runstash.InvalidArgumentError, match=key):
                await fac.save(src, kind="text", labels={key: value})
            with pytest.raises(runstash.InvalidArgumentError, match=key):
                async with fac.writer(kind="x", labels={key: value}) as w:
                    w.write(b"never")
        assert await fac.list(scope="all") == [], "nothing was recorded"
        a = await fac.save(
            src, kind="text", labels={"run_id": "run-1", "task": "t"}
        )  # the same value: fine
        assert a.run_id == "run-1" and a.labels["task"] == "t"

    run(go())


def test_empty_results(fac: ArtifactFacade, tmp_path: Path) -> None:
    async def go() -> None:
        for scope in ("node", "graph", "run", "project", "all"):
            assert await fac.list(scope=scope) == []
            assert await fac.search(scope=scope) == []
            assert await fac.search(metric="m", mode="max", scope=scope) == []
            assert await fac.best(kind="model", metric="m", mode="max", scope=scope) is None
        # a fresh run on a store that has artifacts sees nothing of them
        await fac.save(src_file(tmp_path, "x.bin", b"x"), kind="model", metrics={"m": 1.0})
        fresh = facade(fac.store, "run-fresh", graph_id="g1", node_id="n1")
        assert await fresh.list() == []
        assert await fresh.search() == []
        assert await fresh.search(kind="model") == []
        assert await fresh.best(kind="model", metric="m", mode="max") is None
        assert ids(await fresh.list(scope="all")) == ids(await fac.list())

    run(go())


def test_best_max_min_missing_metric_and_no_match(fac: ArtifactFacade, tmp_path: Path) -> None:
    f = src_file(tmp_path, "m.bin", b"m")

    async def go() -> None:
        lo = await fac.save(f, kind="model", metrics={"loss": 0.2, "acc": 0.5})
        hi = await fac.save(f, kind="model", metrics={"loss": 0.9, "acc": 0.8})
        await fac.save(f, kind="model", metrics={"other": 100.0})  # lacks both
        await fac.save(f, kind="model")  # no metrics at all
        assert (await fac.best(kind="model", metric="loss", mode="max")).id == hi.id
        assert (await fac.best(kind="model", metric="loss", mode="min")).id == lo.id
        assert (await fac.best(kind="model", metric="acc", mode="min")).id == lo.id
        assert await fac.best(kind="model", metric="nope", mode="max") is None
        assert await fac.best(kind="image", metric="loss", mode="max") is None
        ranked = await fac.search(kind="model", metric="loss", mode="min")
        assert ids(ranked) == [lo.id, hi.id], "artifacts without the metric are left out"
        assert ids(await fac.search(kind="model", metric="loss", mode="max")) == [hi.id, lo.id]
        assert len(await fac.search(kind="model")) == 4, "no metric: no ranking, no filtering"
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.best(kind="model", metric="loss", mode="MAX")
        with pytest.raises(runstash.InvalidArgumentError):
            await fac.best(kind="model", metric="loss")

    run(go())


def test_best_filters(fac: ArtifactFacade, tmp_path: Path) -> None:
    f = src_file(tmp_path, "m.bin", b"m")

    async def go() -> None:
        a = await fac.save(f, kind="model", labels={"arch": "cnn"}, metrics={"acc": 0.6})
        b = await fac.save(f, kind="model", labels={"arch": "mlp"}, metrics={"acc": 0.9})
        assert (await fac.best(kind="model", metric="acc", mode="max")).id == b.id
        got = await fac.best(kind="model", metric="acc", mode="max", filters={"arch": "cnn"})
        assert got.id == a.id
        got = await fac.best(kind="model", metric="acc", mode="max", filters={"arch": "rnn"})
        assert got is None

    run(go())


def test_pin_unpin(fac: ArtifactFacade, tmp_path: Path) -> None:
    f = src_file(tmp_path, "p.bin", b"p")

    async def go() -> None:
        a = await fac.save(f, kind="model")
        assert fac.store.get(a.id).pinned is False
        assert await fac.pin(a.id) is None
        assert fac.store.get(a.id).pinned is True
        await fac.pin(artifact_id=a.id, pinned=False)
        assert fac.store.get(a.id).pinned is False
        await fac.pin(a.id, True)
        await fac.pin(a.id, True)  # idempotent
        assert fac.store.get(a.id).pinned is True
        assert [x.id for x in await fac.search() if x.pinned] == [a.id]
        with pytest.raises(runstash.NotFoundError):
            await fac.pin("no-such-artifact")
        with pytest.raises(runstash.NotFoundError):
            await fac.pin("no-such-artifact", pinned=False)
        b = await fac.save(f, kind="model", pin=True)
        assert b.pinned is True and fac.store.get(b.id).pinned is True
        async with fac.writer(kind="blob", pin=True) as w:
            w.write(b"pinned")
        assert fac.last_artifact.pinned is True
        assert fac.store.get(fac.last_artifact.id).pinned is True

    run(go())


@pytest.fixture
def graph_of_facades(store: runstash.Store, tmp_path: Path) -> dict[str, object]:
    """Facades on one store: a and b are two nodes of one graph in run-1, c another graph of
    run-1, d the same graph/node names in run-2; a and d share a project."""
    facs = {
        "a": facade(store, "run-1", graph_id="g1", node_id="n1", project_id="p"),
        "b": facade(store, "run-1", graph_id="g1", node_id="n2"),
        "c": facade(store, "run-1", graph_id="g2", node_id="n1"),
        "d": facade(store, "run-2", graph_id="g1", node_id="n1", project_id="p"),
    }
    f = src_file(tmp_path, "s.bin", b"s")
    metric = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}

    async def go() -> dict[str, runstash.Artifact]:
        return {
            k: await fac.save(f, kind="model", labels={"who": k}, metrics={"acc": metric[k]})
            for k, fac in facs.items()
        }

    arts = run(go())
    return {"facs": facs, "arts": arts}


def test_scope_boundaries(graph_of_facades: dict[str, object]) -> None:
    facs: dict[str, ArtifactFacade] = graph_of_facades["facs"]  # type: ignore[assignment]
    arts: dict[str, runstash.Artifact] = graph_of_facades["arts"]  # type: ignore[assignment]
    expected = {
        "a": {"node": "a", "graph": "ab", "run": "abc", "project": "ad", "all": "abcd"},
        "b": {"node": "b", "graph": "ab", "run": "abc", "all": "abcd"},
        "c": {"node": "c", "graph": "c", "run": "abc", "all": "abcd"},
        "d": {"node": "d", "graph": "d", "run": "d", "project": "ad", "all": "abcd"},
    }

    def who(found: list[runstash.Artifact]) -> str:
        return "".join(sorted(x.labels["who"] for x in found))

    async def go() -> None:
        for k, scopes in expected.items():
            fac = facs[k]
            for scope, want in scopes.items():
                assert who(await fac.list(scope=scope)) == want, (k, scope, "list")
                assert who(await fac.search(scope=scope)) == want, (k, scope, "search")
                assert who(await fac.search(kind="model", scope=scope)) == want
                best = await fac.best(kind="model", metric="acc", mode="max", scope=scope)
                assert best.labels["who"] == max(want), (k, scope, "best")
                worst = await fac.best(kind="model", metric="acc", mode="min", scope=scope)
                assert worst.labels["who"] == min(want), (k, scope, "best min")
            assert who(await fac.list()) == scopes["run"], "default scope is run"
            assert who(await fac.search()) == scopes["run"]
        assert (await facs["a"].best(kind="model", metric="acc", mode="max")).id == arts["c"].id
        with pytest.raises(runstash.InvalidArgumentError):
            await facs["a"].list(scope="session")

    run(go())


def test_keyword_spellings(graph_of_facades: dict[str, object]) -> None:
    fac: ArtifactFacade = graph_of_facades["facs"]["a"]  # type: ignore[index]

    async def go() -> None:
        for scope in ("node", "graph", "run", "project", "all"):
            want = ids(await fac.list(scope=scope))
            assert ids(await fac.list(level=scope)) == want
            assert ids(await fac.list(view=scope)) == want
            assert ids(await fac.list(scope=scope, level=scope)) == want, "same value: fine"
            assert ids(await fac.search(level=scope)) == ids(await fac.search(scope=scope))
            for mode in ("max", "min"):
                by_mode = await fac.best(kind="model", metric="acc", mode=mode, scope=scope)
                by_new = await fac.best(kind="model", metric="acc", metric_mode=mode, level=scope)
                assert by_mode.id == by_new.id
                s_old = await fac.search(metric="acc", mode=mode, scope=scope)
                s_new = await fac.search(metric="acc", metric_mode=mode, level=scope)
                assert ids(s_old) == ids(s_new) and len(s_old) >= 1

        conflicts = [
            fac.list(scope="run", level="node"),
            fac.list(scope="run", view="all"),
            fac.search(scope="graph", level="run"),
            fac.search(metric="acc", mode="max", metric_mode="min"),
            fac.best(kind="model", metric="acc", mode="max", metric_mode="min"),
            fac.best(kind="model", metric="acc", mode="max", scope="run", level="all"),
        ]
        for coro in conflicts:
            with pytest.raises(runstash.InvalidArgumentError):
                await coro

    run(go())


def test_search_merges_labels_scope_and_extra_scope_labels(
    graph_of_facades: dict[str, object],
) -> None:
    facs: dict[str, ArtifactFacade] = graph_of_facades["facs"]  # type: ignore[assignment]
    arts: dict[str, runstash.Artifact] = graph_of_facades["arts"]  # type: ignore[assignment]
    a = facs["a"]

    async def go() -> None:
        assert ids(await a.search(labels={"who": "b"})) == [arts["b"].id]
        assert await a.search(labels={"who": "d"}) == [], "d is in another run"
        assert await a.search(labels={"who": "b"}, scope="node") == []
        # the scope wins over a scope key in labels (as AetherGraph)
        assert ids(await a.search(labels={"run_id": "run-2"}, scope="run")) == ids(
            await a.search(scope="run")
        )
        # extra_scope_labels is merged last and reaches another run
        got = await a.search(extra_scope_labels={"run_id": "run-2"})
        assert ids(got) == [arts["d"].id]
        got = await a.search(labels={"who": "d"}, extra_scope_labels={"run_id": "run-2"})
        assert ids(got) == [arts["d"].id]
        got = await a.search(extra_scope_labels={"node_id": "n2"}, scope="graph")
        assert ids(got) == [arts["b"].id]
        got = await a.search(
            kind="model",
            labels={"who": "b"},
            metric="acc",
            mode="max",
            scope="graph",
            extra_scope_labels={"node_id": "n2"},
        )
        assert ids(got) == [arts["b"].id]
        assert await a.search(kind="table") == []

    run(go())


def test_label_filters_exact_and_typed(fac: ArtifactFacade, tmp_path: Path) -> None:
    f = src_file(tmp_path, "l.bin", b"l")
    values: list[object] = [1, "1", True, 1.5, "T1", "t1", "t_", "a%b"]

    async def go() -> None:
        by_value = {}
        for i, v in enumerate(values):
            by_value[i] = await fac.save(f, kind="x", labels={"v": v})  # type: ignore[dict-item]
        for i, v in enumerate(values):
            got = await fac.search(labels={"v": v})  # type: ignore[dict-item]
            assert ids(got) == [by_value[i].id], f"label {v!r} must match only itself"
            assert type(got[0].labels["v"]) is type(v)
        assert await fac.search(labels={"v": "t%"}) == [], "no wildcards"
        assert await fac.search(labels={"v": 2}) == []
        assert await fac.search(labels={"v": "1", "missing": "x"}) == []
        got = await fac.best(kind="x", metric="m", mode="max", filters={"v": "T1"})
        assert got is None

    run(go())
