"""Species assemblages from suitability: which species are predicted present in each cell.

Methods (``prediction.assemblage``):
- ``threshold``: species s is present where its suitability >= its own threshold (max-TSS on validation blocks);
- ``top_k``: the K most suitable species of each cell;
- ``average_k``: one threshold for all species, chosen so that the mean set size over cells is K.

All work on the uint8 suitability codes of :mod:`sdm.codes` (lazy Dask arrays; codes increase with probability,
so thresholds and rankings apply to them directly) and return uint8 presence (1 present, 0 absent, 255 no data).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from sdm.codes import NODATA, threshold_codes
from sdm.progress import shown

METHODS = ("threshold", "top_k", "average_k")


def presence_threshold(suitability: xr.DataArray, thresholds) -> xr.DataArray:
    """Per-species thresholds (probabilities, one per species) -> presence: decoded suitability >= threshold."""
    return _presence_from_codes(suitability, threshold_codes(thresholds))


def _presence_block(codes: np.ndarray, thresholds: np.ndarray, axis: int = 0) -> np.ndarray:
    """uint8 presence of a block of codes: 1 where a code is >= its species' threshold code (``thresholds``
    broadcast against ``codes``; species along ``axis``), 0 below, 255 where no data; two passes over the uint8
    codes, none for a block without data."""
    # no cell with data (sea): no-data is the same for every species, so the first species' codes tell
    if codes.size and (np.take(codes, 0, axis=axis) == NODATA).all():
        return np.full(codes.shape, NODATA, dtype="uint8")
    presence = np.greater_equal(codes, thresholds).view(np.uint8)
    np.copyto(presence, np.uint8(NODATA), where=codes == NODATA)
    return presence


def _presence_from_codes(suitability: xr.DataArray, codes) -> xr.DataArray:
    """Presence where the suitability code is >= the species' code (one per species); lazy when the codes are."""
    axis = suitability.get_axis_num("species")
    shape = [1] * suitability.ndim
    shape[axis] = -1
    thresholds = np.clip(np.asarray(codes), 0, NODATA).astype("uint8").reshape(shape)
    data = suitability.data
    if isinstance(data, da.Array):  # the thresholds chunked like the species axis, broadcast over the others
        thresholds = da.from_array(thresholds, chunks=[data.chunks[axis] if i == axis else (1,)
                                                       for i in range(data.ndim)])
        presence = da.map_blocks(_presence_block, data, thresholds, axis=axis, dtype="uint8")
    else:
        presence = _presence_block(np.asarray(data, dtype="uint8"), thresholds, axis)
    presence = suitability.copy(data=presence)
    presence.attrs = {}
    return presence


def _top_k_block(block: np.ndarray, k: int) -> np.ndarray:
    n_species = block.shape[0]
    out = np.zeros(block.shape, dtype="uint8")
    if k >= n_species:
        out[:] = 1
    else:
        # argpartition on negative codes: the k largest per cell, no Python loop over cells
        top = np.argpartition(-block.astype("int16"), k - 1, axis=0)[:k]
        np.put_along_axis(out, top, 1, axis=0)
    out[block == NODATA] = NODATA
    return out


def presence_top_k(suitability: xr.DataArray, k: int) -> xr.DataArray:
    """The ``k`` most suitable species of each cell -> presence."""
    if k < 1:
        raise ValueError(f"prediction.k must be >= 1 for top_k, got {k}")
    data = suitability.data if isinstance(suitability.data, da.Array) else da.from_array(suitability.values)
    data = data.rechunk({0: -1})
    out = da.map_blocks(_top_k_block, data, k, dtype="uint8")
    return suitability.copy(data=out)


def average_k_code(suitability: xr.DataArray, k: float | str, thresholds=None) -> int:
    """The single uint8 code threshold whose mean set size over valid cells is closest to ``k``.

    Exact: computed from the 255-bin histogram of the codes, one streaming pass over the chunks (in fused mode, one
    model forward over the grid). ``k="auto"``: the mean set size of the per-species ``thresholds`` (max-TSS)
    assemblage, so that the two differ only in how the same number of presences is spread over species and cells;
    :data:`sdm.codes.NODATA` (no species present anywhere) when no species passes its own threshold in any cell
    (e.g. a lost climate).
    """
    return average_k_from_histograms(species_histograms(suitability), k, thresholds)


