"""Train/val/test manifests from a chip index: random, stratified, or spatial-block splits.

* ``random``: a seeded shuffle cut at the requested shares.
* ``stratified``: chips are grouped by the set of classes they contain (from the index's ``px_*``
  columns) and each group is shuffled and cut at the shares, so rare class combinations appear in
  every split (largest-remainder rounding per group).
* ``spatial``: chips are grouped into square blocks of ``block_size`` CRS units by the position of
  their centre; whole blocks are assigned to splits, so neighbouring chips never straddle train and
  test (spatial autocorrelation inflates random-split scores: Roberts et al., "Cross-validation
  strategies for data with temporal, spatial, hierarchical, or phylogenetic structure", Ecography
  2017). Chips that overlap a chip of another split (possible with a stride below the chip size)
  are removed from the training split, which keeps validation and test untouched.

Every split is reproducible from its seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from terraseg.config.prep import SplitConfig
from terraseg.errors import InputFileError
from terraseg.io.atomic import staged_dir
from terraseg.prepare.chip import read_index

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _cut(n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split labels (0, 1, 2) for ``n`` items in order, with largest-remainder rounding of the shares."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return np.repeat(np.arange(3), counts)


def assign_random(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split label per item (0 train, 1 val, 2 test) from a seeded permutation.

    Args:
        n: items.
        fractions: train/val/test shares summing to 1.
        seed: permutation seed.

    Returns:
        ``(n,)`` int8 split ids.
    """
    labels = np.empty(n, dtype=int)
    labels[np.random.default_rng(seed).permutation(n)] = _cut(n, fractions)
    return labels


