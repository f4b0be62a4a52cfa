"""Rasters put on the display grid: Web Mercator (EPSG:3857), the CRS Leaflet draws in, so that an
``L.imageOverlay`` stretched between its latitude/longitude corners lands exactly on its cells; and the subsampled
values behind the click popups."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rioxarray  # noqa: F401 (the .rio accessor)
import xarray as xr
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, transform

DISPLAY_MAX_PX = 2048
"""Longest side, in pixels, of a layer's PNG; larger rasters are shown at a coarser resolution."""
POPUP_MAX_VALUES = 250_000
"""Most values per layer embedded for the click popup; the display grid is subsampled above that."""


def read_display_grid(path: Path) -> dict:
    """A single-band GeoTIFF reprojected to EPSG:3857 (nearest neighbour, NaN outside data).

    Returns ``values`` (float32 ``(y, x)``), ``x0``/``y0`` (top-left corner, metres), ``dx``/``dy`` (cell size,
    metres, both positive) and ``bounds`` (``[[south, west], [north, east]]``, degrees).
    """
    da = _read_for_display(Path(path), DISPLAY_MAX_PX)
    merc = to_web_mercator(da, DISPLAY_MAX_PX, np.nan)
    t = merc.rio.transform()
    x0, y0, dx, dy = t.c, t.f, t.a, -t.e
    return {
        "values": np.asarray(merc.values, dtype="float32"),
        "x0": float(x0),
        "y0": float(y0),
        "dx": float(dx),
        "dy": float(dy),
        "bounds": lonlat_bounds(merc),
    }


def _read_for_display(path: Path, max_px: int) -> xr.DataArray:
    """A single-band GeoTIFF as float32 (``y``, ``x``, NaN outside data, CRS set), read at no more than twice
    ``max_px`` cells a side: a larger raster is read decimated (nearest; GDAL takes the COG's overviews), so that a
    kilometre-grid layer (2.3e8 cells on a quarter of the globe) never comes into memory whole for a picture of at
    most ``max_px`` pixels a side."""
    import rasterio
    from affine import Affine

    with rasterio.open(path) as src:
        if src.count != 1:
            raise ValueError(f"{path}: expected a single-band GeoTIFF, found {src.count} bands")
        if src.crs is None:
            raise ValueError(f"{path}: GeoTIFF has no CRS")
        factor = max(1, math.floor(max(src.width, src.height) / (2 * max_px)))
        height, width = max(1, src.height // factor), max(1, src.width // factor)
        values = src.read(1, out_shape=(height, width), masked=True, resampling=Resampling.nearest)
        transform_ = src.transform * Affine.scale(src.width / width, src.height / height)
        crs = src.crs
    values = np.ma.filled(values.astype("float32"), np.nan)
    x = transform_.c + transform_.a * (np.arange(width) + 0.5)
    y = transform_.f + transform_.e * (np.arange(height) + 0.5)
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": y, "x": x})
    return da.rio.write_crs(crs).rio.write_transform(transform_)


def to_web_mercator(da: xr.DataArray, max_px: int, nodata) -> xr.DataArray:
    """``da`` (``y``, ``x``, with a CRS) reprojected to EPSG:3857 by nearest neighbour, at most ``max_px`` pixels a
    side; geographic grids are cut at +-85 degrees first (Web Mercator is undefined at the poles)."""
    if da.rio.crs.is_geographic:
        left, bottom, right, top = da.rio.bounds()
        if bottom < -85.0 or top > 85.0:
            da = da.rio.clip_box(left, max(bottom, -85.0), right, min(top, 85.0))
    _, width, height = calculate_default_transform(da.rio.crs, "EPSG:3857", da.rio.width, da.rio.height,
                                                   *da.rio.bounds())
    scale = min(1.0, max_px / max(width, height))
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return da.rio.reproject("EPSG:3857", shape=shape, resampling=Resampling.nearest, nodata=nodata)


def lonlat_bounds(merc: xr.DataArray) -> list[list[float]]:
    """``[[south, west], [north, east]]`` (degrees) of an EPSG:3857 raster: the corners of a Leaflet overlay."""
    left, bottom, right, top = merc.rio.bounds()
    lons, lats = transform("EPSG:3857", "EPSG:4326", [left, right], [bottom, top])
    return [[float(lats[0]), float(lons[0])], [float(lats[1]), float(lons[1])]]


def popup_grid(grid: dict) -> dict:
    """The display grid subsampled (block centres) to at most ``POPUP_MAX_VALUES`` values, as JSON-ready dict."""
    values = grid["values"]
    h, w = values.shape
    k = max(1, math.ceil(math.sqrt(h * w / POPUP_MAX_VALUES)))
    while math.ceil(h / k) * math.ceil(w / k) > POPUP_MAX_VALUES:
        k += 1
    rows = np.minimum(np.arange(0, h, k) + k // 2, h - 1)
    cols = np.minimum(np.arange(0, w, k) + k // 2, w - 1)
    sub = values[np.ix_(rows, cols)]
    flat = []
    for v in sub.ravel().tolist():
        if v != v or v in (math.inf, -math.inf):
            flat.append(None)
        else:
            r = round(v, 4)
            flat.append(int(r) if r == int(r) else r)
    return {
        "x0": grid["x0"],
        "y0": grid["y0"],
        "dx": grid["dx"] * k,
        "dy": grid["dy"] * k,
        "nx": int(len(cols)),
        "ny": int(len(rows)),
        "values": flat,
    }

