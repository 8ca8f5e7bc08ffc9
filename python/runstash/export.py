"""The index as an Arrow table (``Store.to_arrow`` / ``to_polars``), from the columns the
engine returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .args import Labels, LabelValue
from .optional import require

if TYPE_CHECKING:
    import pyarrow

__all__ = ["arrow_table"]


def arrow_table(c: dict[str, Any]) -> pyarrow.Table:
    """The artifacts in the engine's column form ``c`` as a pyarrow Table.

    :param c: what ``CoreStore.columns()`` returns: scalar columns, a list of label dicts,
        and metric name -> value list (``None`` where absent).
    :raises ModuleNotFoundError: pyarrow is not installed (the message names the extra)."""
    pa = require("pyarrow", "to_arrow()")

    cols: dict[str, pa.Array] = {
        "id": pa.array(c["id"], pa.string()),
        "kind": pa.array(c["kind"], pa.string()),
        "uri": pa.array(c["uri"], pa.string()),
        "hash": pa.array(c["hash"], pa.string()),
        "size": pa.array(c["size"], pa.uint64()),
        "mime": pa.array(c["mime"], pa.string()),
        "created_at": pa.array(c["created_us"], pa.timestamp("us", tz="UTC")),
        "run_id": pa.array(c["run_id"], pa.string()),
        "graph_id": pa.array(c["graph_id"], pa.string()),
        "node_id": pa.array(c["node_id"], pa.string()),
        "project_id": pa.array(c["project_id"], pa.string()),
        "pinned": pa.array(c["pinned"], pa.bool_()),
        "labels": _labels_column(c["labels"]),
    }
    for name, values in c["metrics"].items():
        cols[f"metrics.{name}"] = pa.array(values, pa.float64())
    return pa.table(cols)


def _label_text(v: LabelValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _labels_column(rows: list[Labels]) -> Any:
    """Labels as an Arrow struct column: a field per key, typed when the key's values agree."""
    import pyarrow as pa

    types: dict[str, set[type]] = {}
    for d in rows:
        for k, v in d.items():
            types.setdefault(k, set()).add(type(v))
    if not types:
        return pa.array([[] for _ in rows], pa.map_(pa.string(), pa.string()))
    arrow_type = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    fields = []
    mixed = set()
    for k in sorted(types):
        ts = types[k]
        if len(ts) == 1:
            fields.append(pa.field(k, arrow_type[next(iter(ts))]))
        else:
            fields.append(pa.field(k, pa.string()))
            mixed.add(k)
    if mixed:
        rows = [{k: _label_text(v) if k in mixed else v for k, v in d.items()} for d in rows]
    return pa.array(rows, pa.struct(fields))
