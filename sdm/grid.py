"""The one grid of a run: CRS, cell size, bounds; cells of points; cell areas.

A grid is carried as an ``xr.DataArray`` template with dims (``y``, ``x``), cell-centre coordinates and a CRS
written by rioxarray, so that ``reproject_match`` can put every raster on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
import rioxarray  # noqa: F401  (registers the .rio accessor)
from affine import Affine
from pyproj import CRS, Transformer

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (km), used for cell areas on geographic grids."""


def make_grid(crs: str, resolution: float, bounds: tuple[float, float, float, float]) -> xr.DataArray:
    """A template grid (``y``, ``x``) of NaN, with ``bounds`` = (xmin, ymin, xmax, ymax) in ``crs`` units.

    ``resolution`` is the cell size in CRS units (metres for a projected CRS, degrees for EPSG:4326).
    Bounds are snapped outwards to whole cells.
    """
    if len(bounds) != 4:
        raise ValueError(f"grid.bounds {list(bounds)} must be [xmin, ymin, xmax, ymax] (4 numbers)")
    xmin, ymin, xmax, ymax = (float(b) for b in bounds)
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"grid.bounds {list(bounds)} must be [xmin, ymin, xmax, ymax] with xmax > xmin, ymax > ymin")
    if not resolution > 0:
        raise ValueError(f"grid.resolution must be > 0, got {resolution}")
    width = int(np.ceil((xmax - xmin) / resolution - 1e-9))
    height = int(np.ceil((ymax - ymin) / resolution - 1e-9))
    transform = Affine(resolution, 0.0, xmin, 0.0, -resolution, ymax)
    return template_from_transform(crs, transform, width, height)


def template_from_transform(crs, transform: Affine, width: int, height: int) -> xr.DataArray:
    """A NaN template (``y``, ``x``) for a north-up affine ``transform`` of ``width`` x ``height`` cells."""
    x = transform.c + transform.a * (np.arange(width) + 0.5)
    y = transform.f + transform.e * (np.arange(height) + 0.5)
    # a read-only view of one NaN: a template is a georeference, and a global km grid would otherwise hold 3.7 GB
    template = xr.DataArray(
        np.broadcast_to(np.float32(np.nan), (height, width)), dims=("y", "x"), coords={"y": y, "x": x}
    )
    # inplace: rioxarray otherwise copies the data, writing out the whole grid
    template.rio.write_crs(CRS.from_user_input(crs), inplace=True).rio.write_transform(transform, inplace=True)
    return template


def grid_of(da: xr.DataArray) -> xr.DataArray:
    """The grid template of any georeferenced array (``y``, ``x`` and a CRS)."""
    if da.rio.crs is None:
        raise ValueError("array has no CRS: write one with .rio.write_crs or fix the source raster")
    return template_from_transform(da.rio.crs, da.rio.transform(recalc=True), da.sizes["x"], da.sizes["y"])


def is_geographic(grid: xr.DataArray) -> bool:
    return CRS.from_user_input(grid.rio.crs).is_geographic


def _band_area_km2(lat_top: np.ndarray, lat_bottom: np.ndarray, width_deg: float, ellipsoid) -> np.ndarray:
    """Exact area (km2) of a band between two parallels, ``width_deg`` degrees of longitude wide, on an ellipsoid
    (via the authalic latitude: the area from the equator to latitude phi is proportional to q(phi))."""
    a, f = ellipsoid.semi_major_metre, 1 / ellipsoid.inverse_flattening if ellipsoid.inverse_flattening else 0.0
    e2 = f * (2 - f)
    e = np.sqrt(e2)

    def q(lat):
        s = np.sin(np.radians(np.clip(lat, -90, 90)))
        if e == 0:
            return 2 * s
        return (1 - e2) * (s / (1 - e2 * s * s) + np.log((1 + e * s) / (1 - e * s)) / (2 * e))

    return a * a / 2 * np.radians(width_deg) * np.abs(q(lat_top) - q(lat_bottom)) / 1e6


EQUAL_AREA_TOLERANCE = 1e-6
"""A projected CRS counts as equal-area when its areal scale factor is 1 within this at sampled cell centres."""


def _areal_scale(grid: xr.DataArray, crs: CRS, sample: int = 64) -> np.ndarray:
    """pyproj's areal scale factor (projected area / true area) at the cell centres, (y, x); NaN where undefined."""
    from pyproj import Proj

    xs, ys = grid["x"].values, grid["y"].values
    lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(*np.meshgrid(xs, ys))
    scale = np.full(lon.shape, np.nan)
    ok = np.isfinite(lon) & np.isfinite(lat)
    scale[ok] = Proj(crs).get_factors(lon[ok], lat[ok]).areal_scale
    return scale


