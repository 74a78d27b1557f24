"""Raster, image and vector I/O: window-by-window reads and writes, atomic outputs, clear errors."""