def average_k_from_histograms(histograms: np.ndarray, k: float | str, thresholds=None) -> int:
    """:func:`average_k_code` from (species, 256) code counts (:func:`code_histograms`) of every valid cell, or of
    a uniform sample of them: the mean set sizes are ratios, so a sample estimates them without bias."""
    if k == "auto":
        if thresholds is None:
            raise ValueError("prediction.k 'auto' needs the model's per-species thresholds")
        k = threshold_set_size(histograms, thresholds)
        if k == 0:
            return NODATA
    if float(k) <= 0:
        raise ValueError(f"prediction.k must be > 0 for average_k, got {k}")
    return _average_k_from_histograms(histograms, float(k))


def code_histograms(codes: np.ndarray) -> np.ndarray:
    """(species, 256) int64 counts of each uint8 code in ``codes`` (species, ...)."""
    n_species = codes.shape[0]
    flat = (np.arange(n_species, dtype="int64")[:, None] * 256 + codes.reshape(n_species, -1)).ravel()
    return np.bincount(flat, minlength=n_species * 256).reshape(n_species, 256)


def _species_histogram_block(block: np.ndarray) -> np.ndarray:
    return code_histograms(block)[None, None]


def species_histograms(suitability: xr.DataArray) -> np.ndarray:
    """(species, 256) counts of each uint8 code per species (code 255 = no data): one streaming pass."""
    data = suitability.data if isinstance(suitability.data, da.Array) else da.from_array(suitability.values)
    data = data.rechunk({0: -1})
    n_species = data.shape[0]
    parts = da.map_blocks(_species_histogram_block, data, dtype="int64", drop_axis=[0], new_axis=[2, 3],
                          chunks=((1,) * data.numblocks[1], (1,) * data.numblocks[2], (n_species,), (256,)))
    with shown("average-K thresholds (code histograms)"):
        return np.asarray(parts.sum(axis=(0, 1)).compute())


def _average_k_from_histograms(histograms: np.ndarray, k: float) -> int:
    valid_values = histograms[:, :NODATA].sum(axis=0)
    n_cells = valid_values.sum() / histograms.shape[0]
    if n_cells == 0:
        raise ValueError("no valid cell to choose an average-K threshold on")
    at_least = np.cumsum(valid_values[::-1])[::-1]  # values >= code c, for c = 0..254
    mean_set_size = at_least / n_cells
    return int(np.argmin(np.abs(mean_set_size - k)))


def threshold_set_size(histograms: np.ndarray, thresholds) -> float:
    """Mean set size over valid cells of the per-species ``thresholds`` assemblage, from code histograms."""
    codes = threshold_codes(thresholds)
    n_cells = histograms[0, :NODATA].sum()
    if n_cells == 0:
        raise ValueError("no valid cell")
    present = sum(histograms[s, codes[s]:NODATA].sum() for s in range(histograms.shape[0]))
    return float(present / n_cells)


def presence_average_k(suitability: xr.DataArray, k: float | str, thresholds=None, code: int | None = None
                       ) -> xr.DataArray:
    """One threshold for all species so that the mean set size is ``k`` -> presence; the threshold is
    :func:`average_k_code` unless its ``code`` is given (computed once for a scenario and shared by its passes)."""
    if code is None:
        code = average_k_code(suitability, k, thresholds)
    if code == NODATA:  # the same empty sets: no code reaches 255 outside no-data cells
        return xr.where(suitability == NODATA, NODATA, 0).astype("uint8")
    return _presence_from_codes(suitability, np.full(suitability.sizes["species"], code, dtype="int16"))


def assemble(suitability: xr.DataArray, method: str, thresholds=None, k: float | str | None = None,
             average_k: int | None = None) -> xr.DataArray:
    """Presence (uint8, ``species``, ``y``, ``x``) by ``method``; see the module docstring. ``average_k``: the
    ``average_k`` method's code threshold when already known (:func:`average_k_code`)."""
    if method == "threshold":
        presence = presence_threshold(suitability, thresholds)
    elif method == "top_k":
        if k == "auto":
            raise ValueError("prediction.k 'auto' applies to average_k only; give top_k an integer K")
        presence = presence_top_k(suitability, int(k))
    elif method == "average_k":
        presence = presence_average_k(suitability, k, thresholds, code=average_k)
    else:
        raise ValueError(f"prediction.assemblage must be one of {METHODS}, got '{method}'")
    presence.name = "presence"
    presence.attrs = {"long_name": f"predicted presence ({method})", "units": "1 present, 0 absent, 255 no data"}
    return presence
