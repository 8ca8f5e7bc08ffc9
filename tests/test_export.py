"""Export of the index: Store.to_arrow() and Store.to_polars().

One row per live artifact (deleted ones absent), oldest first; scalar columns for the record
fields; a labels column (map or struct); one Float64 column per metric name, null where the
artifact lacks the metric. The metric column name may be "metrics.<name>" or "<name>": the
helper `metric_column` accepts either, the values and nulls are checked exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import runstash
from tests.conftest import spawn_python
from tests.index_helpers import typed

BASE_COLUMNS = [
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
    "pinned",
    "labels",
]
SCALARS = ["id", "kind", "uri", "hash", "size", "mime", "run_id", "graph_id", "node_id"]
SCALARS += ["project_id", "pinned"]

#: Tests taking the ``store`` (or ``fac``) fixture run on a local and on an S3 store.
pytestmark = pytest.mark.both_backends


def metric_column(columns: list[str], name: str) -> str | None:
    """The column holding metric `name`: "metrics.<name>" or "<name>" (not a base column)."""
    found = [c for c in (f"metrics.{name}", name) if c in columns and c not in BASE_COLUMNS]
    assert len(found) <= 1, f"two columns for metric {name}: {found}"
    return found[0] if found else None


def label_rows(values: list) -> list[dict]:
    """Labels cells as dicts, whatever the column layout: a map (arrow: list of (key, value)
    pairs; polars: list of {"key", "value"} structs), a struct (absent keys are null), or a
    JSON string."""
    rows = []
    for v in values:
        if v is None:
            rows.append({})
        elif isinstance(v, str):
            rows.append(json.loads(v))
        elif isinstance(v, dict):
            rows.append({k: x for k, x in v.items() if x is not None})
        else:
            pairs = [(p["key"], p["value"]) if isinstance(p, dict) else tuple(p) for p in v]
            rows.append(dict(pairs))
    return rows


def labels_equal(got: dict, want: dict) -> bool:
    """Same keys; each value typed-equal, or (in a column of one value type) its string form."""
    if set(got) != set(want):
        return False
    return all(
        typed(g) == typed(w) or (isinstance(g, str) and g in (str(w), json.dumps(w)))
        for g, w in ((got[k], want[k]) for k in want)
    )


def build(store: runstash.Store) -> list[runstash.Artifact]:
    """Five writes, one deleted (the only one with metric "gone"), one pinned afterwards;
    returns the live artifacts oldest first, as the store now has them."""
    a = store.put_bytes(
        b"a",
        kind="model",
        labels={"task": "t1", "seed": 1},
        metrics={"loss": 0.5, "acc": 0.9},
        run_id="r1",
        pin=True,
    )
    b = store.put_bytes(
        b"bb",
        kind="image",
        labels={"task": "t2"},
        metrics={"loss": 1.5},
        graph_id="g",
        node_id="n",
        project_id="p",
    )
    c = store.put_bytes(b"ccc", kind="model")
    d = store.put_bytes(b"dddd", kind="table", labels={"task": "t3"}, metrics={"gone": 3.0})
    e = store.put_bytes(b"eeeee", kind="model", labels={"seed": 3}, metrics={"acc": 0.7})
    store.delete(d.id)
    store.pin(b.id)
    live = [store.get(x.id) for x in (a, b, c, e)]
    assert all(x is not None for x in live)
    return live  # type: ignore[return-value]


EXPECTED_METRICS = {"loss": [0.5, 1.5, None, None], "acc": [0.9, None, None, 0.7]}


def parse_utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def check_table_values(columns: list[str], col, arts: list) -> None:
    """`col(name)` -> list of Python values of that column."""
    for name in BASE_COLUMNS:
        assert name in columns, f"column {name} missing: {columns}"
    for name in SCALARS:
        assert col(name) == [getattr(a, name) for a in arts], name
    got_times = col("created_at")
    assert [t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC) for t in got_times] == [
        parse_utc(a.created_at) for a in arts
    ]
    for got, a in zip(label_rows(col("labels")), arts, strict=True):
        assert labels_equal(got, a.labels), (got, a.labels)
    for name, want in EXPECTED_METRICS.items():
        mc = metric_column(columns, name)
        assert mc is not None, f"no column for metric {name}: {columns}"
        assert col(mc) == want, (name, col(mc))
    gone = metric_column(columns, "gone")
    if gone is not None:  # only a deleted artifact had it: all null if the column exists
        assert col(gone) == [None] * len(arts)
    extra = [c for c in columns if c not in BASE_COLUMNS]
    assert sorted(extra) == sorted(
        c for c in (metric_column(columns, m) for m in ("loss", "acc", "gone")) if c
    ), f"unexpected columns: {extra}"


def test_to_arrow(store: runstash.Store) -> None:
    arts = build(store)
    table = store.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.num_rows == 4, "one row per live artifact; the deleted one is absent"
    cols = table.column_names
    check_table_values(cols, lambda n: table.column(n).to_pylist(), arts)
    ts = table.schema.field("created_at").type
    assert pa.types.is_timestamp(ts) and ts.unit == "us" and ts.tz in ("UTC", "+00:00"), ts
    assert pa.types.is_integer(table.schema.field("size").type)
    assert pa.types.is_boolean(table.schema.field("pinned").type)
    for name in ("loss", "acc"):
        assert table.schema.field(metric_column(cols, name)).type == pa.float64()
    assert table.column("pinned").to_pylist() == [True, True, False, False]


def test_to_polars(store: runstash.Store) -> None:
    arts = build(store)
    df = store.to_polars()
    assert isinstance(df, pl.DataFrame)
    assert df.height == 4
    cols = df.columns
    check_table_values(cols, lambda n: df[n].to_list(), arts)
    assert df.schema["created_at"] == pl.Datetime("us", "UTC")
    for name in ("loss", "acc"):
        assert df.schema[metric_column(cols, name)] == pl.Float64
    assert df.schema["pinned"] == pl.Boolean
    # The frame is usable for the obvious analysis: the best model by acc.
    best = (
        df.filter(pl.col("kind") == "model")
        .drop_nulls(metric_column(cols, "acc"))
        .sort(metric_column(cols, "acc"), descending=True)
    )
    assert best["id"][0] == arts[0].id == store.best(kind="model", metric="acc").id


def test_export_of_an_empty_store(store: runstash.Store) -> None:
    table = store.to_arrow()
    assert table.num_rows == 0
    for name in ["id", "kind", "hash", "created_at", "pinned"]:
        assert name in table.column_names
    df = store.to_polars()
    assert df.height == 0 and "id" in df.columns
    a = store.put_bytes(b"x", kind="k")
    store.delete(a.id)
    assert store.to_arrow().num_rows == 0 and store.to_polars().height == 0


def test_export_survives_reopen_and_sees_other_processes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with runstash.Store(root, durability="os") as s:
        arts = build(s)
        before = s.to_arrow().to_pylist()
    s = runstash.Store(root, durability="os")
    try:
        assert s.to_arrow().to_pylist() == before
        child = spawn_python(
            "import sys, runstash\n"
            "s = runstash.Store(sys.argv[1], durability='os')\n"
            "print(s.put_bytes(b'child', kind='k', metrics={'loss': 7.0}).id)\n",
            str(root),
        )
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
        child_id = out.decode().strip()
        table = s.to_arrow()
        assert table.num_rows == 5, "export applies frames another process appended"
        ids = table.column("id").to_pylist()
        assert ids[:4] == [a.id for a in arts] and ids[4] == child_id
        loss = table.column(metric_column(table.column_names, "loss")).to_pylist()
        assert loss == [0.5, 1.5, None, None, 7.0]
        df = s.to_polars()
        assert df.height == 5 and df["id"].to_list() == ids
    finally:
        s.close()


def test_labels_with_mixed_types_per_key(store: runstash.Store) -> None:
    """One label key with int, str, bool and float values in different rows: every row keeps
    its own labels (typed, or as their string form in a column of one type); absent is null."""
    labels = [{"x": 1, "y": 1.5}, {"x": "a", "y": 2}, {"x": True}, {"x": 2.5, "z": False}, {}]
    for i, lab in enumerate(labels):
        store.put_bytes(b"%d" % i, labels=lab)
    for rows in (
        label_rows(store.to_arrow().column("labels").to_pylist()),
        label_rows(store.to_polars()["labels"].to_list()),
    ):
        assert len(rows) == len(labels)
        for got, want in zip(rows, labels, strict=True):
            assert labels_equal(got, want), (got, want)


@pytest.mark.parametrize("n", [4, 300])
def test_export_row_count_matches_count(store: runstash.Store, n: int) -> None:
    for i in range(n):
        store.put_bytes(b"%d" % i, kind="k", metrics={"m": float(i)} if i % 3 else {})
    for a in store.list()[: n // 4]:
        store.delete(a.id)
    table = store.to_arrow()
    assert table.num_rows == store.count()
    assert table.column("id").to_pylist() == [a.id for a in store.list()]
    m = table.column(metric_column(table.column_names, "m")).to_pylist()
    assert m == [a.metrics.get("m") for a in store.list()]
    assert store.to_polars().height == store.count()
