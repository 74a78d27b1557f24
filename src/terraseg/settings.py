"""Process-wide settings read from the environment.

``TERRASEG_DATA`` is the one data-root setting: relative data paths in configs are resolved against
it. When unset, ``../shared/datasets`` is used if it exists (relative to the working directory, then
to the source checkout), else the user's data folder (``platformdirs.user_data_dir("terraseg")/datasets``:
``~/.local/share/terraseg/datasets`` on Linux), where ``terraseg download`` puts the public data sets.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Return the data root directory.

    Returns:
        ``$TERRASEG_DATA`` if set, else the first existing of ``./../shared/datasets`` and
        ``<checkout>/../shared/datasets``, else the user's data folder (platformdirs; it may not exist yet).
    """
    env = os.environ.get("TERRASEG_DATA")
    if env:
        return Path(env).expanduser().resolve()
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = (base / ".." / "shared" / "datasets").resolve()
        if candidate.is_dir():
            return candidate
    import platformdirs

    return Path(platformdirs.user_data_dir("terraseg")) / "datasets"


def resolve_data_path(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """Resolve a data path: absolute paths are kept, relative ones are joined to the data root.

    Args:
        path: a path from a config file.
        root: the data root; defaults to :func:`data_root`.

    Returns:
        The absolute path (it may not exist; readers raise a clear error when it doesn't).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (root or data_root()) / p


def cache_dir() -> Path:
    """The one folder terraseg caches in: ``$TERRASEG_CACHE``, else the user's cache folder.

    Holds the measured runtime rankings (:mod:`terraseg.infer.runtime`), ONNX graphs exported on
    demand and the header indexes of projects (:mod:`terraseg.data.project`). Every cache entry is
    rebuilt when it is missing or unreadable, so the folder may be deleted at any time.

    Returns:
        ``$TERRASEG_CACHE`` when set, else ``platformdirs.user_cache_dir("terraseg")``
        (``$XDG_CACHE_HOME/terraseg``, ``~/.cache/terraseg`` when unset, on Linux). It may not exist yet.
    """
    env = os.environ.get("TERRASEG_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("terraseg"))


def max_output_bytes() -> int:
    """Largest raster (uncompressed bytes) a command writes without being told: ``$TERRASEG_MAX_OUTPUT_GB`` (default 100 GB).

    A wrong resolution or CRS can imply a raster of hundreds of gigabytes; writers refuse it up front
    (:func:`terraseg.io.outputs.create_raster`) instead of running for hours.
    """
    try:
        return int(float(os.environ.get("TERRASEG_MAX_OUTPUT_GB", "100")) * 1e9)
    except ValueError:
        return int(100e9)
