"""terraseg: segmentation and scene classification for satellite and aerial imagery.

One preprocessing contract shared by training and prediction, correct geospatial windowing, a
one-file model bundle, and a CLI (``terraseg``) over the same Python API: :func:`train`,
:func:`predict`, :func:`evaluate` and :func:`compare` (:mod:`terraseg.api`), for segmentation and
scene classification alike.
"""

from terraseg.api import compare, evaluate, predict, train  # cheap: the work imports lazily
from terraseg.version import __version__

__all__ = ["__version__", "compare", "evaluate", "predict", "train"]
