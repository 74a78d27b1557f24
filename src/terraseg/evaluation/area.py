"""Area estimation and accuracy assessment from a stratified random sample of a class map.

Implements the estimators of Olofsson et al., "Good practices for estimating area and assessing
accuracy of land change", Remote Sensing of Environment 148 (2014) 42-57 (equations 2-10), for a
sample stratified by the map's classes: the error matrix in estimated area proportions, user's,
producer's and overall accuracy, and each class's area with standard errors and 95% confidence
intervals (normal approximation, z = 1.96). ``tests/test_area.py`` reproduces the paper's
numerical example. The sample itself is drawn by :func:`sample_points` (stratified random, with
proportional, equal or Neyman allocation; Cochran, "Sampling Techniques", 1977, section 5.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.errors import ConfigError, InputFileError

Z95 = 1.959964


@dataclass
class AreaEstimate:
    """Stratified estimates for K classes (map strata = reference classes = 0..K-1).

    Attributes:
        proportions: ``(K, K)`` error matrix in estimated area proportions (rows: map, columns: reference).
        area_proportion: ``(K,)`` estimated share of the total area per reference class, its SE.
        area_proportion_se: ``(K,)`` estimated share of the total area per reference class, its SE.
        area: ``(K,)`` estimated area per class and the half-width of its 95% interval (area units).
        area_ci: ``(K,)`` estimated area per class and the half-width of its 95% interval (area units).
        users: ``(K,)`` accuracies and 95% half-widths (NaN where undefined).
        users_ci: ``(K,)`` accuracies and 95% half-widths (NaN where undefined).
        producers: ``(K,)`` accuracies and 95% half-widths (NaN where undefined).
        producers_ci: ``(K,)`` accuracies and 95% half-widths (NaN where undefined).
        overall: overall accuracy and its 95% half-width.
        overall_ci: overall accuracy and its 95% half-width.
        n: ``(K,)`` sample size per stratum.
        unit: the area unit.
    """

    proportions: np.ndarray
    area_proportion: np.ndarray
    area_proportion_se: np.ndarray
    area: np.ndarray
    area_ci: np.ndarray
    users: np.ndarray
    users_ci: np.ndarray
    producers: np.ndarray
    producers_ci: np.ndarray
    overall: float
    overall_ci: float
    n: np.ndarray
    unit: str

    def to_dict(self, class_names: list[str]) -> dict[str, Any]:
        """JSON-ready figures per class name."""
        r = lambda v: None if not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {
            "method": "stratified estimators of Olofsson et al. 2014 (RSE 148), 95% intervals (z = 1.96)",
            "unit": self.unit,
            "overall_accuracy": r(self.overall),
            "overall_accuracy_ci95": r(self.overall_ci),
            "classes": {
                name: {
                    "sample_size": int(self.n[k]),
                    "area": r(self.area[k]),
                    "area_ci95": r(self.area_ci[k]),
                    "area_proportion": r(self.area_proportion[k]),
                    "area_proportion_se": r(self.area_proportion_se[k]),
                    "users_accuracy": r(self.users[k]),
                    "users_accuracy_ci95": r(self.users_ci[k]),
                    "producers_accuracy": r(self.producers[k]),
                    "producers_accuracy_ci95": r(self.producers_ci[k]),
                }
                for k, name in enumerate(class_names)
            },
            "error_matrix_area_proportions": [[r(v) for v in row] for row in self.proportions],
        }


def stratified_estimates(counts: np.ndarray, mapped: np.ndarray, unit_area: float = 1.0, unit: str = "pixels") -> AreaEstimate:
    """Estimates from sample counts ``n_ij`` (map stratum i, reference class j) and mapped sizes ``N_i``.

    Args:
        counts: ``(K, K)`` sample counts; rows are map classes (strata), columns reference classes.
        mapped: ``(K,)`` pixels mapped as each class (the strata sizes).
        unit_area: area of one pixel in ``unit`` (e.g. hectares).
        unit: name of the area unit.

    Returns:
        :class:`AreaEstimate`.

    Raises:
        ConfigError: shapes that do not match, or a stratum with mapped pixels but fewer than 2 samples.
    """
    n_ij = np.asarray(counts, dtype=np.float64)
    N = np.asarray(mapped, dtype=np.float64)
    K = len(N)
    if n_ij.shape != (K, K):
        raise ConfigError(f"area: the sample error matrix is {n_ij.shape}, expected {K} x {K}.")
    n_i = n_ij.sum(axis=1)
    bad = [k for k in range(K) if N[k] > 0 and n_i[k] < 2]
    if bad:
        raise ConfigError(f"area: map classes {bad} have mapped pixels but fewer than 2 reference samples; sample them.")
    W = N / N.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_i[:, None] > 0, n_ij / n_i[:, None], 0.0)  # n_ij / n_i.
        p = W[:, None] * share  # eq. 4
        p_ref = p.sum(axis=0)  # p.j
        var_terms = np.where(n_i[:, None] > 1, W[:, None] ** 2 * share * (1 - share) / (n_i[:, None] - 1), 0.0)
        se_p = np.sqrt(var_terms.sum(axis=0))  # eq. 10
        users = np.diag(share).copy()  # eq. 6
        users[n_i == 0] = np.nan
        var_u = np.where(n_i > 1, users * (1 - users) / (n_i - 1), np.nan)
        producers = np.diag(p) / p_ref  # eq. 7
        overall = float(np.trace(p))  # eq. 8
        var_o = float(np.nansum(W**2 * users * (1 - users) / np.maximum(n_i - 1, 1)))
        # producer's accuracy variance (eq. 3 of Olofsson et al. 2013 / Card 1982 form used in the 2014 paper)
        Nj = np.array([np.sum(N * share[:, j]) for j in range(K)])  # estimated reference class size
        var_p = np.full(K, np.nan)
        for j in range(K):
            if Nj[j] <= 0 or n_i[j] < 2:
                continue
            term1 = N[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
            others = [i for i in range(K) if i != j and n_i[i] > 1]
            term2 = producers[j] ** 2 * sum(N[i] ** 2 * share[i, j] * (1 - share[i, j]) / (n_i[i] - 1) for i in others)
            var_p[j] = (term1 + term2) / Nj[j] ** 2
    total_area = N.sum() * unit_area
    return AreaEstimate(
        p,
        p_ref,
        se_p,
        p_ref * total_area,
        Z95 * se_p * total_area,
        users,
        Z95 * np.sqrt(var_u),
        producers,
        Z95 * np.sqrt(var_p),
        overall,
        Z95 * np.sqrt(var_o),
        n_i.astype(int),
        unit,
    )


def allocate(
    mapped: np.ndarray,
    n: int,
    allocation: str = "proportional",
    min_per_class: int = 0,
    expected_accuracy: float | list[float] = 0.9,
) -> np.ndarray:
    """Sample size per stratum (map class) for ``n`` points.

    Args:
        mapped: ``(K,)`` pixels per map class.
        n: total sample size.
        allocation: 'proportional' (to mapped area), 'equal', or 'neyman' (to ``N_h * S_h`` with ``S_h = sqrt(U_h (1 -
            U_h))`` from the expected user's accuracies U_h; Cochran 1977, 5.5).
        min_per_class: at least this many points in every mapped class (Olofsson et al. recommend 50-100 for rare
            classes), taken from the largest strata.
        expected_accuracy: U_h, one value or one per class (neyman).

    Returns:
        ``(K,)`` integer sample sizes summing to ``n`` (0 for unmapped classes).

    Raises:
        ConfigError: an unknown allocation, or ``n`` too small for ``min_per_class``.
    """
    N = np.asarray(mapped, dtype=np.float64)
    present = N > 0
    if allocation == "proportional":
        w = N.copy()
    elif allocation == "equal":
        w = present.astype(np.float64)
    elif allocation == "neyman":
        U = np.broadcast_to(np.asarray(expected_accuracy, dtype=np.float64), N.shape)
        w = N * np.sqrt(U * (1 - U))
    else:
        raise ConfigError(f"unknown allocation '{allocation}'; use proportional, equal or neyman.")
    if min_per_class * int(present.sum()) > n:
        raise ConfigError(f"a sample of {n} points cannot give {min_per_class} to each of {int(present.sum())} mapped classes.")
    alloc = np.where(present, min_per_class, 0).astype(int)
    rest = n - alloc.sum()
    if rest > 0 and w.sum() > 0:
        share = w / w.sum() * rest
        extra = np.floor(share).astype(int)
        for k in np.argsort(-(share - extra))[: rest - extra.sum()]:  # largest remainders
            extra[k] += 1
        alloc += extra
    return np.minimum(alloc, N.astype(int))


def map_class_counts(path: str | Path, num_classes: int | None = None, block: int = 1024) -> tuple[np.ndarray, Any]:
    """Pixels per class id of a class raster (nodata excluded), read strip by strip, and the raster's info.

    Args:
        path: class raster (one band of class ids).
        num_classes: length of the counts (default: the largest id + 1).
        block: strip height in rows.
    """
    from rasterio.windows import Window

    from terraseg.data.windows import row_strips
    from terraseg.io.raster import open_raster, read_window

    with open_raster(path) as ds:
        counts = np.zeros(num_classes or 256, dtype=np.int64)
        for s in row_strips(ds.height, ds.width, block):
            ids = read_window(ds, Window(0, s.row, ds.width, s.height), [1], path=str(path))[0]
            ok = ids != ds.nodata if ds.nodata is not None else np.ones(ids.shape, bool)
            bc = np.bincount(ids[ok].ravel().astype(np.int64), minlength=len(counts))
            if len(bc) > len(counts):
                raise InputFileError(f"{path}: class id {len(bc) - 1} exceeds the {len(counts)} classes given.")
            counts += bc
        return counts, (ds.crs, ds.transform, ds.width, ds.height, ds.nodata)


def pixel_area(transform, crs) -> tuple[float, str]:
    """Area of one pixel in hectares for a projected CRS in metres, else in pixels.

    Args:
        transform: the raster's affine transform.
        crs: its CRS (rasterio), or None.
    """
    if crs is not None and crs.is_projected and abs(float(crs.linear_units_factor[1]) - 1.0) < 1e-9:
        return abs(transform.a * transform.e - transform.b * transform.d) / 1e4, "ha"
    return 1.0, "pixels"


def sample_points(
    path: str | Path,
    n: int,
    allocation: str = "proportional",
    min_per_class: int = 0,
    seed: int = 0,
    expected_accuracy: float = 0.9,
    block: int = 1024,
):
    """A stratified random sample of pixel centres of a class raster, for labelling.

    Two streamed passes: class counts; then, for each class, ``n_h`` ranks drawn without replacement
    among its ``N_h`` pixels (in raster order) pick the pixels strip by strip, so every pixel of a
    class has the same chance and memory is the sample, never the raster.

    Args:
        path: class raster.
        n: points in all.
        allocation: ``'proportional'``, ``'equal'`` or ``'neyman'`` (Olofsson et al. 2014).
        min_per_class: points at least per class.
        seed: sampling seed.
        expected_accuracy: the user's accuracy assumed by the Neyman allocation.
        block: strip height in rows.

    Returns:
        GeoDataFrame: ``map_class``, ``row``, ``col``, ``stratum_pixels``, geometry (pixel centres, raster CRS).
    """
    import geopandas as gpd
    from rasterio.windows import Window
    from shapely.geometry import Point

    from terraseg.data.windows import row_strips
    from terraseg.io.raster import open_raster, read_window

    counts, (crs, transform, W, H, nodata) = map_class_counts(path, None, block)
    K = int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 0
    counts = counts[:K]
    alloc = allocate(counts, n, allocation, min_per_class, expected_accuracy)
    rng = np.random.default_rng(seed)
    # each class's points: a uniform random subset of its pixels, chosen by ranks drawn up front
    chosen = {k: np.sort(rng.choice(int(counts[k]), size=int(alloc[k]), replace=False)) for k in range(K) if alloc[k] > 0}
    seen = np.zeros(K, dtype=np.int64)
    rows: list[tuple[int, int, int]] = []
    with open_raster(path) as ds:
        for s in row_strips(H, W, block):
            ids = read_window(ds, Window(0, s.row, W, s.height), [1], path=str(path))[0]
            for k, ranks in chosen.items():
                mask = ids == k
                if nodata is not None and k == nodata:
                    continue
                m = int(mask.sum())
                if m == 0:
                    continue
                lo, hi = np.searchsorted(ranks, [seen[k], seen[k] + m])
                if hi > lo:
                    r, c = np.nonzero(mask)
                    pick = ranks[lo:hi] - seen[k]
                    rows += [(k, int(r[i]) + s.row, int(c[i])) for i in pick]
                seen[k] += m
    geoms = [Point(*(transform * (c + 0.5, r + 0.5))) for _, r, c in rows]
    return gpd.GeoDataFrame(
        {
            "map_class": [k for k, _, _ in rows],
            "row": [r for _, r, _ in rows],
            "col": [c for _, _, c in rows],
            "stratum_pixels": [int(counts[k]) for k, _, _ in rows],
        },
        geometry=geoms,
        crs=crs,
    )


__all__ = ["AreaEstimate", "allocate", "map_class_counts", "pixel_area", "sample_points", "stratified_estimates"]


def estimate_area(
    map_path: str | Path,
    reference: str | Path,
    attribute: str,
    class_names: list[str] | None = None,
    mapping: dict[str, int] | None = None,
    num_classes: int | None = None,
) -> tuple[AreaEstimate, dict[str, Any]]:
    """Area and accuracy of a class map from reference points labelled by a person (``terraseg area``).

    Args:
        map_path: class raster (uint8 class ids, nodata excluded; e.g. from ``terraseg predict``).
        reference: points (GeoPackage/GeoJSON/shapefile, any CRS) with the reference class in ``attribute``.
        attribute: the column holding the reference class (ids, or names with ``mapping``).
        class_names: names for the report (default: those the raster carries, else c0, c1...).
        mapping: reference value -> class id, for string labels.
        num_classes: K (default: the largest id seen in the map or the sample + 1).

    Returns:
        ``(AreaEstimate, details)``: details hold the sample error matrix, stratum sizes and points skipped.

    Raises:
        InputFileError: unreadable files, no usable point.
        ConfigError: unknown labels, too few samples in a stratum.
    """
    import json

    from terraseg.io.raster import open_raster
    from terraseg.io.vector import read_vector

    counts, (crs, transform, W, H, nodata) = map_class_counts(map_path, None)
    pts = read_vector(reference)
    if attribute not in pts.columns:
        raise InputFileError(f"{reference}: no attribute '{attribute}' (columns: {', '.join(map(str, pts.columns))}).")
    if crs is not None and pts.crs is not None and pts.crs != crs:
        pts = pts.to_crs(crs)
    ref = []
    for v in pts[attribute]:
        if mapping is not None:
            if str(v) not in mapping:
                raise ConfigError(f"{reference}: reference label '{v}' is not in the mapping ({', '.join(mapping)}).")
            ref.append(int(mapping[str(v)]))
        else:
            try:
                ref.append(int(v))
            except (TypeError, ValueError):
                raise ConfigError(f"{reference}: reference label '{v}' is not a class id; pass a mapping (name=id).") from None
    inv = ~transform
    skipped = 0
    pairs = []
    with open_raster(map_path) as ds:
        for geom, r in zip(pts.geometry, ref):
            if geom is None or geom.is_empty:
                skipped += 1
                continue
            col, row = (int(np.floor(v)) for v in inv * (geom.x, geom.y))
            if not (0 <= row < H and 0 <= col < W):
                skipped += 1
                continue
            m = int(ds.read(1, window=((row, row + 1), (col, col + 1)))[0, 0])
            if nodata is not None and m == nodata:
                skipped += 1
                continue
            pairs.append((m, r))
        tag_names = json.loads(ds.tags(1).get("class_names", "[]") or "[]")
    if not pairs:
        raise InputFileError(f"{reference}: no reference point falls on a mapped pixel of {map_path}.")
    K = num_classes or max(int(np.nonzero(counts)[0].max()) + 1, max(max(p) for p in pairs) + 1)
    n_ij = np.zeros((K, K), dtype=np.int64)
    for m, r in pairs:
        n_ij[m, r] += 1
    unit_area, unit = pixel_area(transform, crs)
    est = stratified_estimates(n_ij, counts[:K], unit_area, unit)
    names = class_names or (tag_names if len(tag_names) == K else [f"c{k}" for k in range(K)])
    return est, {
        "class_names": names,
        "sample_error_matrix": n_ij.tolist(),
        "mapped_pixels": counts[:K].tolist(),
        "points_used": len(pairs),
        "points_skipped": skipped,
    }


__all__ += ["estimate_area"]
