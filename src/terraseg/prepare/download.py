"""Fetch public data sets from their original URLs into the data root, with checksums and resume.

Each entry names the original public source, the files to fetch and their published (or, for
single files, the known) checksum. Downloads go to ``<name>.part`` and resume with an HTTP
``Range`` request when interrupted; a file is moved to its final name only after its checksum
matches, and archives are extracted into a temporary folder renamed into place when complete.
Nothing is fetched when the data set's files are already present (e.g. from ``../shared/datasets``).

A mirror (``TERRASEG_DOWNLOAD_URL`` or ``base_url``) replaces every original URL by
``<mirror>/<folder>/<filename>``: the layout of the data root itself, so a folder of data sets served over
HTTP (``python -m http.server``) is a mirror. The checksums stay those of the original files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from terraseg import progress
from terraseg.errors import ConfigError, InputFileError, OutputError
from terraseg.settings import data_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set.

    Attributes:
        url: original public URL.
        filename: name under the data set folder.
        sha256 / md5: expected checksum (None when the source publishes none; then only the archive's
        integrity is checked).
        extract: unpack a .zip/.tar(.gz) into the data set folder.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False


@dataclass(frozen=True)
class RemoteDataset:
    """A public data set: where its files come from and how to tell it is already here."""

    name: str
    folder: str
    files: tuple[RemoteFile, ...]
    present: tuple[str, ...]
    citation: str
    licence: str
    note: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _registry() -> dict[str, RemoteDataset]:
    """The data sets of ``datasets.yaml`` (shipped beside this module): name -> :class:`RemoteDataset`."""
    import yaml

    raw = yaml.safe_load((Path(__file__).with_name("datasets.yaml")).read_text())
    return {
        name: RemoteDataset(
            name,
            d["folder"],
            tuple(RemoteFile(**f) for f in d["files"]),
            tuple(d["present"]),
            d["citation"],
            d["licence"],
            d.get("note", ""),
            tuple(d.get("aliases", ())),
        )
        for name, d in raw.items()
    }


DATASETS: dict[str, RemoteDataset] = _registry()


def _present(root: Path, ds: RemoteDataset) -> Path | None:
    for folder in (ds.folder, *ds.aliases):
        base = root / folder
        if base.is_dir() and all(any(base.glob(pattern)) for pattern in ds.present):
            return base
    return None


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str, target: Path, sha256: str | None = None, md5: str | None = None, chunk: int = 1 << 20, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``target``, resuming a previous ``target.part``; verify the checksum.

    Args:
        url: the file's public URL.
        target: local file.
        sha256: expected checksum (hex), or None when none is published.
        md5: expected checksum (hex), or None when none is published.
        chunk: bytes per read.
        timeout: seconds per network operation.

    Returns:
        ``target``.

    Raises:
        InputFileError: network failure (the partial file is kept for resuming) or checksum mismatch
            (the partial file is deleted).
    """
    part = target.with_name(target.name + ".part")
    _writable(target.parent)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "terraseg", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            mode = "ab" if have and resp.status == 206 else "wb"  # a server ignoring Range sends it all again
            length = resp.headers.get("Content-Length")
            total = (int(length) + (have if mode == "ab" else 0)) / 1e6 if length and length.isdigit() else None
            with open(part, mode) as f, progress.task(f"download {target.name}", total, "MB") as advance:
                if mode == "ab":
                    advance(have / 1e6)
                while block := resp.read(chunk):
                    try:
                        f.write(block)
                    except OSError as e:  # the disk, not the network: the partial file stays for a resume
                        raise OutputError(
                            f"{part}: cannot write the download here ({e.strerror or e}); free some space "
                            "or give another --root, and run again to resume."
                        ) from None
                    advance(len(block) / 1e6)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # requested range not satisfiable: the .part is already complete
            pass
        else:
            raise InputFileError(f"{url}: download failed (HTTP {e.code}); {_by_hand(target, sha256, md5)}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise InputFileError(f"{url}: download failed ({getattr(e, 'reason', e)}); {_by_hand(target, sha256, md5)}") from None
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = _digest(part, algo)
            if got != want:
                part.unlink()
                raise InputFileError(f"{url}: {algo} checksum mismatch (got {got}, expected {want}); the download was deleted.")
    part.replace(target)
    return target


def _writable(folder: Path) -> Path:
    """``folder``, created; refused in one line when it cannot be (a file in the way, a read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise OutputError(
            f"{folder}: cannot write the data set here ({e.strerror or type(e).__name__}); give another --root "
            "(or set TERRASEG_DATA)."
        ) from None
    return folder


def _by_hand(target: Path, sha256: str | None, md5: str | None) -> str:
    """The second half of a failed download's one line: resume, or where to put the file by hand."""
    check = f" (sha256 {sha256})" if sha256 else f" (md5 {md5})" if md5 else ""
    return f"run again to resume, or fetch that URL elsewhere and put the file at {target}{check}."


def mirror_url() -> str | None:
    """The mirror that replaces every original URL: ``$TERRASEG_DOWNLOAD_URL`` (None when unset or empty)."""
    return os.environ.get("TERRASEG_DOWNLOAD_URL") or None


def source_url(ds: RemoteDataset, f: RemoteFile, base_url: str | None = None) -> str:
    """Where file ``f`` of ``ds`` is fetched from: ``<base_url>/<folder>/<filename>`` with a mirror, else its original URL.

    Args:
        ds: the data set.
        f: one of its files.
        base_url: a mirror's URL (default: :func:`mirror_url`).
    """
    base = base_url or mirror_url()
    return f"{base.rstrip('/')}/{ds.folder}/{f.filename}" if base else f.url


def _extract(archive: Path, dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad:
                    raise InputFileError(f"{archive}: corrupt archive member {bad}.")
                z.extractall(tmp)  # zipfile strips absolute paths and '..'
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")  # refuses links and paths outside tmp
        else:
            raise InputFileError(f"{archive}: not a zip or tar archive.")
        tops = list(tmp.iterdir())
        src = tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp  # unwrap a single top folder
        for item in src.iterdir():
            final = dest / item.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            item.replace(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, root: Path | None = None, force: bool = False, base_url: str | None = None) -> tuple[Path, bool]:
    """Fetch data set ``name`` into ``root`` (default: the data root).

    Args:
        name: a key of :data:`DATASETS` (or an alias).
        root: data root (default :func:`terraseg.settings.data_root`).
        force: download even when the files are present.
        base_url: a mirror serving ``<folder>/<filename>`` (default ``$TERRASEG_DOWNLOAD_URL``; None: the original URLs).

    Returns:
        ``(folder, fetched)``: where the data set is, and whether anything was downloaded.

    Raises:
        ConfigError: unknown data set name.
        InputFileError: network failure or checksum mismatch.
    """
    name = next((n for n, d in DATASETS.items() if name in d.aliases), name)
    if name not in DATASETS:
        raise ConfigError(f"unknown data set '{name}'; known: {', '.join(sorted(DATASETS))}.")
    ds = DATASETS[name]
    root = Path(root) if root else data_root()
    here = _present(root, ds)
    if here is not None and not force:
        log.info("%s already present in %s", name, here)
        return here, False
    dest = _writable(root / ds.folder)
    for f in ds.files:
        target = dest / f.filename
        if not f.extract and not force and target.is_file() and f.sha256 and _digest(target, "sha256") == f.sha256:
            continue  # fetched and verified by an earlier, interrupted run
        path = fetch(source_url(ds, f, base_url), target, f.sha256, f.md5)
        if f.extract:
            _extract(path, dest)
            path.unlink()
    return dest, True


def datasets_markdown() -> str:
    """The data-sets page (``docs/data.md``): every data set ``terraseg download`` fetches, from :data:`DATASETS`.

    Each with its folder under the data root, its files, where they come from (the original URL, pinned to a
    commit where the source is a repository), each file's checksum, citation, licence and note. ``make site``
    writes the page; a test keeps it current.

    Returns:
        Markdown text.
    """
    out = [
        "# Data sets",
        "",
        "The demo, the tutorials and the integration tests read these public data sets from the data root: "
        "`$TERRASEG_DATA` when set, else `../shared/datasets` when it exists beside the checkout, else the user's "
        "data folder (`~/.local/share/terraseg/datasets` on Linux; `terraseg download --where` prints it). "
        "`terraseg download NAME` fetches one from its original source, checks every file against the checksum "
        "below, resumes an interrupted download, and never leaves a partial file under a final name; `make data` "
        "fetches all that the tutorials read, `make demo` the Massachusetts tiles first. A mirror serving "
        "`<folder>/<file>` replaces the original URLs with `--base-url URL` or `TERRASEG_DOWNLOAD_URL=URL` "
        "(`python -m http.server` over a data root is one). Offline, the error names each URL and the path and "
        "checksum of the file to put there by hand.",
        "",
        "This page is generated from `src/terraseg/prepare/datasets.yaml` (`terraseg.prepare.download.datasets_markdown`).",
        "",
    ]
    for ds in DATASETS.values():
        out += [f"## `{ds.name}`", "", f"{ds.citation}. Licence: {ds.licence}.", ""]
        if ds.note:
            out += [ds.note, ""]
        out += [
            f"Folder under the data root: `{ds.folder}/`"
            + (f" (also found as {', '.join(f'`{a}/`' for a in ds.aliases)})" if ds.aliases else "")
            + ".",
            "",
            "| file | source | checksum |",
            "|---|---|---|",
        ]
        for f in ds.files:
            check = f"sha256 `{f.sha256}`" if f.sha256 else f"md5 `{f.md5}`" if f.md5 else "none published"
            out.append(f"| `{f.filename}`{' (extracted)' if f.extract else ''} | <{f.url}> | {check} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
