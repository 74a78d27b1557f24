"""What a user names as inputs, expanded to raster paths: files, folders, globs, ``.txt`` lists, STAC JSON.

Used by ``predict``, ``plan`` and project sources (``kind: project``) alike.
"""

from __future__ import annotations

from pathlib import Path

from terraseg.formats import INPUT_SUFFIXES, suffix

GLOB_CHARS = set("*?[")


def expand_inputs(specs: list[str], asset: str | None = None) -> list[tuple[str, str]]:
    """Turn what a user names as inputs into ``(path, output stem)`` pairs, in order, without duplicates.

    A spec is an image file (or a GDAL path such as ``/vsicurl/https://...``), a folder (its images,
    recursively, sorted), a glob pattern, a ``.txt`` list (one spec per line, relative to the list;
    ``#`` comments), or a STAC ItemCollection, Item or FeatureCollection JSON: one input per item,
    its asset ``asset`` (default: the first with role ``data`` or a GeoTIFF media type), remote
    ``http(s)`` hrefs read through GDAL's ``/vsicurl/`` and relative ones resolved against the JSON,
    outputs named by item id (asset files of many items often share a name, e.g. ``B04.tif``). See the
    STAC specification, https://github.com/radiantearth/stac-spec (item-spec, item collections).

    Args:
        specs: the inputs as given.
        asset: STAC asset key.

    Returns:
        ``[(path, stem)]``; ``stem`` names the outputs (the file's stem, or the STAC item id).

    Raises:
        InputFileError: a list or STAC file that cannot be read, a STAC item without the asset, a glob or
            folder that matches no image.
    """
    import glob

    from terraseg.errors import InputFileError
    from terraseg.io.raster import is_virtual

    out: list[tuple[str, str]] = []

    def add(path: str, stem: str | None = None) -> None:
        pair = (path, stem or Path(path).stem)
        if pair not in out:
            out.append(pair)

    def visit(spec: str, base: Path | None, depth: int = 0) -> None:
        if base is not None and not is_virtual(spec) and "://" not in spec and not Path(spec).is_absolute():
            spec = str(base / spec)
        if "://" in spec and not is_virtual(spec):
            spec = "/vsicurl/" + spec if spec.startswith(("http://", "https://")) else spec
        if is_virtual(spec):
            add(spec)
            return
        p = Path(spec)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in INPUT_SUFFIXES and f.is_file())
            if not files:
                raise InputFileError(f"{spec}: folder holds no images ({', '.join(sorted(INPUT_SUFFIXES))}).")
            for f in files:
                add(f)
        elif GLOB_CHARS & set(spec) and not p.exists():
            files = sorted(glob.glob(spec, recursive=True))
            if not files:
                raise InputFileError(f"{spec}: pattern matches no file.")
            for f in files:
                visit(f, None, depth)
        elif p.suffix.lower() in (".txt", ".lst") and p.is_file() and depth < 4:
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    visit(line, p.parent, depth + 1)
        elif p.suffix.lower() in (".json", ".geojson") and p.is_file():
            for path, stem in stac_assets(p, asset):
                add(path, stem)
        else:
            add(spec)

    for spec in specs:
        visit(str(spec), None)
    return out


def stac_assets(path: Path, asset: str | None = None) -> list[tuple[str, str]]:
    """``(GDAL path, item id)`` of one asset per item of a STAC ItemCollection / FeatureCollection / Item JSON.

    Args:
        path: the JSON file.
        asset: asset key (default: first asset with role 'data' or a GeoTIFF media type).

    Returns:
        One pair per item, in the file's order.

    Raises:
        InputFileError: not JSON, no STAC items, an item without the asset (or without any image asset).
    """
    import json

    from terraseg.errors import InputFileError

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{path}: not a readable JSON file ({e}).") from None
    items = doc.get("features") if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" else [doc]
    items = [it for it in items or [] if isinstance(it, dict) and isinstance(it.get("assets"), dict)]
    if not items:
        raise InputFileError(f"{path}: no STAC items with assets (expected a STAC Item or ItemCollection).")
    out = []
    for n, item in enumerate(items):
        assets = item["assets"]
        key = asset
        if key is None:

            def score(kv):
                a = kv[1] if isinstance(kv[1], dict) else {}
                return (0 if "data" in (a.get("roles") or []) else 1, 0 if "tiff" in str(a.get("type", "")).lower() else 1)

            images = [
                kv
                for kv in assets.items()
                if isinstance(kv[1], dict)
                and (
                    "tiff" in str(kv[1].get("type", "")).lower()
                    or "data" in (kv[1].get("roles") or [])
                    or suffix(str(kv[1].get("href", ""))) in INPUT_SUFFIXES
                )
            ]
            key = min(images, key=score)[0] if images else None
        if key is None or key not in assets or "href" not in assets[key]:
            raise InputFileError(
                f"{path}: item {item.get('id', n)} has no asset "
                + (f"'{asset}'." if asset else "holding an image; name one with --asset.")
            )
        href = str(assets[key]["href"])
        if href.startswith(("http://", "https://")):
            href = "/vsicurl/" + href
        elif href.startswith("file://"):
            href = href[len("file://") :]
        elif not href.startswith("/"):
            href = str(path.parent / href)
        out.append((href, str(item.get("id") or Path(href).stem)))
    return out


__all__ = ["expand_inputs", "stac_assets"]
