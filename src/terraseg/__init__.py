"""terraseg: segmentation and scene classification for satellite and aerial imagery.

One preprocessing contract shared by training and prediction, correct geospatial windowing, a
one-file model bundle, and a CLI (``terraseg``) over the same Python API.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("terraseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