def assign_stratified(keys: list[str], fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split label per item, cutting each group of equal ``keys`` at the shares.

    Args:
        keys: one group key per item (e.g. its dominant class).
        fractions: train/val/test shares.
        seed: shuffling seed.

    Returns:
        ``(n,)`` int8 split ids.
    """
    rng = np.random.default_rng(seed)
    labels = np.empty(len(keys), dtype=int)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    for k in sorted(groups):
        idx = np.asarray(groups[k])
        labels[idx[rng.permutation(len(idx))]] = _cut(len(idx), fractions)
    return labels


def assign_blocks(blocks: list[tuple], fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Split label per item such that items of one block share a split, with chip shares near ``fractions``.

    Blocks are visited in seeded random order; each goes to the split furthest below its target
    count (greedy), which keeps the chip shares close to the requested ones.

    Args:
        blocks: one block key per item (e.g. the spatial block of its centre).
        fractions: the shares of the groups (train/val/test, or K equal folds).
        seed: block-order seed.

    Returns:
        ``(n,)`` int8 split ids.
    """
    rng = np.random.default_rng(seed)
    members: dict[tuple, list[int]] = {}
    for i, b in enumerate(blocks):
        members.setdefault(b, []).append(i)
    keys = sorted(members)
    order = rng.permutation(len(keys))
    n = len(blocks)
    target = np.asarray(fractions) * n
    have = np.zeros(len(fractions))
    labels = np.empty(n, dtype=int)
    for j in order:
        idx = members[keys[j]]
        deficit = np.where(target > 0, (target - have) / np.maximum(target, 1e-9), -np.inf)
        s = int(np.argmax(deficit))
        labels[idx] = s
        have[s] += len(idx)
    return labels


def _presence_key(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.startswith("px_")]
    if not cols:
        raise InputFileError("chip index has no per-class pixel counts (px_* columns); chip with labels to stratify.")
    present = df[cols].to_numpy() > 0
    return ["+".join(c[3:] for c, p in zip(cols, row) if p) or "none" for row in present]


def _drop_straddling(df: pd.DataFrame, labels: np.ndarray) -> np.ndarray:
    """Remove (label -1) training chips whose footprint overlaps the interior of a val/test chip."""
    from shapely import STRtree
    from shapely.geometry import box

    keep = labels.copy()
    for _crs, part in df.groupby(df["crs"].fillna("")):
        idx = part.index.to_numpy()
        geoms = [box(*b) for b in part[["minx", "miny", "maxx", "maxy"]].to_numpy()]
        tree = STRtree(geoms)
        for k, i in enumerate(idx):
            if labels[i] != 0:
                continue
            for j in tree.query(geoms[k], predicate="intersects"):
                o = idx[j]
                if labels[o] != 0 and geoms[k].intersection(geoms[j]).area > 0:
                    keep[i] = -1
                    break
    return keep


def _buffered_out(df: pd.DataFrame, test: np.ndarray, train: np.ndarray, buffer: float) -> np.ndarray:
    """Training rows (a boolean mask) that lie within ``buffer`` CRS units of a test chip (or overlap one, buffer 0)."""
    from shapely import STRtree
    from shapely.geometry import box

    out = np.zeros(len(df), dtype=bool)
    for _crs, part in df.groupby(df["crs"].fillna("")):
        idx = part.index.to_numpy()
        geoms = [box(*b) for b in part[["minx", "miny", "maxx", "maxy"]].to_numpy()]
        test_geoms = [geoms[k] for k, i in enumerate(idx) if test[i]]
        if not test_geoms:
            continue
        tree = STRtree(test_geoms)
        for k, i in enumerate(idx):
            if not train[i]:
                continue
            near = tree.query(geoms[k].buffer(buffer) if buffer > 0 else geoms[k], predicate="intersects")
            if buffer > 0 and len(near):
                out[i] = True
            elif any(geoms[k].intersection(test_geoms[j]).area > 0 for j in near):
                out[i] = True
    return out


def spatial_kfold(cfg: SplitConfig, df: pd.DataFrame) -> dict[str, Path]:
    """K spatial folds with a buffer (blockCV; Roberts et al., "Cross-validation strategies for data with
    temporal, spatial, hierarchical, or phylogenetic structure", Ecography 40, 2017).

    Chips are grouped in square blocks of ``block_size`` by their centre; whole blocks go to K folds
    of near-equal chip counts. Fold k's test set is its chips; its training set is the chips of the
    other folds farther than ``buffer`` from every test chip (with 0, those whose footprint does not
    overlap one), so no training chip sits next to a test chip. Writes ``fold<k>/train`` and
    ``fold<k>/test`` manifests and ``split.json`` (counts, chips left out by the buffer), all or none.

    Args:
        cfg: split options (``folds``, ``block_size`` and ``buffer`` in CRS units, ``seed``, ``format``).
        df: the chip index (``minx``... ``maxy`` in CRS units, ``crs``; chip paths relative to the index).

    Returns:
        ``{"fold0/train": path, "fold0/test": path, ...}``.
    """
    size = float(cfg.block_size)  # type: ignore[arg-type]
    cx, cy = (df["minx"] + df["maxx"]) / 2, (df["miny"] + df["maxy"]) / 2
    blocks = list(zip(df["crs"].fillna("").astype(str), np.floor(cx / size).astype(int), np.floor(cy / size).astype(int)))
    folds = assign_blocks(blocks, tuple([1.0 / cfg.folds] * cfg.folds), cfg.seed)
    base = pd.DataFrame(df.drop(columns="geometry")) if "geometry" in df.columns else df
    index_dir = Path(cfg.index).resolve().parent
    for col in ("chip", "mask"):
        if col in base.columns:
            base = base.assign(**{col: [str(index_dir / p) if isinstance(p, str) and p else p for p in base[col]]})
    out = Path(cfg.out_dir)
    paths: dict[str, Path] = {}
    kept = {"method", "folds", "block_size", "buffer", "seed"}
    summary: dict[str, Any] = {"index": str(cfg.index)} | cfg.model_dump(include=kept) | {"per_fold": []}
    with staged_dir(out) as stage:
        for k in range(cfg.folds):
            test = folds == k
            near = _buffered_out(df, test, ~test, cfg.buffer)
            train = ~test & ~near
            (stage / f"fold{k}").mkdir()
            for name, mask in (("train", train), ("test", test)):
                f = stage / f"fold{k}" / f"{name}.{cfg.format}"
                part = base[mask]
                part.to_parquet(f, index=False) if cfg.format == "parquet" else part.to_csv(f, index=False)
                paths[f"fold{k}/{name}"] = out / f"fold{k}" / f.name
            summary["per_fold"].append(
                {"fold": k, "train": int(train.sum()), "test": int(test.sum()), "left_out_by_buffer": int(near.sum())}
            )
        (stage / "split.json").write_text(json.dumps(summary, indent=2))
    log.info("spatial %d-fold split of %s: %s", cfg.folds, cfg.index, summary["per_fold"])
    return paths


def folder_index(cfg: SplitConfig) -> pd.DataFrame:
    """An index of the image/mask pairs of a folder: ``chip``, ``mask`` (relative to the folder), ``scene``, ``group``.

    ``group`` is the pair's first sub-folder (e.g. the defect type ``MT_Crack``), the strata of 'stratified'.

    Args:
        cfg: split options (``index`` is the folder; ``layout``, ``include``).

    Returns:
        One row per pair, in the layout's order.

    Raises:
        InputFileError: a folder without pairs in the layout.
    """
    from terraseg.config import FolderSource
    from terraseg.data.sources import folder_pairs

    root = Path(cfg.index).resolve()
    pairs, _ = folder_pairs(FolderSource(root=str(root), layout=cfg.layout, include=cfg.include), root)
    rows = [
        {
            "chip": str(img.relative_to(root)),
            "mask": str(msk.relative_to(root)),
            "scene": img.stem,
            "group": img.relative_to(root).parts[0] if len(img.relative_to(root).parts) > 1 else "",
        }
        for img, msk in pairs
    ]
    return pd.DataFrame(rows, columns=["chip", "mask", "scene", "group"])


def split_index(cfg: SplitConfig) -> dict[str, Path]:
    """Write ``train``, ``val`` and ``test`` manifests (rows of the chip index) and ``split.json``.

    Args:
        cfg: :class:`terraseg.config.prep.SplitConfig` (index, method, shares, block size in CRS units, seed).

    Returns:
        Path of each manifest by split name.

    Raises:
        InputFileError: unreadable index, or an index without what the method needs.
    """
    folder = Path(cfg.index).is_dir()
    df = folder_index(cfg) if folder else read_index(cfg.index).reset_index(drop=True)
    if folder and cfg.method not in ("random", "stratified"):
        raise InputFileError(
            f"{cfg.index}: a folder of image pairs has no map coordinates; split it with --method random or stratified."
        )
    if df.empty:
        raise InputFileError(f"{cfg.index}: chip index is empty; nothing to split.")
    if cfg.method == "spatial-kfold":
        return spatial_kfold(cfg, df)
    if cfg.method == "random":
        labels = assign_random(len(df), cfg.fractions, cfg.seed)
    elif cfg.method == "stratified":
        keys = list(df["group"].astype(str)) if folder else _presence_key(df)
        labels = assign_stratified(keys, cfg.fractions, cfg.seed)
    else:
        size = float(cfg.block_size)  # type: ignore[arg-type]
        cx = (df["minx"] + df["maxx"]) / 2
        cy = (df["miny"] + df["maxy"]) / 2
        blocks = list(zip(df["crs"].fillna("").astype(str), np.floor(cx / size).astype(int), np.floor(cy / size).astype(int)))
        first = assign_blocks(blocks, cfg.fractions, cfg.seed)
        resolved = _drop_straddling(df, first)
        straddling = int((resolved == -1).sum())
        labels = resolved if cfg.straddling == "drop" else first  # 'assign': they stay in their centre's block split
    out = Path(cfg.out_dir)
    paths: dict[str, Path] = {}
    summary = {"index": str(cfg.index)} | cfg.model_dump(include={"method", "seed", "fractions", "block_size", "straddling"})
    summary |= {
        "dropped_straddling": int((labels == -1).sum()),
        "assigned_straddling": straddling if cfg.method == "spatial" and cfg.straddling == "assign" else 0,
    }
    base = pd.DataFrame(df.drop(columns="geometry")) if "geometry" in df.columns else df
    index_dir = Path(cfg.index).resolve() if folder else Path(cfg.index).resolve().parent
    with staged_dir(out) as stage:  # all manifests and split.json appear together, or none
        for k, name in enumerate(SPLITS):
            part = base[labels == k].copy()
            for col in ("chip", "mask"):  # manifests may live elsewhere: make chip paths absolute
                if col in part.columns:
                    part[col] = [str(index_dir / p) if isinstance(p, str) and p else p for p in part[col]]
            staged = stage / f"{name}.{cfg.format}"
            part.to_parquet(staged, index=False) if cfg.format == "parquet" else part.to_csv(staged, index=False)
            paths[name] = out / staged.name
            summary[name] = int(len(part))
        (stage / "split.json").write_text(json.dumps(summary, indent=2))
    log.info("split %s: %s", cfg.index, {s: summary[s] for s in SPLITS})
    return paths
