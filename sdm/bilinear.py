"""GDAL's bilinear warp between two axis-aligned grids of one CRS, as two passes of linear interpolation in numpy.

The ingest puts a coarse climate raster (ISIMIP's 0.5 degree) on a fine grid (30 arc-seconds) window by window.
GDAL's warper (``rasterio.warp.reproject``, through rioxarray) maps every target cell through its transformer and
weighs four source cells per cell and band: 32-45 ns per value on this project's 2-core machine, 60 % of the
ingest. Between grids of one CRS whose axes are parallel (no rotation) the mapping is affine per axis, so the
weights split into a column weight and a row weight: the source rows the window needs are interpolated to the
target's columns once, then each target row is a weighted sum of two of those rows (about 5 ns per value).

What GDAL computes, and so this: the target cell's centre in source pixel coordinates ``p`` (cell ``i`` spans
``i .. i + 1``); the source cells ``floor(p - 0.5)`` and the next weighted ``1 - w`` and ``w``; within half a cell of
the source's first cell, cells 0 and 1 weighted 1 and 0; within half a cell of its last, the last cell alone; no
data where a target centre lies outside the source's extent or where one of the cells summed has no data (NaN:
the cube's rasters are read without a no-data value, so GDAL carries the NaN through its sums, even at weight 0,
as where the grids' cell centres line up). GDAL sums in float64 and so does the column pass; the row pass runs in
float32, so values equal GDAL's to a float32 rounding or two and cells without data are the same
(``tests/test_bilinear.py``; where centres line up only to the last bit, GDAL's inverse geotransform and the
coordinates here may put a few cells on different sides).
"""

from __future__ import annotations

import numpy as np
from affine import Affine


def applies(source_transform: Affine, target_transform: Affine, source_shape: tuple[int, int]) -> bool:
    """Whether :func:`bilinear` does GDAL's bilinear warp between these grids (the caller checks that the CRSs are
    equal): both axis-aligned (no rotation or shear) and the source at least 2 x 2 cells."""
    return (source_transform.b == source_transform.d == target_transform.b == target_transform.d == 0
            and min(source_shape) >= 2)


def axis_weights(centres: np.ndarray, origin: float, step: float, n_source: int) -> tuple:
    """For target cell centres along one axis (coordinates), in a source axis of ``n_source`` cells from ``origin``
    (the outer edge of its first cell) in steps of ``step`` (signed): (source cell below, source cell above, their
    weights, whether the centre lies inside the source's extent). The cells are indices into the whole source
    (int64); at the last cell the cell above is the same cell (summed once), at weight 0."""
    position = (np.asarray(centres, dtype="float64") - origin) / step
    shifted = position - 0.5
    low = np.floor(shifted).astype(np.int64)
    weight_high = shifted - low
    weight_low = 1.0 - weight_high
    last = low + 1 > n_source - 1  # the far edge: the last cell alone
    first = low < 0  # the near edge: GDAL takes cell 0 at weight 1 and cell 1 at weight 0 (and so its NaN)
    weight_low[last | first], weight_high[last | first] = 1.0, 0.0
    low = np.clip(low, 0, n_source - 1)
    inside = (position >= 0) & (position < n_source)
    return low, np.minimum(low + 1, n_source - 1), weight_low, weight_high, inside


def source_span(weights: tuple) -> slice:
    """The source cells (rows or columns) that targets with these :func:`axis_weights` read: a slice of the whole
    source, empty when no target centre lies inside it."""
    low, high, _, _, inside = weights
    if not inside.any():
        return slice(0, 0)
    return slice(int(low[inside].min()), int(high[inside].max()) + 1)


def shifted(weights: tuple, start: int) -> tuple:
    """:func:`axis_weights` with the source cells counted from ``start`` (a window of the source read from
    there): the weights stay those of the whole source, whichever window is read."""
    low, high, weight_low, weight_high, inside = weights
    return low - start, high - start, weight_low, weight_high, inside


def bilinear(values: np.ndarray, rows: tuple, cols: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """``values`` (band, source rows, source columns; float, NaN = no data) on the target grid: float32 (band,
    target rows, target columns), written into ``out`` when given. ``rows`` / ``cols``: :func:`axis_weights` of
    the target's row / column centres, their cells counted from the first row / column of ``values``
    (:func:`shifted`)."""
    row_low, row_high, row_w_low, row_w_high, row_inside = rows
    col_low, col_high, col_w_low, col_w_high, col_inside = cols
    n_bands, n_rows, n_cols = values.shape[0], len(row_low), len(col_low)
    if out is None:
        out = np.empty((n_bands, n_rows, n_cols), dtype="float32")
    out[:, ~row_inside] = np.nan
    if not row_inside.any() or not col_inside.any():
        out[...] = np.nan
        return out
    source = np.asarray(values, dtype="float64")
    # columns outside the source's extent (no data, below) may point outside the window read
    col_low, col_high = (np.clip(c, 0, source.shape[-1] - 1) for c in (col_low, col_high))
    # the column pass, on the source rows only: float64 (bands, source rows, target columns)
    along = source[..., col_low] * col_w_low
    paired = col_high != col_low  # a second cell, even at weight 0: GDAL multiplies it in, NaN and all
    along[..., paired] += source[..., col_high[paired]] * col_w_high[paired]
    along = along.astype("float32")
    # the row pass: runs of target rows between the same two source rows, each a broadcast sum of two of them
    inside = np.flatnonzero(row_inside)
    key = np.stack([row_low[inside], row_high[inside]])
    starts = inside[np.r_[True, (np.diff(inside) != 1) | (np.diff(key, axis=1) != 0).any(axis=0)]]
    ends = np.r_[starts[1:], inside[-1] + 1]
    scratch = np.empty((n_bands, int((ends - starts).max()), n_cols), dtype="float32")
    for start, end in zip(starts.tolist(), ends.tolist()):
        block = out[:, start:end]
        np.multiply(along[:, row_low[start], None, :], row_w_low[start:end, None].astype("float32"), out=block)
        if row_high[start] != row_low[start]:
            product = scratch[:, :end - start]
            np.multiply(along[:, row_high[start], None, :], row_w_high[start:end, None].astype("float32"),
                        out=product)
            block += product
    out[:, :, ~col_inside] = np.nan
    return out
