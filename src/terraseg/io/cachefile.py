"""Files in terraseg's cache folder (:func:`terraseg.settings.cache_dir`): JSON tables and binary blobs.

A cache entry is a convenience, never a source of truth: an entry that is missing, unreadable or
damaged reads as absent (and is measured or built again), and a cache that cannot be written (a
read-only home) is skipped without an error. Writes are atomic (temporary file + rename), so a
reader never sees half an entry.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from terraseg.settings import cache_dir

log = logging.getLogger(__name__)


def read_json(name: str) -> dict[str, Any]:
    """The JSON object cached as ``name``, or ``{}`` when missing or damaged.

    Args:
        name: file name in the cache folder, e.g. ``runtime.json``.
    """
    try:
        value = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def update_json(name: str, key: str, value: Any) -> bool:
    """Set ``key`` of the JSON object cached as ``name`` (read, update, atomic replace); False when it cannot be written.

    Args:
        name: file name in the cache folder.
        key: the entry.
        value: any JSON value.
    """
    table = read_json(name)
    table[key] = value
    return _write(cache_dir() / name, json.dumps(table, indent=1).encode())


def read_blob(name: str) -> bytes | None:
    """The bytes cached as ``name`` (e.g. ``onnx/<key>.onnx``), or None.

    Args:
        name: relative path in the cache folder.
    """
    try:
        return (cache_dir() / name).read_bytes()
    except OSError:
        return None


def write_blob(name: str, data: bytes) -> bool:
    """Cache ``data`` as ``name`` (atomically); False when the cache folder cannot be written.

    Args:
        name: relative path in the cache folder.
        data: the bytes.
    """
    return _write(cache_dir() / name, data)


def _write(path: Path, data: bytes) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True
    except OSError as e:  # a read-only or full home: measured again next time
        log.debug("cache %s not written: %s", path, e)
        return False


__all__ = ["read_blob", "read_json", "update_json", "write_blob"]
