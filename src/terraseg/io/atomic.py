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
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the output (e.g. {target / ('output' + target.suffix)}).")
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
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        # GDAL side-car files (e.g. .aux.xml) of the temp raster
        for side in tmp_path.parent.glob(tmp_path.name + ".*"):
            with contextlib.suppress(OSError):
                side.unlink()
        if (why := write_failure(e, target.parent)) is not None:
            raise OutputError(f"{target}: cannot write the output here ({why}).") from None
        raise


def write_failure(error: BaseException, folder: Path) -> str | None:
    """Why a write into ``folder`` failed, when ``error`` is the file system's doing (else None: a real error).

    Writers raise what their library raises for a full or read-only disk: ``OSError`` from Python,
    ``RasterioIOError`` or ``CPLE_*`` from GDAL, ``DataSourceError`` from pyogrio. An ``OSError`` counts as
    is; another error counts when the folder has no space left or cannot be written.

    Args:
        error: what the writer raised.
        folder: where it wrote.
    """
    import shutil

    from terraseg.errors import TerrasegError

    if isinstance(error, TerrasegError) or not isinstance(error, Exception):
        return None
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    try:
        if shutil.disk_usage(folder).free < 1 << 16:
            return "No space left on device"
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return "Read-only file system or folder"
    text = str(error)
    return "No space left on device" if "No space left" in text or "ENOSPC" in text else None


def check_writable(target: str | os.PathLike[str], probe_bytes: int = 4096) -> Path:
    """Refuse, before any work, an output file that cannot be written: its folder is a file, read-only or full.

    A probe of ``probe_bytes`` is written beside ``target`` and removed (an empty file would still fit on a full
    disk). Use it before work that writes through a library with its own retry loop (an MLflow store).

    Args:
        target: the output file.
        probe_bytes: size of the probe.

    Returns:
        ``target`` as a Path.

    Raises:
        OutputError: the folder cannot be created or written, or ``target`` is a folder.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the output.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".probe-{target.name}.", dir=target.parent)
        try:
            os.write(fd, b"\0" * probe_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{target}: cannot write the output here ({e.strerror or type(e).__name__}).") from None
    return target


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
    except BaseException as e:
        if (why := write_failure(e, out)) is not None:
            raise OutputError(f"{out}: cannot write the outputs here ({why}).") from None
        raise
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


def output_folder(folder: str | os.PathLike[str], probe_bytes: int = 4096) -> Path:
    """Create an output folder (a run folder, a study) and check, before any work, that files can be written in it.

    Args:
        folder: the folder.
        probe_bytes: size of the probe file written and removed (a full disk refuses it).

    Returns:
        ``folder`` as a Path.

    Raises:
        OutputError: a file is in the way, the folder is read-only, or the disk is full.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot write the outputs here ({e.strerror or type(e).__name__}).") from None
    check_writable(folder / "probe", probe_bytes)
    return folder
