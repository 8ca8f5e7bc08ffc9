"""Decoders for ``ArtifactFacade.load_artifact``: by kind or file extension, never by pickle.

json -> the decoded object; text (kind text/log/note or a .txt/.md/.log/.csv name) -> str;
parquet -> a polars DataFrame; .npy / .npz -> numpy (``allow_pickle=False``); a directory
artifact -> the path of its read-only directory; anything else -> bytes.
"""

from __future__ import annotations

import io
import json
from typing import Any

from .optional import require

TEXT_KINDS = {"text", "log", "note"}
TEXT_EXTS = {".txt", ".md", ".log", ".csv"}

NPY_MAGIC = b"\x93NUMPY"
PARQUET_MAGIC = b"PAR1"


def decoder_for(kind: str | None, ext: str | None) -> str:
    """The decoder name for an artifact: "json", "text", "parquet", "npy", "npz" or "bytes"."""
    ext = (ext or "").lower()
    if kind == "json" or ext == ".json":
        return "json"
    if kind in TEXT_KINDS or ext in TEXT_EXTS:
        return "text"
    if ext == ".parquet":
        return "parquet"
    if ext == ".npy":
        return "npy"
    if ext == ".npz":
        return "npz"
    return "bytes"


def sniff(data: bytes) -> str:
    """A decoder for bytes of unknown provenance, from their magic numbers only."""
    if data.startswith(NPY_MAGIC):
        return "npy"
    if len(data) >= 8 and data.startswith(PARQUET_MAGIC) and data.endswith(PARQUET_MAGIC):
        return "parquet"
    return "bytes"


def decode(data: bytes, how: str) -> Any:
    """Decode bytes with the named decoder (see :func:`decoder_for`)."""
    if how == "json":
        return json.loads(data)
    if how == "text":
        return data.decode("utf-8")
    if how == "parquet":
        pl = require("polars", "decoding a parquet artifact")
        return pl.read_parquet(io.BytesIO(data))
    if how in ("npy", "npz"):
        np = require("numpy", f"decoding a .{how} artifact")
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if how == "npz":
            return {k: loaded[k] for k in loaded.files}
        return loaded
    return data
