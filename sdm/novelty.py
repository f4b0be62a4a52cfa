"""Extrapolation: how far each cell's climate lies from the climate the model was trained on.

MESS, the multivariate environmental similarity surface of Elith, Kearney & Phillips (2010, Methods in Ecology and
Evolution 1: 330-342). For one variable with value p in a cell, f is the percentage of the reference (training)
values below p and min / max the reference range; the similarity is

- 100 (p - min) / (max - min) when f = 0 (p at or below the minimum: 0 at the minimum, negative below it),
- 2 f when 0 < f <= 50,
- 2 (100 - f) when 50 <= f < 100 (100 at the median),
- 100 (max - p) / (max - min) when f = 100 (p at or above the maximum: negative above it),

and MESS is the minimum over the variables: in percent, at most 100; negative means a climate outside the training
range on at least one variable (the model extrapolates there). The variable reaching that minimum is the most
dissimilar variable (MoD).

The reference distribution is stored in the checkpoint as the percentiles 0..100 of each training variable (raw
units); f is interpolated linearly between them. A lower module: numpy and xarray only, no model.

A categorical variable (class codes such as land cover, the config's ``climate.categorical``) has no order, so the
formula above does not apply: its similarity is 100 for a class seen in training and :data:`UNSEEN_CLASS` (-100)
for any other (a code between two seen ones is as new as any), given the classes seen (the checkpoint's
``categories``).
"""

from __future__ import annotations

import logging

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

log = logging.getLogger(__name__)

MESS_ATTRS = {
    "long_name": "multivariate environmental similarity (MESS, Elith et al. 2010)",
    "units": "percent; at most 100, < 0 = climate outside the training range on at least one variable "
             "(-100 on a categorical variable: a class not seen in training)",
}
MOD_NODATA = -1
UNSEEN_CLASS = -100.0
"""Similarity of a categorical variable's class not seen in training (a seen class: 100)."""


def _check_reference(reference, n_variables: int) -> np.ndarray:
    reference = np.asarray(reference, dtype="float64")
    if reference.ndim != 2 or reference.shape[0] != n_variables or reference.shape[1] < 2:
        raise ValueError(f"reference quantiles must be (variables={n_variables}, levels >= 2), got "
                         f"{reference.shape}")
    if not np.isfinite(reference).all() or (np.diff(reference, axis=1) < 0).any():
        raise ValueError("reference quantiles must be finite and non-decreasing along each row")
    return reference


def constant_variables(reference) -> np.ndarray:
    """Bool per variable: its reference range is empty (max == min), so that MESS's formula divides by zero;
    :func:`mess` leaves such variables out."""
    reference = np.asarray(reference, dtype="float64")
    return reference[:, -1] <= reference[:, 0]


