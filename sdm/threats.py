"""Threat and protection layers: protected-area coverage and human pressure, put on the run's grid, summarised per
species at its records and over its predicted range.

The config's ``threats`` section names the layers (all optional; an absent layer means its features are left out,
never filled with a made-up value):

- ``protected_areas``: a raster of the protected fraction of each cell (0..1; for example WDPA coverage), one band
  (``band``: its name or 1-based number when the file has several). Cells without a value count as unprotected:
  0 before the layer is put on the grid (so a coarse cell's mean counts them), and 0 where the raster does not reach.
- ``pressures``: ``{name: {path, band}}``, any continuous layers (human footprint, built environment, night
  lights, forest loss); cells without a value are left out of the means.

Each layer is put on the grid with :func:`sdm.climate.resampling_for` (the mean of the covered cells onto a coarser
grid, bilinear onto a finer one), so shares stay shares.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

PROTECTED = "protected_areas"


def read_layer(path: str | Path, grid: xr.DataArray, band: str | int | None = None,
               name: str = "layer", fill: float | None = None) -> xr.DataArray:
    """One band of a raster, float32 (``y``, ``x``) on ``grid`` (NaN no data). ``band``: a band name (as
    :func:`sdm.climate.read_raster` harmonises it, or as written in the file) or a 1-based number; required when
    the file has several bands. ``fill``: the value of the file's no-data cells before resampling (None: they stay
    unknown, left out of a coarse cell's mean); grid cells beyond the file's extent stay NaN either way."""
    from sdm.climate import _on_grid, read_raster

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"threats.{name}: {path} not found")
    layer = read_raster(path)
    chosen = band_name([str(v) for v in layer["variable"].values], band, path, f"threats.{name}")
    template = grid.isel(variable=0, drop=True) if "variable" in grid.dims else grid
    chosen_band = layer.sel(variable=[chosen])
    if fill is not None:
        chosen_band = chosen_band.fillna(fill)
    out = _on_grid(chosen_band, template, categorical=[]).isel(variable=0, drop=True)
    out = out.assign_coords(x=template["x"].values, y=template["y"].values)
    return out.astype("float32").rename(name)


def band_name(names: list[str], band: str | int | None, path, key: str) -> str:
    """The variable name (of ``names``, a raster's harmonised band names) that ``band`` picks: its name (as
    :func:`sdm.climate.read_raster` harmonises it, or as written in the file), its 1-based number, or None for a
    file of one band. Raises ValueError naming the config ``key`` and the file otherwise."""
    from sdm.climate import harmonise_name

    if band is None:
        if len(names) > 1:
            raise ValueError(f"{key}: {path} has {len(names)} bands {names}; name one with 'band'")
        return names[0]
    if isinstance(band, int) or str(band).isdigit():
        if not 1 <= int(band) <= len(names):
            raise ValueError(f"{key}: band {band} of {path}, which has bands 1..{len(names)} {names}")
        return names[int(band) - 1]
    wanted = harmonise_name(str(band))
    if wanted not in names:
        raise ValueError(f"{key}: {path} has no band '{band}'; it has {names}")
    return wanted


def check_fraction(high: float, path, key: str) -> None:
    """Raise ValueError naming the config ``key`` and the file when a protected-area raster's largest value
    ``high`` is above 1 (a percentage, say) rather than a fraction of the cell."""
    if high > 1.0 + 1e-6:
        raise ValueError(f"{key}: {path} holds values up to {high:g}; expected the protected fraction of each cell "
                         "(0..1); divide a percentage by 100")


def protected_fraction(path: str | Path, grid: xr.DataArray, band: str | int | None = None) -> xr.DataArray:
    """The protected fraction of each cell of ``grid`` (float32 ``y``, ``x``, 0..1) from a coverage raster: the
    file's no-data cells count as unprotected (0) before resampling, so a coarse cell's mean is its protected share
    of the whole cell, and grid cells beyond the file's extent are 0 too."""
    protected = read_layer(path, grid, band, PROTECTED, fill=0.0)
    check_fraction(float(protected.max()), path, f"threats.{PROTECTED}")
    return protected.fillna(0.0).clip(0.0, 1.0)


def threat_layers(threats: dict | None, grid: xr.DataArray) -> dict[str, xr.DataArray]:
    """The config's ``threats`` section as layers on ``grid``: ``{"protected_areas": fraction 0..1 with no data as
    0 (:func:`protected_fraction`), pressure name: values (no data NaN, unknown)}``; empty when the section is
    absent."""
    threats = threats or {}
    layers = {}
    if threats.get(PROTECTED):
        entry = threats[PROTECTED]
        layers[PROTECTED] = protected_fraction(entry["path"], grid, entry.get("band"))
    for name, entry in (threats.get("pressures") or {}).items():
        layers[name] = read_layer(entry["path"], grid, entry.get("band"), f"pressures.{name}")
    return layers


def record_means(occurrences: pd.DataFrame, layers: dict[str, xr.DataArray]) -> pd.DataFrame:
    """Per species, the mean of each layer over its records (its occupied cells weighted by ``n_records``; cells
    without a value left out): ``protected_share_records`` for the protected areas, ``{name}_at_records`` for a
    pressure. Index: species, sorted."""
    rows, cols = occurrences["row"].to_numpy(), occurrences["col"].to_numpy()
    weight = occurrences["n_records"].to_numpy(dtype="float64")
    species = occurrences["species"].astype(str).to_numpy()
    out = {}
    for name, layer in layers.items():
        values = np.asarray(layer.values, dtype="float64")[rows, cols]
        ok = np.isfinite(values)
        frame = pd.DataFrame({"species": species, "sum": np.where(ok, values * weight, 0.0),
                              "weight": np.where(ok, weight, 0.0)}).groupby("species").sum()
        column = "protected_share_records" if name == PROTECTED else f"{name}_at_records"
        out[column] = frame["sum"] / frame["weight"].where(frame["weight"] > 0)
    return pd.DataFrame(out).rename_axis("species").sort_index()
