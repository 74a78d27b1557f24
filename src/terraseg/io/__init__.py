"""Raster, image and vector I/O: window-by-window reads and writes, atomic outputs, clear errors.

GDAL's block cache defaults to 5% of RAM and fills up on large scenes (streaming reads and writes
touch each block about once, so a big cache buys nothing); it is capped at 256 MB unless the user
sets ``GDAL_CACHEMAX`` themselves. Set before the first raster is opened, which is when GDAL reads it.
"""

import os

os.environ.setdefault("GDAL_CACHEMAX", "256")