class _Piecewise:
    """One variable's similarity as the piecewise-linear function of p that it is, evaluated without a binary search.

    f interpolates linearly between the stored percentiles and every level is a knot, so on each interval between
    two distinct reference values the similarity (2 f or 2 (100 - f), as no interval straddles the median; outside
    the range 100 (p - min) / range or 100 (max - p) / range) is ``offset + slope (p - anchor)``. The interval of
    p is k = the number of distinct reference values below p (f counts the reference values < p: at a value that
    many training cells share, none of them count). numpy's ``searchsorted`` spent ~60 ns per value on its branchy
    binary search; here a regular grid of bins over [min, max] gives each value a first guess a few intervals short
    of k, and a few branch-free steps finish it (~10x faster in all).
    """

    BINS = (1024, 8192, 65536)
    MAX_STEPS = 6

    def __init__(self, quantiles: np.ndarray):
        q = np.asarray(quantiles, dtype="float64")
        levels = np.linspace(0.0, 100.0, len(q))
        if not np.isclose(levels, 50.0).any():  # an even number of levels: the median becomes a knot too
            q = np.r_[q, np.interp(50.0, levels, q)]
            levels = np.r_[levels, 50.0]
            order = np.argsort(levels, kind="stable")
            q, levels = q[order], levels[order]
        self.low, self.high = float(q[0]), float(q[-1])
        span = self.high - self.low
        self.distinct = np.unique(q)  # sorted
        first = np.searchsorted(q, self.distinct, side="left")  # index of each distinct value's first knot
        # interval k (0..U): p in (distinct[k-1], distinct[k]]; inside the range its left knot is the last knot of
        # distinct[k-1] (the right end of a run of equal percentiles), its right knot the first of distinct[k]
        n = len(self.distinct)
        self.offset = np.zeros(n + 1)
        self.slope = np.zeros(n + 1)
        self.anchor = np.zeros(n + 1)
        self.anchor[0], self.slope[0] = self.low, 100.0 / span
        self.anchor[n], self.slope[n] = self.high, -100.0 / span
        if n > 1:
            right = first[1:]
            left = right - 1
            f0, f1 = levels[left], levels[right]
            rate = (f1 - f0) / (q[right] - q[left])  # percent per unit of p
            upper = f0 >= 50.0  # intervals above the median: 200 - 2 f
            self.anchor[1:n] = q[left]
            self.offset[1:n] = np.where(upper, 200.0 - 2 * f0, 2 * f0)
            self.slope[1:n] = np.where(upper, -2 * rate, 2 * rate)
        self.edges = np.r_[self.distinct, np.inf]
        self.bins = self.start = None
        for bins in self.BINS:
            start, steps = self._guesses(bins)
            if steps <= self.MAX_STEPS:
                self.bins, self.start, self.steps = bins, start, steps
                self.scale = bins / span
                break

    def _guesses(self, bins: int) -> tuple[np.ndarray, int]:
        """First guesses of k per bin (bin b: the distinct values below the left edge of bin b - 1, a bin of slack
        for rounding), and the most steps any value of bin b still needs (to the right edge of bin b + 1)."""
        edges = self.low + (self.high - self.low) * np.arange(bins + 1) / bins
        below = np.searchsorted(self.distinct, edges, side="left")
        b = np.arange(bins)
        start = below[np.maximum(b - 1, 0)]
        end = np.where(b + 2 < bins, below[np.minimum(b + 2, bins)], len(self.distinct))
        return start.astype("int32"), int((end - start).max())

    def interval(self, p: np.ndarray) -> np.ndarray:
        """k: the number of distinct reference values < p (0 for NaN)."""
        if self.start is None:  # values packed too tightly for the bins (a few far outliers): binary search
            return np.searchsorted(self.distinct, p, side="left")
        x = (p - self.low) * self.scale
        k = self.start[np.fmin(np.fmax(x, 0.0), self.bins - 1).astype("int32")]  # fmax: NaN -> bin 0
        for _ in range(self.steps):
            k += self.edges[k] < p
        return k

    def __call__(self, p: np.ndarray) -> np.ndarray:
        k = self.interval(p)
        return self.offset[k] + self.slope[k] * (p - self.anchor[k])


class _Classes:
    """One categorical variable's similarity: 100 for a class seen in training, :data:`UNSEEN_CLASS` otherwise."""

    def __init__(self, seen):
        self.seen = np.unique(np.asarray(seen, dtype="float64"))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.where(np.isin(p, self.seen), 100.0, UNSEEN_CLASS)


