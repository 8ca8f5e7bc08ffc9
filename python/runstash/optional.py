"""Optional dependencies: imported on first use, and when missing an error that names the
extra that installs them (``pip install 'runstash[polars]'``), never a bare
``ModuleNotFoundError``. The extras are defined in ``pyproject.toml``; keep the two in step."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]

#: The extra that installs each optional module.
EXTRA = {"pyarrow": "arrow", "polars": "polars", "numpy": "numpy"}


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRA`'s keys) for ``needed_for``.

    :param module: the top-level module name, e.g. ``"pyarrow"``.
    :param needed_for: what needs it, for the message, e.g. ``"Store.to_arrow()"``.
    :raises ModuleNotFoundError: it is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise  # the module is there but one of its own imports failed: not ours to hide
        raise ModuleNotFoundError(
            f"{needed_for} needs {module}, which is not installed: "
            f"pip install 'runstash[{EXTRA[module]}]' (or 'runstash[all]')",
            name=module,
        ) from e
