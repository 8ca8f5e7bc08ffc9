"""The index against a plain-Python model.

A hypothesis state machine drives random sequences of put / pin / delete / reopen / compact
into a real store (a fresh directory per example) and into a dict of records, and compares
every query's answer: get, list, count, search (with and without a metric, both modes,
limits), best and top_k, with random filters on kind, typed labels, scope ids and pinned.
Metric values come from a tiny set so ties are common; ties must go to the older artifact
(the smaller id), and artifacts that lack the ranking metric must be left out of a ranking.

Smaller tests at the end pin down the write API (every write path returns an Artifact with
the keywords it was given) and the errors for bad input.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

import runstash
from tests.conftest import blob_scheme
from tests.index_helpers import typed, typed_dict

KINDS = ["model", "image", "table"]
LABEL_KEYS = ["task", "seed", "flag"]
# 1, 1.0, True and "1" are four different label values (typed equality).
LABEL_VALUES = ["a", "b", "1", 1, 0, 2, 1.0, 0.5, True, False]
METRIC_NAMES = ["loss", "acc"]
# A tiny set of values (and an int that must come back as a float) so that ties happen.
METRIC_VALUES = [0.0, 1.0, 1.0, 2.0, 1]
SCOPE_POOLS = {
    "run_id": [None, "r1", "r2"],
    "graph_id": [None, "g1", "g2"],
    "node_id": [None, "n1"],
    "project_id": [None, "p1", "p2"],
}
ARTIFACT_FIELDS = {
    "id",
    "kind",
    "uri",
    "hash",
    "size",
    "mime",
    "created_at",
    "run_id",
    "graph_id",
    "node_id",
    "project_id",
    "labels",
    "metrics",
    "pinned",
}
ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")
UNKNOWN_ID = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"

labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3)
metrics_st = st.dictionaries(
    st.sampled_from(METRIC_NAMES), st.sampled_from(METRIC_VALUES), max_size=2
)
scope_st = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in SCOPE_POOLS.items()})

# Query filters: each key is either absent, None ("no filter"), or a value; values include
# ones that no artifact has.
filter_st = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from([None, *KINDS, "nope"]),
        "labels": st.none()
        | st.dictionaries(
            st.sampled_from([*LABEL_KEYS, "absent"]), st.sampled_from(LABEL_VALUES), max_size=2
        ),
        "run_id": st.sampled_from([*SCOPE_POOLS["run_id"], "r-other"]),
        "graph_id": st.sampled_from(SCOPE_POOLS["graph_id"]),
        "node_id": st.sampled_from([*SCOPE_POOLS["node_id"], "n-other"]),
        "project_id": st.sampled_from(SCOPE_POOLS["project_id"]),
        "pinned": st.sampled_from([None, True, False]),
    },
)

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


def matches(rec: dict, f: dict) -> bool:
    if f.get("kind") is not None and rec["kind"] != f["kind"]:
        return False
    for k, v in (f.get("labels") or {}).items():
        if k not in rec["labels"] or typed(rec["labels"][k]) != typed(v):
            return False
    for scope in SCOPE_POOLS:
        if f.get(scope) is not None and rec[scope] != f[scope]:
            return False
    return f.get("pinned") is None or rec["pinned"] == f["pinned"]


def rank(recs: list[dict], metric: str, mode: str) -> list[str]:
    """Ids ranked best first; ties to the older artifact (the smaller id); records without
    the metric are left out."""
    have = [r for r in recs if metric in r["metrics"]]
    sign = -1.0 if mode == "max" else 1.0
    return [r["id"] for r in sorted(have, key=lambda r: (sign * r["metrics"][metric], r["id"]))]


def ids(arts: list) -> list[str]:
    return [a.id for a in arts]


def check_artifact(art: object, rec: dict, scheme: str = "file://") -> None:
    assert isinstance(art, runstash.Artifact), type(art)
    assert art.id == rec["id"]
    assert art.kind == rec["kind"], (art.kind, rec["kind"])
    assert art.hash == rec["hash"]
    assert art.size == rec["size"]
    assert art.uri.startswith(scheme), art.uri
    assert isinstance(art.created_at, str) and art.created_at.endswith("Z"), art.created_at
    for scope in SCOPE_POOLS:
        assert getattr(art, scope) == rec[scope], (scope, getattr(art, scope), rec[scope])
    assert typed_dict(art.labels) == typed_dict(rec["labels"]), (art.labels, rec["labels"])
    assert art.metrics == rec["metrics"], (art.metrics, rec["metrics"])
    assert all(type(v) is float for v in art.metrics.values()), art.metrics
    assert art.pinned is rec["pinned"], (art.pinned, rec["pinned"])
    d = art.to_dict()
    assert set(d) == ARTIFACT_FIELDS, sorted(d)
    assert d["id"] == art.id and d["pinned"] == art.pinned and d["metrics"] == art.metrics


class IndexMachine(RuleBasedStateMachine):
    """Real store vs. a dict of records (id -> fields) plus the set of deleted ids."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="runstash-model-"))
        self.root = self.tmp / "store"
        self.store = runstash.Store(self.root, durability="os")
        self.model: dict[str, dict] = {}
        self.deleted: set[str] = set()
        self.max_id = ""

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- operations -----------------------------------------------------------------------

    @initialize()
    def empty_store_answers_nothing(self) -> None:
        assert self.store.count() == 0
        assert self.store.list() == []
        assert self.store.best(metric="loss") is None
        assert self.store.top_k(3, metric="loss", mode="min") == []
        assert self.store.get(UNKNOWN_ID) is None

    @rule(
        target=ids,
        batch=st.lists(
            st.tuples(
                st.binary(max_size=12),
                st.sampled_from(KINDS),
                labels_st,
                metrics_st,
                scope_st,
                st.booleans(),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def put(self, batch):
        """One to three writes in a row."""
        return multiple(*(self._put(*args) for args in batch))

    def _put(self, data, kind, labels, metrics, scope, pin) -> str:
        art = self.store.put_bytes(
            data, kind=kind, labels=labels, metrics=metrics, pin=pin, **scope
        )
        assert ID_RE.match(art.id), art.id
        assert art.id not in self.model and art.id not in self.deleted, "ids are unique"
        assert art.id > self.max_id, f"ids are time-ordered: {art.id} after {self.max_id}"
        self.max_id = art.id
        rec = {
            "id": art.id,
            "kind": kind,
            "hash": runstash.hash_bytes(data),
            "size": len(data),
            "labels": dict(labels),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "pinned": pin,
            **scope,
        }
        check_artifact(art, rec)
        self.model[art.id] = rec
        assert self.store.read_bytes(art.hash) == data
        return art.id

    @rule(target=ids)
    def put_plain(self) -> str:
        """A write with no keywords at all: the defaults."""
        art = self.store.put_bytes(b"plain")
        assert art.id > self.max_id
        self.max_id = art.id
        rec = {
            "id": art.id,
            "kind": "blob",
            "hash": runstash.hash_bytes(b"plain"),
            "size": 5,
            "labels": {},
            "metrics": {},
            "pinned": False,
            **dict.fromkeys(SCOPE_POOLS),
        }
        check_artifact(art, rec)
        self.model[art.id] = rec
        return art.id

    @rule(art_id=ids, pinned=st.booleans())
    def pin(self, art_id, pinned) -> None:
        if art_id in self.deleted:
            with pytest.raises(runstash.NotFoundError):
                self.store.pin(art_id, pinned)
            return
        rec = self.model[art_id]
        rec["pinned"] = pinned
        check_artifact(self.store.pin(art_id, pinned), rec)

    @rule(art_id=ids)
    def pin_default(self, art_id) -> None:
        if art_id in self.deleted:
            with pytest.raises(runstash.NotFoundError):
                self.store.pin(art_id)
            return
        self.model[art_id]["pinned"] = True
        check_artifact(self.store.pin(art_id), self.model[art_id])

    @rule(art_id=ids)
    def delete(self, art_id) -> None:
        if art_id in self.deleted:
            with pytest.raises(runstash.NotFoundError):
                self.store.delete(art_id)
            return
        assert self.store.delete(art_id) is None
        del self.model[art_id]
        self.deleted.add(art_id)
        assert self.store.get(art_id) is None

    @rule()
    def unknown_id(self) -> None:
        assert self.store.get(UNKNOWN_ID) is None
        with pytest.raises(runstash.NotFoundError):
            self.store.pin(UNKNOWN_ID)
        with pytest.raises(runstash.NotFoundError):
            self.store.delete(UNKNOWN_ID)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = runstash.Store(self.root, durability="os")

    @rule()
    def compact(self) -> None:
        assert self.store.compact() is None

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reopen_without_close(self) -> None:
        """A second handle opened while the first is still open sees the same records."""
        other = runstash.Store(self.root, durability="os")
        try:
            assert ids(other.list()) == sorted(self.model)
        finally:
            other.close()

    # -- queries --------------------------------------------------------------------------

    @rule(
        f=filter_st,
        metric=st.sampled_from([*METRIC_NAMES, "absent"]),
        mode=st.sampled_from([None, "max", "min"]),
        limit=st.sampled_from([None, 1, 2, 3, 50]),
        k=st.integers(1, 6),
    )
    def query(self, f, metric, mode, limit, k) -> None:
        live = [self.model[i] for i in sorted(self.model)]
        selected = [r for r in live if matches(r, f)]
        oldest_first = [r["id"] for r in selected]

        listed = self.store.list(**f)
        assert ids(listed) == oldest_first, f
        for art in listed:
            check_artifact(art, self.model[art.id])
        assert ids(self.store.list(**f, limit=limit)) == oldest_first[:limit], (f, limit)
        assert self.store.count(**f) == len(selected), f
        assert ids(self.store.search(**f, limit=limit)) == oldest_first[:limit], (f, limit)

        mode_kw = {} if mode is None else {"mode": mode}
        ranked = rank(selected, metric, mode or "max")
        got = self.store.search(**f, metric=metric, limit=limit, **mode_kw)
        assert ids(got) == ranked[:limit], (f, metric, mode, limit, [a.metrics for a in got])
        best = self.store.best(metric=metric, **f, **mode_kw)
        if ranked:
            assert best is not None and best.id == ranked[0], (f, metric, mode, best)
            check_artifact(best, self.model[best.id])
        else:
            assert best is None, (f, metric, mode, best)
        top = self.store.top_k(k, metric=metric, **f, **mode_kw)
        assert ids(top) == ranked[:k], (f, metric, mode, k)

    @invariant()
    def everything_matches(self) -> None:
        everything = self.store.list()
        assert ids(everything) == sorted(self.model)
        for art in everything:
            check_artifact(art, self.model[art.id])
        assert self.store.count() == len(self.model)
        for art_id, rec in self.model.items():
            got = self.store.get(art_id)
            assert got is not None, f"live record {art_id} not found"
            check_artifact(got, rec)
        for art_id in self.deleted:
            assert self.store.get(art_id) is None, f"deleted record {art_id} still visible"

    @invariant()
    def unfiltered_rankings_match(self) -> None:
        """Every ranking over all records, after every step: ties and missing metrics."""
        live = [self.model[i] for i in sorted(self.model)]
        for metric in METRIC_NAMES:
            for mode in ("max", "min"):
                ranked = rank(live, metric, mode)
                got = self.store.search(metric=metric, mode=mode)
                assert ids(got) == ranked, (metric, mode, [a.metrics for a in got])
                best = self.store.best(metric=metric, mode=mode)
                assert (best.id if best else None) == (ranked[0] if ranked else None)
                assert ids(self.store.top_k(3, metric=metric, mode=mode)) == ranked[:3]


IndexMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestIndexModel = IndexMachine.TestCase


# -- the write API ------------------------------------------------------------------------


def test_every_write_path_returns_an_artifact(store: runstash.Store, tmp_path: Path) -> None:
    kw = dict(
        kind="model",
        labels={"task": "t1", "seed": 3, "lr": 0.5, "ok": True},
        metrics={"val_acc": 0.91, "epochs": 3},
        run_id="r1",
        graph_id="g1",
        node_id="n1",
        project_id="p1",
        pin=True,
    )
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file")
    arts = [store.put_bytes(b"from bytes", **kw), store.save(src, **kw)]
    with store.writer(".bin", **kw) as w:
        w.write(b"from a writer")
    arts.append(w.artifact)
    staged = store.stage(".bin")
    Path(staged).write_bytes(b"from staging")
    arts.append(store.ingest(staged, **kw))
    payloads = [b"from bytes", b"from a file", b"from a writer", b"from staging"]
    assert ids(arts) == sorted(ids(arts)) and len(set(ids(arts))) == 4
    for art, data in zip(arts, payloads, strict=True):
        rec = {
            "id": art.id,
            "kind": "model",
            "hash": runstash.hash_bytes(data),
            "size": len(data),
            "labels": kw["labels"],
            "metrics": {"val_acc": 0.91, "epochs": 3.0},
            "pinned": True,
            "run_id": "r1",
            "graph_id": "g1",
            "node_id": "n1",
            "project_id": "p1",
        }
        check_artifact(art, rec, blob_scheme(store))
        assert store.get(art.id) == art
        assert store.read_bytes(art.hash) == data
    assert ids(store.list(labels={"seed": 3, "ok": True})) == ids(arts)
    assert ids(store.list(labels={"seed": 3.0})) == [], "3 (int) and 3.0 (float) differ"
    assert ids(store.list(labels={"ok": 1})) == [], "True (bool) and 1 (int) differ"


def test_identical_bytes_are_new_records(store: runstash.Store) -> None:
    a = store.put_bytes(b"same", kind="k", metrics={"m": 1.0})
    b = store.put_bytes(b"same", kind="k", metrics={"m": 1.0})
    assert a.id != b.id and a.hash == b.hash and a.id < b.id
    assert store.count(kind="k") == 2
    assert ids(store.top_k(2, metric="m")) == [a.id, b.id], "a tie goes to the older"
    assert store.best(metric="m", mode="min").id == a.id
    store.delete(a.id)
    assert store.read_bytes(b.hash) == b"same", "the blob stays for the other record"
    assert ids(store.list()) == [b.id]


def test_artifact_is_frozen_and_compares_by_value(store: runstash.Store) -> None:
    a = store.put_bytes(b"x", labels={"k": "v"})
    with pytest.raises((AttributeError, TypeError)):
        a.kind = "other"  # type: ignore[misc]
    assert a.kind == "blob"
    assert store.get(a.id) == a
    assert store.get(a.id) is not None and store.list() == [a]
    pinned = store.pin(a.id)
    assert pinned != a and pinned.pinned and not a.pinned
    assert a.to_dict()["labels"] == {"k": "v"}


@pytest.mark.parametrize(
    "kw",
    [
        {"kind": ""},
        {"kind": "a/b"},
        {"kind": "a\\b"},
        {"kind": "a\0b"},
        {"labels": {1: "a"}},
        {"labels": {"k": [1]}},
        {"labels": {"k": {"x": 1}}},
        {"labels": {"k": b"bytes"}},
        {"metrics": {"m": float("nan")}},
        {"metrics": {"m": float("inf")}},
        {"metrics": {"m": float("-inf")}},
        {"metrics": {"m": "0.5"}},
        {"metrics": {"m": None}},
        {"metrics": {3: 0.5}},
        {"metrics": {"m": 2**1100}},  # an int beyond the f64 range: not a finite f64
    ],
)
def test_bad_write_arguments(store: runstash.Store, kw: dict) -> None:
    with pytest.raises(runstash.InvalidArgumentError):
        store.put_bytes(b"data", **kw)
    with pytest.raises(runstash.InvalidArgumentError):
        with store.writer(".bin", **kw) as w:
            w.write(b"data")
    assert store.count() == 0 and store.list() == [], "nothing recorded for a refused write"
    store.close()
    assert runstash.Store(store.root, durability="os").count() == 0


def test_bad_query_arguments(store: runstash.Store) -> None:
    store.put_bytes(b"x", metrics={"m": 1.0})
    with pytest.raises(runstash.InvalidArgumentError):
        store.best(metric="m", mode="median")
    with pytest.raises(runstash.InvalidArgumentError):
        store.search(metric="m", mode="MAX")
    with pytest.raises(runstash.InvalidArgumentError):
        store.top_k(2, metric="m", mode="")
    assert store.best(metric="m", mode="min") is not None


def test_delete_and_pin_of_unknown_or_deleted(store: runstash.Store) -> None:
    a = store.put_bytes(b"x")
    store.delete(a.id)
    for art_id in (a.id, UNKNOWN_ID):
        with pytest.raises(runstash.NotFoundError):
            store.delete(art_id)
        with pytest.raises(runstash.NotFoundError):
            store.pin(art_id)
        with pytest.raises(runstash.NotFoundError):
            store.pin(art_id, False)
    store.close()
    reopened = runstash.Store(store.root, durability="os")
    assert reopened.get(a.id) is None and reopened.count() == 0
    with pytest.raises(runstash.NotFoundError):
        reopened.pin(a.id)


def test_store_is_a_context_manager(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with runstash.Store(root, durability="os") as s:
        a = s.put_bytes(b"ctx", kind="k", pin=True)
    with runstash.Store(root, durability="os") as s:
        assert s.get(a.id) == a
        assert s.count(pinned=True) == 1 and s.count(pinned=False) == 0