def similarity(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """MESS similarity (percent, float64) of ``values`` (any shape, one variable, raw units) to a reference given by
    its ``quantiles`` (the percentiles 0..100 at evenly spaced levels, non-decreasing, max > min); NaN stays NaN."""
    p = np.asarray(values, dtype="float64")
    return _Piecewise(quantiles)(p.ravel()).reshape(p.shape)


SLICE = 16384
"""Cells per pass of :func:`mess`: its temporary arrays stay in the CPU caches."""


def mess(values: np.ndarray, reference_quantiles, *, most_dissimilar: bool = False, classes: dict | None = None):
    """MESS (percent, float64, ``(cells,)``) of ``values`` (``(variables, cells)``, raw units) against
    ``reference_quantiles`` (``(variables, levels)``: the percentiles 0..100 of each training variable, in the same
    order as ``values``' rows).

    ``classes`` ({row of ``values``: the class codes seen in training}) marks those variables categorical: 100 where
    a cell's class was seen, :data:`UNSEEN_CLASS` where not (their reference row is not used). NaN where any
    variable is NaN (a no-data cell). Continuous variables with a constant reference (max == min) are left out
    (see :func:`constant_variables`). With ``most_dissimilar``, also the int8 index (row of ``values``) of the
    variable with the lowest similarity per cell (MoD), ``MOD_NODATA`` (-1) where MESS is NaN.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (variables, cells), got shape {values.shape}")
    reference = _check_reference(reference_quantiles, values.shape[0])
    classes = {int(i): _Classes(seen) for i, seen in (classes or {}).items()}
    continuous = np.flatnonzero(~constant_variables(reference))
    used = sorted([(i, _Piecewise(reference[i])) for i in continuous if i not in classes] + list(classes.items()),
                  key=lambda pair: pair[0])
    n_cells = values.shape[1]
    missing = np.isnan(values).any(axis=0) if values.dtype.kind == "f" else np.zeros(n_cells, bool)
    # only the cells with data: on a global grid most cells are sea (about 3 in 4 at 30 arc-seconds)
    kept = None if not missing.any() else np.flatnonzero(~missing)
    data = values if kept is None else values[:, kept]
    n_kept = data.shape[1]
    lowest = np.full(n_kept, np.inf)
    index = np.full(n_kept, MOD_NODATA, dtype="int16")
    for a in range(0, n_kept, SLICE):
        b = min(a + SLICE, n_kept)
        low, at = lowest[a:b], index[a:b]
        for i, piecewise in used:
            s = piecewise(data[i, a:b].astype("float64"))
            lower = s < low
            np.copyto(low, s, where=lower)
            np.copyto(at, i, where=lower)
    if not used:
        lowest[:], index[:] = np.nan, MOD_NODATA
    if kept is not None:
        lowest, index = _scattered(lowest, kept, n_cells, np.nan), _scattered(index, kept, n_cells, MOD_NODATA)
    if not most_dissimilar:
        return lowest
    return lowest, index.astype("int8" if values.shape[0] <= 127 else "int16")


def _scattered(values: np.ndarray, at: np.ndarray, n: int, fill) -> np.ndarray:
    """``values`` placed at positions ``at`` of an array of ``n`` entries, ``fill`` elsewhere."""
    out = np.full(n, fill, dtype=values.dtype)
    out[at] = values
    return out


def _mess_block(values: np.ndarray, reference: np.ndarray, classes: dict) -> tuple[np.ndarray, np.ndarray]:
    """apply_ufunc kernel: (..., variable) -> float32 MESS (...), MoD (...)."""
    shape = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1]).T
    score, index = mess(flat, reference, most_dissimilar=True, classes=classes)
    return score.astype("float32").reshape(shape), index.reshape(shape)


def novelty_layers(cube: xr.DataArray, reference_quantiles, variables=None, categories: dict | None = None
                   ) -> xr.Dataset:
    """MESS and the most dissimilar variable of every cell of a climate ``cube`` (``variable``, ``y``, ``x``).

    ``reference_quantiles``: (variables, levels) percentiles 0..100 of the training climate in raw units, rows in
    the order of ``variables`` (default: the cube's variables). ``categories`` ({variable: class codes seen in
    training}) names the categorical variables, scored by class (see :func:`mess`). Returns a Dataset with ``mess``
    (float32 (``y``, ``x``), percent, NaN where any variable is missing) and ``most_dissimilar`` (int8 (``y``,
    ``x``), index into the ``variables`` listed in its ``flag_meanings``, -1 = no data), with the cube's CRS. Lazy
    when the cube is (a Dask task per spatial chunk, chunked like the cube; all variables of a chunk together).
    """
    variables = [str(v) for v in (cube["variable"].values if variables is None else variables)]
    reference = _check_reference(reference_quantiles, len(variables))
    categories = categories or {}
    unknown = sorted(set(categories) - set(variables))
    if unknown:
        raise ValueError(f"categories given for {unknown}, which are not among the variables {variables}")
    classes = {variables.index(v): np.asarray(seen, dtype="float64") for v, seen in categories.items()}
    constant = [v for v, c in zip(variables, constant_variables(reference)) if c and v not in categories]
    if constant:
        log.warning("MESS leaves out %s: constant in the training climate (max == min)", constant)
    cube = cube.sel(variable=variables)
    if cube.chunks is not None:
        cube = cube.chunk({"variable": -1})
    dtype = "int8" if len(variables) <= 127 else "int16"
    score, index = xr.apply_ufunc(
        _mess_block, cube, kwargs={"reference": reference, "classes": classes}, input_core_dims=[["variable"]],
        output_core_dims=[[], []], dask="parallelized", output_dtypes=["float32", dtype],
    )
    score.attrs = dict(MESS_ATTRS)
    index.attrs = {"long_name": "most dissimilar variable (MoD) of MESS",
                   "flag_values": list(range(len(variables))), "flag_meanings": " ".join(variables),
                   "units": f"index into flag_meanings; {MOD_NODATA} = no data"}
    out = xr.Dataset({"mess": score, "most_dissimilar": index}).transpose("y", "x")
    crs = cube.rio.crs
    return out.rio.write_crs(crs) if crs is not None else out


def mess_layer(cube: xr.DataArray, reference_quantiles, variables=None, categories: dict | None = None
               ) -> xr.DataArray:
    """The float32 (``y``, ``x``) ``mess`` layer of :func:`novelty_layers` (percent, NaN no data, with CRS)."""
    return novelty_layers(cube, reference_quantiles, variables, categories)["mess"]
