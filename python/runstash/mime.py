"""The one place that guesses a file's mime type from its name, for every write of every API
(the sync ``Store``, the facade, run bundles), and maps a mime back to the decoder's
extension. Python's ``mimetypes`` (imported on first use) plus the formats it does not know or
gets wrong for artifacts (``.npy``, ``.parquet``, ``.pt``, ...)."""

from __future__ import annotations

import os

__all__ = ["PARQUET", "guess", "ext_for"]

PARQUET = "application/vnd.apache.parquet"

#: Artifact formats ``mimetypes`` lacks, or maps to something unrelated (``.pt``).
_OWN = {
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".parquet": PARQUET,
    ".feather": "application/vnd.apache.arrow.file",
    ".arrow": "application/vnd.apache.arrow.file",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".log": "text/plain",
    ".pt": "application/octet-stream",
    ".pth": "application/octet-stream",
    ".ckpt": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}

#: The decoder's extension for the mimes ``loaders.decoder_for`` knows.
_DECODABLE = {
    "application/json": ".json",
    "application/x-npy": ".npy",
    "application/x-npz": ".npz",
    PARQUET: ".parquet",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/csv": ".csv",
}


def guess(name: str | os.PathLike[str] | None) -> str | None:
    """The mime type of a file name, a path or a bare extension (``".npy"``), or ``None``.

    :param name: ``"model.npy"``, ``"/tmp/a.JSON"``, ``".png"``; ``None`` or ``""`` give None.
    """
    if not name:
        return None
    base = os.path.basename(os.fspath(name))
    ext = os.path.splitext(base)[1].lower() or (base.lower() if base.startswith(".") else "")
    if not ext:
        return None
    if ext in _OWN:
        return _OWN[ext]
    import mimetypes

    return mimetypes.guess_type(base if base[:1] != "." else f"x{base}")[0]


def ext_for(mime: str | None) -> str:
    """The extension ``loaders.decoder_for`` decodes for ``mime`` (``""`` when none: bytes).

    :param mime: a mime type as recorded, e.g. ``"application/x-npy"``.
    """
    if not mime:
        return ""
    return _DECODABLE.get(mime, "")
