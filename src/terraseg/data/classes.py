"""Scene-classification data: images in class folders, on disk or inside a zip archive.

Layouts (see :class:`terraseg.config.ClassFolderSource`): plain class folders (EuroSAT), the Intel
scene layout (``seg_train``/``seg_test``; Intel Scene Classification Challenge) and DeepSat SAT-6
(``trn``/``val``/``tst``; Basu et al., SIGSPATIAL 2015). Images of any band count are read with
rasterio (TIFF, and everything inside zips through GDAL's ``/vsizip/``) or Pillow (PNG/JPEG).

Sample dict: ``image`` float32 ``(C, S, S)`` normalised and resized to the window ``S``, ``label``
int64 class id, ``path`` the source.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from terraseg.config import ClassFolderSource, ExperimentConfig
from terraseg.data.normalize import NormStats, compute_stats, normalize
from terraseg.errors import InputFileError
from terraseg.formats import IMAGE_SUFFIXES
from terraseg.io.images import read_image
from terraseg.io.raster import valid_mask
from terraseg.settings import resolve_data_path

SPLIT_DIRS = {
    "intel": {"train": "seg_train", "val": "seg_train", "test": "seg_test"},
    "sat6": {"train": "trn", "val": "val", "test": "tst"},
}


@dataclass(frozen=True)
class ClassItem:
    """One labelled image: ``path`` (a file, or ``<archive>.zip/<member>``) and its class id."""

    path: str
    label: int


def read_any(path: str) -> np.ndarray:
    """Read an image as ``(C, H, W)`` in its stored dtype; a member of a zip (``<archive>.zip/<member>``)
    through rasterio and GDAL's ``/vsizip/``.

    Args:
        path: image file or ``<archive>.zip/<member>``.

    Returns:
        ``(C, H, W)`` array in the stored dtype.

    Raises:
        InputFileError: missing or undecodable file.
    """
    path = str(path)
    lower = path.lower()
    if ".zip/" in lower and not Path(path).exists():
        path = "/vsizip/" + path
    elif not path.startswith("/vsizip/"):
        return read_image(path)
    from terraseg.io.raster import info_of, open_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_raster(path) as ds:
            return ds.read(info_of(ds, path).data_bands)  # an alpha band is validity, not data


def _listing(root: Path) -> tuple[list[PurePosixPath], set[PurePosixPath]]:
    """Relative paths of every image, and of every folder, under a folder or inside a zip (one listing)."""
    if root.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(root) as z:
                entries = [(PurePosixPath(n), n.endswith("/")) for n in z.namelist()]
        except (zipfile.BadZipFile, OSError) as e:
            raise InputFileError(f"{root}: not a readable zip archive ({e}).") from None
    else:
        entries = [(PurePosixPath(p.relative_to(root).as_posix()), p.is_dir()) for p in sorted(root.rglob("*"))]
    files = [n for n, is_dir in entries if not is_dir and n.suffix.lower() in IMAGE_SUFFIXES]
    dirs = {n for n, is_dir in entries if is_dir} | {d for n, _ in entries for d in n.parents if d != PurePosixPath(".")}
    return files, dirs


def detect_class_layout(files: list[PurePosixPath]) -> str:
    """'intel' when a top folder is seg_train/seg_test, 'sat6' for trn/val/tst, else 'folders'.

    Args:
        files: image paths relative to the root (POSIX).

    Returns:
        'intel', 'sat6' or 'folders'.
    """
    tops = {f.parts[0] for f in files if len(f.parts) > 2}
    if tops & {"seg_train", "seg_test"}:
        return "intel"
    if tops & {"trn", "tst"}:
        return "sat6"
    return "folders"


def class_folders(src: ClassFolderSource, data_root: Path | None = None) -> tuple[Path, dict[str, list[str]]]:
    """The images of a class-folder source grouped by folder name: ``(root, {folder: [relative paths]})``.

    Args:
        src: the source (root folder or .zip, layout, split).
        data_root: root of relative paths.

    Raises:
        InputFileError: missing root, a class folder with no images, no class folders at all.
    """
    root = resolve_data_path(src.root, data_root)
    if not root.exists():
        raise InputFileError(f"{root}: class-folder data not found.")
    files, dirs = _listing(root)
    layout = detect_class_layout(files) if src.layout == "auto" else src.layout
    prefix = PurePosixPath(SPLIT_DIRS[layout][src.split]) if layout in SPLIT_DIRS else PurePosixPath()
    depth = len(prefix.parts) + 2  # <prefix>/<class>/<file>
    by_class: dict[str, list[str]] = {}
    for f in files:
        if len(f.parts) != depth or f.parts[: len(prefix.parts)] != prefix.parts:
            continue
        by_class.setdefault(f.parts[-2], []).append(str(f))
    # class folders that exist but hold no image
    for d in dirs:
        if len(d.parts) == depth - 1 and d.parts[: len(prefix.parts)] == prefix.parts and d.name not in by_class:
            raise InputFileError(f"{root}: class folder '{d}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if not by_class:
        raise InputFileError(f"{root}: no images in class folders under '{prefix or '.'}' (layout '{layout}').")
    return root, by_class


def class_items(
    src: ClassFolderSource, class_names: list[str], data_root: Path | None = None, require_all: bool = False
) -> list[ClassItem]:
    """List the labelled images of a class-folder source.

    Args:
        src: the source.
        class_names: the task's classes in id order (folder names map onto them,
        through ``src.mapping`` when given).
        require_all: every class must have images (training).

    Raises:
        InputFileError: missing root, a class folder with no images, a folder naming a class the task
        does not know, or (``require_all``) a class without images.
    """
    root, by_class = class_folders(src, data_root)
    ids = {n: i for i, n in enumerate(class_names)}
    mapping = src.mapping or {}
    unknown = sorted(f for f in by_class if mapping.get(f, f) not in ids)
    if unknown:
        raise InputFileError(
            f"{root}: class folder(s) {', '.join(unknown)} are not classes of this task ({', '.join(class_names)}); "
            "add them to `classes` or map them with `mapping`."
        )
    if require_all:
        missing = [n for n in class_names if n not in {mapping.get(f, f) for f in by_class}]
        if missing:
            raise InputFileError(f"{root}: no training images for class(es) {', '.join(missing)}.")
    base = f"{root.resolve()}/" if root.suffix.lower() == ".zip" else f"{root}/"
    return [ClassItem(base + f, ids[mapping.get(c, c)]) for c in sorted(by_class) for f in sorted(by_class[c])]


def stratified_split(items: list[ClassItem], fraction: float, seed: int) -> tuple[list[ClassItem], list[ClassItem]]:
    """Seeded hold-out of ``fraction`` of every class (at least one image per class when it has two).

    Args:
        items: labelled images.
        fraction: share held out per class, in [0, 1).
        seed: shuffling seed.

    Returns:
        ``(train, held_out)`` lists.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    labels = np.array([it.label for it in items])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = min(max(int(round(len(idx) * fraction)), 1 if len(idx) > 1 else 0), len(idx))
        val += [items[i] for i in sorted(idx[:n_val])]
        train += [items[i] for i in sorted(idx[n_val:])]
    return train, val


