"""The one tiler (terraseg.data.windows): property tests over any extent, size and stride."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from terraseg.data.windows import grid_offsets, grid_windows, random_offset, row_strips
from terraseg.errors import ConfigError

sizes = st.integers(1, 300).flatmap(lambda size: st.tuples(st.integers(1, 1200), st.just(size), st.integers(1, size)))


def _coverage(extent: int, size: int, offsets: list[int], edge: str) -> np.ndarray:
    counts = np.zeros(extent, np.int64)
    for o in offsets:
        end = min(o + size, extent) if edge == "clip" else o + size
        counts[max(o, 0) : min(end, extent)] += 1
    return counts


@settings(max_examples=400, deadline=None)
@given(sizes, st.sampled_from(["pad", "shift", "clip"]))
def test_grid_offsets_cover_every_pixel(args, edge):
    extent, size, stride = args
    offs = grid_offsets(extent, size, stride, edge)
    assert offs[0] == 0 and offs == sorted(set(offs))
    assert (_coverage(extent, size, offs, edge) >= 1).all()  # no pixel is ever dropped
    steps = np.diff(offs)
    if edge == "shift" and extent > size:
        assert offs[-1] + size == extent  # flush with the end, nothing sticks out
        assert (steps[:-1] == stride).all() and 0 < steps[-1] <= stride
    else:
        assert (steps == stride).all()  # regular steps; only the last window reaches past the end
        assert offs[-1] < extent and offs[-1] + size >= extent
    if stride == size and edge in ("pad", "clip"):
        assert (_coverage(extent, size, offs, edge) == 1).all()  # a partition: each pixel exactly once


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(16, 300))
@example(9, 7, 1).via("one-pixel windows")
@example(700, 700, 16).via("the most windows drawn: 44 x 44")
def test_clip_windows_partition_the_grid(height, width, size):
    counts = np.zeros((height, width), np.int64)
    for w in grid_windows(height, width, size, edge="clip"):
        assert 1 <= w.height <= size and 1 <= w.width <= size
        assert w.row + w.height <= height and w.col + w.width <= width
        counts[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    assert (counts == 1).all()
    strips = list(row_strips(height, width, size))
    assert sum(s.height for s in strips) == height and all(s.width == width for s in strips)


@pytest.mark.parametrize(
    "extent,size,stride,edge,expected",
    [
        (10, 32, 32, "pad", [0]),
        (100, 32, 32, "pad", [0, 32, 64, 96]),
        (100, 32, 24, "shift", [0, 24, 48, 68]),
        (96, 32, 32, "shift", [0, 32, 64]),
        (257, 256, 192, "shift", [0, 1]),
        (100, 64, 48, "shift", [0, 36]),
        (1000, 256, 192, "shift", [0, 192, 384, 576, 744]),
        (11, 4, 2, "clip", [0, 2, 4, 6, 8]),
    ],
)
def test_grid_offsets_examples(extent, size, stride, edge, expected):
    assert grid_offsets(extent, size, stride, edge) == expected


def test_grid_offsets_refuse_bad_arguments():
    with pytest.raises(ConfigError, match="stride"):
        grid_offsets(100, 32, 40)
    with pytest.raises(ConfigError, match="stride"):
        grid_offsets(100, 32, 0)
    with pytest.raises(ConfigError, match="edge"):
        grid_offsets(100, 32, 32, "wrap")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 300), st.one_of(st.none(), st.integers(0, 499)), st.integers(0, 2**32 - 1))
def test_random_offset_keeps_windows_over_the_extent(extent, size, centre, seed):
    o = random_offset(np.random.default_rng(seed), extent, size, None if centre is None else min(centre, extent - 1))
    if size <= extent:
        assert 0 <= o and o + size <= extent  # inside the scene
    else:
        assert o <= 0 and o + size >= extent  # covers the whole scene
