"""Classical per-pixel baselines (scikit-learn): features, the fitted estimator, and its bundle form.

Features of a pixel, in order: every band's value; the spectral indices asked for; optionally the
local mean and standard deviation of every band in a ``texture_window`` square (scipy's
``uniform_filter``, reflect at tile edges). Indices are normalised differences of two named bands,
``(a - b) / (a + b)``:

====== =============== ===========================================
name   bands (a, b)    source
====== =============== ===========================================
ndvi   nir, red        Rouse et al. 1974
ndwi   green, nir      McFeeters 1996
mndwi  green, swir1    Xu 2006
ndbi   swir1, nir      Zha et al. 2003
nbr    nir, swir2      Key & Benson 2006
====== =============== ===========================================

Band names come from the input spec (``data.band_names``): the generic names above, or Sentinel-2
names (B02 or B2 blue, B03 green, B04 red, B08 nir, B11 swir1, B12 swir2). Without ``data.band_names``,
the raster's band descriptions are used when every band has one.

The estimator is stored in the bundle with skops (``estimator.skops``), the persistence format
recommended by scikit-learn for untrusted files: loading admits only scikit-learn and numpy types,
never arbitrary pickled code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

from terraseg.config import BaselineConfig, ModelConfig
from terraseg.errors import BundleError, ConfigError

INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "mndwi": ("green", "swir1"),
    "ndbi": ("swir1", "nir"),
    "nbr": ("nir", "swir2"),
}
BAND_ALIASES: dict[str, set[str]] = {
    "blue": {"blue", "b", "b02", "b2"},
    "green": {"green", "g", "b03", "b3"},
    "red": {"red", "r", "b04", "b4"},
    "nir": {"nir", "n", "b08", "b8", "nir08"},
    "swir1": {"swir1", "swir16", "b11"},
    "swir2": {"swir2", "swir22", "b12"},
}


def band_index(band_names: list[str] | None, band: str) -> int | None:
    """0-based position of a generic band ('nir', 'red', ...) in ``band_names`` (None when absent).

    Args:
        band_names: the input's band names, or None.
        band: a generic band name.
    """
    for i, n in enumerate(band_names or []):
        if n.lower() in BAND_ALIASES.get(band, {band}):
            return i
    return None


class PixelFeatures:
    """Per-pixel feature maps from raw band values.

    Args:
        bands: input band count.
        band_names: names in band order (needed by indices).
        indices: index names (see :data:`INDICES`).
        texture_window: odd window side, or None.

    Raises:
        ConfigError: an unknown index, or an index needing a band the input lacks.
    """

    def __init__(self, bands: int, band_names: list[str] | None, indices: list[str], texture_window: int | None) -> None:
        self.bands, self.band_names, self.texture_window = bands, band_names, texture_window
        self.index_bands: list[tuple[str, int, int]] = []
        for name in indices:
            key = name.lower()
            if key not in INDICES:
                raise ConfigError(f"baseline.indices: unknown index '{name}'; known: {', '.join(INDICES)}.")
            pos = [band_index(band_names, b) for b in INDICES[key]]
            for b, p in zip(INDICES[key], pos):
                if p is None or p >= bands:
                    have = ", ".join(band_names) if band_names else "none (set data.band_names)"
                    raise ConfigError(f"baseline.indices: '{name}' needs band '{b}', which the input lacks (band names: {have}).")
            self.index_bands.append((key, pos[0], pos[1]))  # type: ignore[arg-type]

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        bands = list(self.band_names or [f"band{i + 1}" for i in range(self.bands)])[: self.bands]
        out = bands + [n for n, _, _ in self.index_bands]
        if self.texture_window:
            out += [f"{b}_mean{self.texture_window}" for b in bands] + [f"{b}_std{self.texture_window}" for b in bands]
        return out

    @property
    def margin(self) -> int:
        """Pixels of context a feature needs on each side (texture half-window)."""
        return (self.texture_window or 1) // 2

    def compute(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` raw values -> ``(F, H, W)`` float32 features."""
        x = image.astype(np.float32, copy=False)
        feats = [x]
        if self.index_bands:
            idx = np.empty((len(self.index_bands),) + x.shape[1:], np.float32)
            for k, (_, a, b) in enumerate(self.index_bands):
                den = x[a] + x[b]
                np.divide(x[a] - x[b], den, out=idx[k], where=den != 0)
                idx[k][den == 0] = 0.0
            feats.append(idx)
        if self.texture_window:
            w = self.texture_window
            mean = np.stack([uniform_filter(band, w, mode="reflect") for band in x])
            sq = np.stack([uniform_filter(band * band, w, mode="reflect") for band in x])
            feats += [mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))]
        return np.concatenate(feats).astype(np.float32, copy=False)