def cell_area_km2(grid: xr.DataArray) -> xr.DataArray:
    """True area of every cell (km2), dims (``y``, ``x``), on the CRS's ellipsoid.

    - geographic grids: exact per row (the band between the cell's parallels, :func:`_band_area_km2`);
    - equal-area projections (areal scale factor 1, checked on a sample of cells): the resolution squared;
    - any other projection (UTM, Mercator, ...): the resolution squared divided by the projection's areal scale
      factor at each cell centre (``pyproj.Proj.get_factors``; exact as cells shrink). A cell that does not
      project back (outside the projection's domain) raises an error naming the CRS.
    """
    transform = grid.rio.transform(recalc=True)
    dx, dy = abs(transform.a), abs(transform.e)
    crs = CRS.from_user_input(grid.rio.crs)
    shape = (grid.sizes["y"], grid.sizes["x"])
    if crs.is_geographic:
        lat = grid["y"].values
        per_row = _band_area_km2(lat + dy / 2, lat - dy / 2, dx, crs.ellipsoid)
        area = np.broadcast_to(per_row[:, None].astype("float64"), shape)  # a read-only view: no grid-sized copy
    else:
        unit = crs.axis_info[0].unit_conversion_factor  # metres per CRS unit
        planar = dx * dy * unit**2 / 1e6
        step_y, step_x = max(1, shape[0] // 64), max(1, shape[1] // 64)
        sampled = _areal_scale(grid.isel(y=slice(None, None, step_y), x=slice(None, None, step_x)), crs)
        if np.nanmax(np.abs(sampled - 1)) <= EQUAL_AREA_TOLERANCE:
            area = np.broadcast_to(np.float64(planar), shape)
        else:
            scale = _areal_scale(grid, crs)
            if not np.isfinite(scale).all() or (scale <= 0).any():
                raise ValueError(f"cell areas: {int((~np.isfinite(scale) | (scale <= 0)).sum())} cells of the grid "
                                 f"lie outside the domain of its CRS {crs.name} ({crs.to_string()})")
            area = planar / scale
    return xr.DataArray(area, dims=("y", "x"), coords={"y": grid["y"], "x": grid["x"]}, name="cell_area_km2")


def points_to_cells(longitude, latitude, grid: xr.DataArray) -> pd.DataFrame:
    """Grid cell of WGS84 points: columns ``x``, ``y`` (cell centre in the grid CRS), ``row``, ``col``.

    Points outside the grid get ``row`` = ``col`` = -1 and NaN centres. A point on the grid's far edge (its last
    column's right side, its last row's lower or upper side) belongs to that last cell, as a point on the near edge
    belongs to the first. On a geographic grid longitudes are taken modulo 360 into the grid's span (-160 and 200
    are one meridian; on a grid spanning the globe, 180 is -180).
    """
    lon = np.asarray(longitude, dtype="float64")
    lat = np.asarray(latitude, dtype="float64")
    crs = CRS.from_user_input(grid.rio.crs)
    transform = grid.rio.transform(recalc=True)
    if crs.is_geographic:
        west = min(transform.c, transform.c + transform.a * grid.sizes["x"])
        with np.errstate(invalid="ignore"):
            lon = west + np.mod(lon - west, 360.0)
    transformer = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    px, py = transformer.transform(lon, lat)
    inverse = ~transform
    with np.errstate(invalid="ignore"):  # NaN or infinite coordinates: outside, below
        colf, rowf = inverse @ (np.asarray(px), np.asarray(py))
        col = np.floor(colf)
        row = np.floor(rowf)
        # the far edges close the grid: a point exactly on them is in the last cell (within rounding)
        col = np.where(np.isclose(colf, grid.sizes["x"], rtol=0, atol=1e-9), grid.sizes["x"] - 1, col)
        row = np.where(np.isclose(rowf, grid.sizes["y"], rtol=0, atol=1e-9), grid.sizes["y"] - 1, row)
    inside = (
        np.isfinite(col) & np.isfinite(row)
        & (col >= 0) & (col < grid.sizes["x"]) & (row >= 0) & (row < grid.sizes["y"])
    )
    row = np.where(inside, row, -1).astype("int64")
    col = np.where(inside, col, -1).astype("int64")
    xs = np.where(inside, grid["x"].values[np.clip(col, 0, None)], np.nan)
    ys = np.where(inside, grid["y"].values[np.clip(row, 0, None)], np.nan)
    return pd.DataFrame({"x": xs, "y": ys, "row": row, "col": col})


def cells_to_lonlat(x, y, grid: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 longitude and latitude (degrees) of grid-CRS coordinates."""
    transformer = Transformer.from_crs(CRS.from_user_input(grid.rio.crs), "EPSG:4326", always_xy=True)
    lon, lat = transformer.transform(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
    return np.asarray(lon), np.asarray(lat)