def class_items_of(cfg: ExperimentConfig, which: str) -> list[ClassItem]:
    """Labelled images of ``data.train`` / ``data.val`` / ``data.test``.

    Args:
        cfg: a classification config.
        which: ``'train'``, ``'val'`` or ``'test'``.
    """
    root = Path(cfg.data.data_root) if cfg.data.data_root else None
    names = [c.name for c in cfg.classes]
    return [it for src in getattr(cfg.data, which) for it in class_items(src, names, root, require_all=which == "train")]


def train_val_items(cfg: ExperimentConfig) -> tuple[list[ClassItem], list[ClassItem]]:
    """Training and validation images: ``data.val`` when given, else a seeded stratified ``val_fraction``.

    Args:
        cfg: a classification config (``data.val`` or ``data.val_fraction``, ``train.seed``).
    """
    train = class_items_of(cfg, "train")
    if cfg.data.val:
        return train, class_items_of(cfg, "val")
    if cfg.data.val_fraction <= 0:
        return train, []
    return stratified_split(train, cfg.data.val_fraction, cfg.train.seed)


def image_statistics(
    items: list[ClassItem], method: str, percentiles: tuple[float, float], max_pixels: int, seed: int, bands: int | None = None
) -> NormStats:
    """Per-band statistics from a seeded sample of the training images (at most 256 images read).

    Args:
        items: training images.
        method: 'meanstd', 'percentile' or 'none'.
        percentiles: low/high percentiles.
        max_pixels: pixels sampled in all.
        seed: sampling seed.
        bands: expected band count (None: the first image's).

    Returns:
        :class:`NormStats` in the images' value units.

    Raises:
        InputFileError: unreadable images, mixed band counts, no valid pixel.
    """
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(items), size=min(len(items), 256), replace=False)
    per = max(max_pixels // len(pick), 100)
    px = []
    for i in pick:
        img = load_checked(items[i].path, bands)
        flat = img.reshape(img.shape[0], -1)
        px.append(flat[:, rng.choice(flat.shape[1], size=min(per, flat.shape[1]), replace=False)])
    return compute_stats(np.concatenate(px, axis=1), method, percentiles)


def load_checked(path: str, bands: int | None) -> np.ndarray:
    """:func:`read_any` plus a band-count check.

    Args:
        path: image file or zip member.
        bands: expected band count, or None.

    Returns:
        ``(C, H, W)`` array in the stored dtype.

    Raises:
        InputFileError: unreadable, or ``bands`` given and different.
    """
    img = read_any(path)
    if bands is not None and img.shape[0] != bands:
        raise InputFileError(f"{path}: image has {img.shape[0]} bands but the model expects {bands}.")
    return img


def to_input(image: np.ndarray, stats: NormStats, size: int, valid: np.ndarray | None = None) -> torch.Tensor:
    """Raw ``(C, H, W)`` image -> normalised float32 ``(C, size, size)`` (bilinear, antialiased).

    The one preprocessing function of classification training, evaluation, prediction and serving.

    Args:
        image: raw pixels, any dtype.
        stats: the bundle's statistics.
        size: output side in pixels.
        valid: ``(H, W)`` bool, False for nodata (set to 0 after normalisation, as for segmentation); default: NaN
            pixels are invalid.

    Raises:
        BundleError: the band count differs from the statistics'.
    """
    x = torch.from_numpy(normalize(image, stats, valid if valid is not None else valid_mask(image, None)))
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x


class ClassificationDataset(Dataset):
    """Labelled images -> sample dicts; with ``augment``, a random resized crop and flips.

    Args:
        items: labelled images.
        size: output side in pixels.
        stats: normalisation.
        bands: expected
        band count (checked per image). augment/flips/crop_scale: see :class:`terraseg.config.DataConfig`.
        seed: base seed; each (epoch, index) draws its own generator.
        cache: keep decoded images in
        memory (small data sets such as Intel scenes: 1,680 x 150 x 150 x 3 bytes = 113 MB).
    """

    def __init__(
        self,
        items: list[ClassItem],
        size: int,
        stats: NormStats,
        bands: int | None,
        augment: bool = False,
        flips: str = "d4",
        crop_scale: tuple[float, float] = (0.6, 1.0),
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.items, self.size, self.stats, self.bands = items, size, stats, bands
        self.augment, self.flips, self.crop_scale, self.seed = augment, flips, crop_scale, seed
        self.epoch = 0
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops drawn (called at the start of every epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _raw(self, i: int) -> np.ndarray:
        if self._cache is None:
            return load_checked(self.items[i].path, self.bands)
        if i not in self._cache:
            self._cache[i] = load_checked(self.items[i].path, self.bands)
        return self._cache[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        epoch, i = divmod(i, len(self.items))  # indexes past the item count carry the epoch (EpochSampler)
        img = self._raw(i)
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch + epoch, i))
            h, w = img.shape[1:]
            area = h * w * rng.uniform(*self.crop_scale)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            ch, cw = min(h, int(round(np.sqrt(area / ratio)))), min(w, int(round(np.sqrt(area * ratio))))
            r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            x = to_input(img[:, r0 : r0 + ch, c0 : c0 + cw], self.stats, self.size)
            from terraseg.data import d4

            x = d4.apply(x, d4.random_view(rng, self.flips, x.shape[-1] == x.shape[-2])).contiguous()
        else:
            x = to_input(img, self.stats, self.size)
        return {"image": x, "label": torch.tensor(self.items[i].label, dtype=torch.int64), "path": self.items[i].path}
