"""Data preparation commands: chip, mosaic, rasterize, split, stats, download and CVAT import, each a stage
before training that reads and writes files window by window (``terraseg chip``, ``mosaic``, ...)."""
