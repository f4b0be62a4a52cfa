"""Per-region summaries of the indicator layers (``maps.regions``: any vector file of polygons and a name column,
for example the TDWG botanical countries).

Zonal statistics with exactextract: each cell counts with the fraction of it that the polygon covers times its
area on the ellipsoid (:func:`sdm.grid.cell_area_km2`, the cell areas of the species features), so a region's
mean is area-weighted and a cell split between two regions counts in both for its share. Cells without data
(NaN: sea, outside the grid's data) are left out of the means.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio)
import shapely
import xarray as xr

from sdm.grid import cell_area_km2
from sdm.indicators import CATEGORICAL_LAYERS, read_layer

log = logging.getLogger(__name__)


def read_regions(path: str | Path, name_column: str, crs) -> gpd.GeoDataFrame:
    """The polygons of ``path`` in ``crs``, one row per region name (parts of a name dissolved), invalid geometries
    repaired (``make_valid``; the count is logged), rows without a name or geometry dropped and counted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"maps.regions.path: {path} not found")
    regions = gpd.read_file(path)
    if name_column not in regions.columns:
        raise ValueError(f"maps.regions.name_column: {path} has no column '{name_column}'; its columns are "
                         f"{[c for c in regions.columns if c != 'geometry']}")
    if regions.crs is None:
        raise ValueError(f"maps.regions.path: {path} has no CRS")
    invalid = int((~regions.geometry.is_valid).sum())
    if invalid:
        log.info("%s: %d invalid geometries repaired (make_valid)", path, invalid)
        regions["geometry"] = regions.geometry.make_valid()
    usable = regions[name_column].notna() & regions.geometry.notna() & ~regions.geometry.is_empty
    if (~usable).any():
        log.warning("%s: %d rows without a name or a geometry left out", path, int((~usable).sum()))
    regions = regions.loc[usable, [name_column, "geometry"]].rename(columns={name_column: "region"})
    regions["region"] = regions["region"].astype(str)
    regions = regions.dissolve("region", as_index=False)
    regions = regions[regions.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
                      | regions.geometry.geom_type.eq("GeometryCollection")]
    return regions.to_crs(crs)


def coverage(template: xr.DataArray, regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """Which cells of ``template``'s grid each region covers, and how much: one row per region x cell with
    ``region``, ``cell`` (flat row-major index) and ``weight_km2`` = covered fraction (exactextract) x the cell's
    ellipsoidal area (:func:`sdm.grid.cell_area_km2`)."""
    from exactextract import exact_extract

    area = cell_area_km2(template)
    grid = template.copy(data=np.ones(template.shape, "float32")).rio.write_nodata(None)  # every cell, data or not
    cells = exact_extract(grid, regions, ["cell_id", "coverage"], include_cols=["region"], output="pandas")
    lengths = cells["cell_id"].map(len).to_numpy()
    cell = np.concatenate([np.asarray(c, dtype="int64") for c in cells["cell_id"]]) if lengths.sum() else \
        np.zeros(0, "int64")
    fraction = np.concatenate([np.asarray(c, dtype="float64") for c in cells["coverage"]]) if lengths.sum() else \
        np.zeros(0)
    return pd.DataFrame({"region": np.repeat(cells["region"].to_numpy(), lengths), "cell": cell,
                         "weight_km2": fraction * area.values.ravel()[cell]})


def region_summary(layers: dict[str, dict[str, Path]], regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """Area-weighted zonal statistics of every indicator and run.

    ``layers``: {indicator: {run: GeoTIFF}} on one grid. Returns one row per region x run x indicator:
    ``region``, ``run``, ``indicator``, ``mean`` (area-weighted over the covered cells with data; NaN for a
    categorical layer, :data:`sdm.indicators.CATEGORICAL_LAYERS`, whose codes have no mean), ``mode`` (for a
    categorical layer the area-weighted mode: the code covering the largest area, the higher code on a tie; NaN
    for the others), ``min``, ``max`` (over the covered cells with data), ``area_km2`` (the covered area of those
    cells). The coverage is computed once for the grid, so each layer costs a few array operations.
    """
    first = next(iter(next(iter(layers.values())).values()))
    template = read_layer(first)
    weights = coverage(template, regions)
    names = pd.Index(regions["region"].unique())
    code = names.get_indexer(weights["region"])
    cell, weight = weights["cell"].to_numpy(), weights["weight_km2"].to_numpy()
    frames = []
    for indicator, runs in layers.items():
        for run, path in runs.items():
            values = read_layer(path)
            if values.shape != template.shape:
                raise ValueError(f"{path}: not on the grid of {first}")
            v = values.values.ravel()[cell].astype("float64")
            ok = np.isfinite(v)
            area = np.bincount(code[ok], weights=weight[ok], minlength=len(names))
            total = np.bincount(code[ok], weights=(v * weight)[ok], minlength=len(names))
            extremes = pd.DataFrame({"code": code[ok], "v": v[ok]}).groupby("code")["v"].agg(["min", "max"])
            extremes = extremes.reindex(range(len(names)))
            categorical = indicator in CATEGORICAL_LAYERS
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(area > 0, total / area, np.nan)
            mode = _area_mode(code[ok], v[ok], weight[ok], len(names)) if categorical else np.full(len(names), np.nan)
            frames.append(pd.DataFrame({"region": names, "run": run, "indicator": indicator,
                                        "mean": np.full(len(names), np.nan) if categorical else mean, "mode": mode,
                                        "min": extremes["min"].to_numpy(), "max": extremes["max"].to_numpy(),
                                        "area_km2": area}))
    return pd.concat(frames, ignore_index=True)


def _area_mode(region: np.ndarray, value: np.ndarray, weight_km2: np.ndarray, n_regions: int) -> np.ndarray:
    """Per region (codes 0..n_regions-1), the value (a category code, a whole number >= 0) covering the largest
    area (km2 weights summed per value with one ``bincount``; the higher value on a tie); NaN for a region without
    cells."""
    codes = value.astype("int64")
    n_values = int(codes.max()) + 1 if len(codes) else 1
    areas = np.bincount(region * n_values + codes, weights=weight_km2,
                        minlength=n_regions * n_values).reshape(n_regions, n_values)
    largest = n_values - 1 - np.argmax(areas[:, ::-1], axis=1)  # the higher value on a tie
    return np.where(areas.sum(axis=1) > 0, largest, np.nan)


def regions_geojson(regions: gpd.GeoDataFrame, tolerance_deg: float = 0.05) -> dict:
    """The regions as GeoJSON in longitude / latitude for the maps, simplified by ``tolerance_deg`` degrees
    (topology kept) so that the outline layer stays small."""
    geographic = regions.to_crs("EPSG:4326")
    simplified = geographic.geometry.simplify(tolerance_deg, preserve_topology=True)
    geographic["geometry"] = shapely.set_precision(simplified.values, 0.001)  # about 100 m: far below a cell
    geographic = geographic[~geographic.geometry.is_empty]
    return geographic.__geo_interface__
