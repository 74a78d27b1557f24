"""Atomic output files: write to a temporary name beside the target, rename when complete.

An interrupted run therefore never leaves a half-written bundle, raster or report under the final
name (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from terraseg.errors import OutputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary file keeps the target's suffix (GDAL picks drivers by extension) and starts with
    a dot so listings don't mistake it for a result. On an exception it is deleted.

    Args:
        target: final output path; its parent folder is created.

    Yields:
        The temporary path to write to.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    except OSError as e:  # read-only folder, a file where a folder should be, full disk
        raise OutputError(f"{target}: cannot write the output here ({e.strerror or type(e).__name__}).") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; results get the usual mode
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        # GDAL side-car files (e.g. .aux.xml) of the temp raster
        for side in tmp_path.parent.glob(tmp_path.name + ".*"):
            with contextlib.suppress(OSError):
                side.unlink()
        raise


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden staging folder inside ``out_dir`` whose files move into ``out_dir`` only if the block succeeds.

    For commands with several outputs (split manifests, CVAT masks): a failure or an interruption
    part-way leaves none of them under a final name, so a later step never takes half a result for a
    whole one. Files keep their paths relative to the staging folder.

    Args:
        out_dir: the final folder (created).

    Yields:
        The staging folder to write into.

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
    """
    import shutil
    import uuid

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = out / f".staging-{uuid.uuid4().hex[:12]}"
        stage.mkdir()
    except OSError as e:
        raise OutputError(f"{out}: cannot write the outputs here ({e.strerror or type(e).__name__}).") from None
    try:
        yield stage
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                dest = out / f.relative_to(stage)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return its path.

    Args:
        target: final file (its folder is created).
        text: UTF-8 text to write.

    Returns:
        ``target`` as a Path.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
