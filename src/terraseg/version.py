"""The installed terraseg version (the package metadata), written into every bundle and served by the API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("terraseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
