"""Species assemblages from suitability: which species are predicted present in each cell.

Methods (``prediction.assemblage``):
- ``threshold``: species s is present where its suitability >= its own threshold (max-TSS on validation blocks);
- ``top_k``: the K most suitable species of each cell;
- ``average_k``: one threshold for all species, chosen so that the mean set size over cells is K.

All work on the uint8 suitability codes of :mod:`sdm.predict` (lazy Dask arrays) and return uint8 presence
(1 present, 0 absent, 255 no data).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from sdm.predict import NODATA, SCALE

METHODS = ("threshold", "top_k", "average_k")


def threshold_codes(thresholds) -> np.ndarray:
    """Probability thresholds -> the smallest uint8 code counted as present (code / 254 >= threshold)."""
    thresholds = np.nan_to_num(np.asarray(thresholds, dtype="float64"), nan=0.5)
    return np.clip(np.ceil(thresholds * SCALE - 1e-9), 0, SCALE).astype("int16")


def presence_threshold(suitability: xr.DataArray, thresholds) -> xr.DataArray:
    """Per-species thresholds (probabilities, one per species) -> presence."""
    codes = xr.DataArray(threshold_codes(thresholds), dims="species", coords={"species": suitability["species"]})
    presence = xr.where(suitability == NODATA, NODATA, (suitability >= codes).astype("uint8")).astype("uint8")
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


def average_k_code(suitability: xr.DataArray, k: float) -> int:
    """The single uint8 code threshold whose mean set size over valid cells is closest to ``k``.

    Exact: computed from the 255-bin histogram of the codes, one streaming pass over the chunks.
    """
    data = suitability.data if isinstance(suitability.data, da.Array) else da.from_array(suitability.values)
    counts, _ = da.histogram(data.ravel(), bins=np.arange(0, NODATA + 2), range=(0, NODATA + 1))
    counts = np.asarray(counts.compute() if hasattr(counts, "compute") else counts)
    n_species = suitability.sizes["species"]
    valid_values = counts[:NODATA]
    n_cells = valid_values.sum() / n_species
    if n_cells == 0:
        raise ValueError("no valid cell to choose an average-K threshold on")
    at_least = np.cumsum(valid_values[::-1])[::-1]  # values >= code c, for c = 0..254
    mean_set_size = at_least / n_cells
    return int(np.argmin(np.abs(mean_set_size - k)))


def presence_average_k(suitability: xr.DataArray, k: float) -> xr.DataArray:
    """One threshold for all species so that the mean set size is ``k`` -> presence."""
    if k <= 0:
        raise ValueError(f"prediction.k must be > 0 for average_k, got {k}")
    code = average_k_code(suitability, k)
    return presence_threshold(suitability, np.full(suitability.sizes["species"], code / SCALE))


def assemble(suitability: xr.DataArray, method: str, thresholds=None, k: float | None = None) -> xr.DataArray:
    """Presence (uint8, ``species``, ``y``, ``x``) by ``method``; see the module docstring."""
    if method == "threshold":
        presence = presence_threshold(suitability, thresholds)
    elif method == "top_k":
        presence = presence_top_k(suitability, int(k))
    elif method == "average_k":
        presence = presence_average_k(suitability, float(k))
    else:
        raise ValueError(f"prediction.assemblage must be one of {METHODS}, got '{method}'")
    presence.name = "presence"
    presence.attrs = {"long_name": f"predicted presence ({method})", "units": "1 present, 0 absent, 255 no data"}
    return presence