def make_estimator(model: ModelConfig, cfg: BaselineConfig, seed: int):
    """The unfitted scikit-learn estimator for a pixel arch.

    random_forest: ``RandomForestClassifier`` (Breiman 2001); logistic_regression: standardised
    features + multinomial ``LogisticRegression``; gradient_boosting: ``HistGradientBoostingClassifier``
    (LightGBM-style histogram boosting, Ke et al. 2017, inside scikit-learn).

    Args:
        model: the model config (``arch``).
        cfg: the baseline's settings.
        seed: the estimator's random state.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model.arch == "random_forest":
        return RandomForestClassifier(
            n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, n_jobs=cfg.n_jobs, random_state=seed
        )
    if model.arch == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=2000, random_state=seed))
    if model.arch == "gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=cfg.n_estimators, learning_rate=cfg.learning_rate, max_depth=cfg.max_depth, random_state=seed
        )
    raise ConfigError(f"model.arch '{model.arch}' is not a pixel baseline.")


SEQUENTIAL_BELOW = 65_536  # pixels (a 256 x 256 window) under which a forest predicts on one thread


class PixelModel:
    """A fitted per-pixel estimator with its features; a sliding-window backend.

    Called on a batch ``(N, C, h, w)`` of raw float32 values (the bundle's normalisation is 'none'),
    it returns ``(N, K, h, w)`` class probabilities, so the core's sliding-window predictor, evaluation
    and serving run it like a network.
    """

    def __init__(self, estimator: Any, features: PixelFeatures, num_classes: int) -> None:
        self.estimator, self.features, self.num_classes = estimator, features, num_classes

    def eval(self) -> PixelModel:  # same surface as an nn.Module where bundles need it
        """Itself: the surface of an ``nn.Module`` where bundles expect one."""
        return self

    def parameters(self):
        """No tensors: a scikit-learn estimator has none (the surface of an ``nn.Module``)."""
        return iter(())

    def proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, F)`` features -> ``(n, K)`` probabilities (classes never seen in training get 0)."""
        if X.shape[0] < SEQUENTIAL_BELOW:  # joblib's threads poll for results every few ms: slower than one thread here
            from joblib import parallel_config

            with parallel_config(backend="sequential"):
                p = self.estimator.predict_proba(X)
        else:
            p = self.estimator.predict_proba(X)
        out = np.zeros((X.shape[0], self.num_classes), np.float32)
        out[:, np.asarray(self.estimator.classes_, dtype=int)] = p
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n, _, h, w = batch.shape
        out = np.empty((n, self.num_classes, h, w), np.float32)
        for i in range(n):
            f = self.features.compute(batch[i])
            out[i] = self.proba(f.reshape(f.shape[0], -1).T).T.reshape(self.num_classes, h, w)
        return out

    def to_bytes(self) -> bytes:
        """The estimator in skops format."""
        import skops.io as sio

        return sio.dumps(self.estimator)

    @staticmethod
    def estimator_from_bytes(data: bytes, source: str) -> Any:
        """Load a skops estimator admitting only scikit-learn, numpy and scipy types.

        Raises:
            BundleError: the file holds other types (possible code) or is not skops data.
        """
        import skops.io as sio

        try:
            types = sio.get_untrusted_types(data=data)
            bad = [t for t in types if not t.startswith(("sklearn.", "numpy.", "scipy.", "builtins."))]
            if bad:
                raise BundleError(f"{source}: the estimator holds types terraseg does not load ({', '.join(bad[:3])}).")
            return sio.loads(data, trusted=types)
        except BundleError:
            raise
        except Exception as e:  # noqa: BLE001  (skops raises many kinds for a broken file)
            raise BundleError(f"{source}: the estimator cannot be read ({str(e).splitlines()[0]}).") from None
