"""Rasters put on the display grid: Web Mercator (EPSG:3857), the CRS Leaflet draws in, so that an
``L.imageOverlay`` stretched between its latitude/longitude corners lands exactly on its cells; and the subsampled
values behind the click popups."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import rioxarray  # noqa: F401 (the .rio accessor)
import xarray as xr
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import from_bounds

DISPLAY_MAX_PX = 2048
"""Longest side, in pixels, of a layer's PNG; larger rasters are shown at a coarser resolution."""
POPUP_MAX_VALUES = 250_000
"""Most values per layer embedded for the click popup; the display grid is subsampled above that."""
WEB_MERCATOR = ("+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null "
                "+over +wktext +no_defs")
"""EPSG:3857 without wrapping longitudes into [-180, 180] (``+over``): a grid across 180 degrees (170 to 190 E) stays
in one piece east of 180, where Leaflet, which does not wrap either, draws an overlay and reports a click."""
MAX_LATITUDE = 85.0511287798
"""Leaflet's ``L.Projection.SphericalMercator.MAX_LATITUDE`` (degrees): the map's edge, +-20037508.34 m."""
CORNER_SAMPLES = 512
"""Most cell corners per side of a grid projected to find its extent and its smallest cells."""
GEOGRAPHIC_PIXEL_SHARE = 0.98
"""Display pixel side over a geographic grid's smallest cell (:func:`display_pixel_size`): one pixel centre at least
in every cell, with a margin for corner samples that average a few rows of a large grid."""
_LONLAT = "EPSG:4326"
_TO_MERCATOR = Transformer.from_crs(_LONLAT, WEB_MERCATOR, always_xy=True)
_FROM_MERCATOR = Transformer.from_crs(WEB_MERCATOR, _LONLAT, always_xy=True)


def read_display_grid(path: Path) -> dict:
    """A single-band GeoTIFF reprojected to EPSG:3857 (nearest neighbour, NaN outside data).

    Returns ``values`` (float32 ``(y, x)``), ``x0``/``y0`` (top-left corner, metres), ``dx``/``dy`` (cell size,
    metres, both positive) and ``bounds`` (``[[south, west], [north, east]]``, degrees).
    """
    da = _read_for_display(Path(path), DISPLAY_MAX_PX)
    try:
        merc = to_web_mercator(da, DISPLAY_MAX_PX, np.nan)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
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
    """``da`` (``y``, ``x``, with a CRS) reprojected by nearest neighbour to Web Mercator (:data:`WEB_MERCATOR`)
    over the grid's longitude/latitude extent (:func:`lonlat_extent`), in pixels no larger than its smallest cell
    (:func:`display_pixel_size`: every cell drawn, a click at a cell's centre answered by that cell), at most
    ``max_px`` pixels a side."""
    rows, cols = corner_positions(da.rio.height), corner_positions(da.rio.width)
    lon, lat = corners_lonlat(da, rows, cols)
    west, south, east, north = lonlat_extent(lon, lat)
    (left, right), (bottom, top) = _TO_MERCATOR.transform([west, east], [south, north])
    dx, dy = display_pixel_size(*_TO_MERCATOR.transform(lon, lat), rows, cols,
                                default=((right - left) / max_px, (top - bottom) / max_px),
                                share=GEOGRAPHIC_PIXEL_SHARE if da.rio.crs.is_geographic else 0.5)
    width, height = math.ceil((right - left) / dx), math.ceil((top - bottom) / dy)
    scale = min(1.0, max_px / max(width, height))
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return da.rio.reproject(WEB_MERCATOR, shape=shape, transform=from_bounds(left, bottom, right, top, *shape[::-1]),
                            resampling=Resampling.nearest, nodata=nodata)


def corner_positions(cells: int) -> np.ndarray:
    """Cell-edge positions (in cells, ``0`` to ``cells``) sampled along one side of a grid: every edge, or
    ``CORNER_SAMPLES + 1`` evenly spaced ones on a longer side."""
    return np.linspace(0.0, cells, min(cells, CORNER_SAMPLES) + 1)


def corners_lonlat(da: xr.DataArray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (degrees, ``(rows, cols)``; NaN where the CRS has none) of ``da``'s cell corners at
    positions ``rows``, ``cols`` (in cells). Longitudes are the copies nearest the grid's centre
    (:func:`longitudes_near`), so a grid across 180 degrees comes out in one piece (175 to 185, not 175 and -175)."""
    transformer = Transformer.from_crs(da.rio.crs, _LONLAT, always_xy=True)
    transform = da.rio.transform()
    lon, lat = transformer.transform(*(transform * np.meshgrid(cols, rows)))
    centre_lon, _ = transformer.transform(*(transform * (da.rio.width / 2, da.rio.height / 2)))
    valid = np.isfinite(lon) & np.isfinite(lat)
    lon = longitudes_near(np.where(valid, lon, np.nan), centre_lon if math.isfinite(centre_lon) else 0.0)
    return lon, np.where(valid, lat, np.nan)


def longitudes_near(lon, centre: float) -> np.ndarray:
    """``lon`` (degrees) moved by whole turns to the copy nearest ``centre`` (within 180 degrees; a value exactly
    180 away is kept). With the centre of an overlay's bounds, a point at -170 lands on an overlay from 170 to 190."""
    lon = np.asarray(lon, dtype="float64")
    return np.where(np.abs(lon - centre) <= 180.0, lon, centre + np.mod(lon - centre + 180.0, 360.0) - 180.0)


def lonlat_extent(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` (degrees) of the finite points ``lon``, ``lat``, latitudes cut at
    +-``MAX_LATITUDE`` (Web Mercator's edge). Raises ValueError when nothing is left to draw."""
    valid = np.isfinite(lon) & np.isfinite(lat)
    if not valid.any():
        raise ValueError("no cell of the grid has a longitude and latitude: a Web Mercator map cannot show it")
    lat_min, lat_max = float(lat[valid].min()), float(lat[valid].max())
    south, north = max(lat_min, -MAX_LATITUDE), min(lat_max, MAX_LATITUDE)
    if south >= north:
        raise ValueError(f"the grid spans latitudes {lat_min:.4g} to {lat_max:.4g}, beyond +-{MAX_LATITUDE:.4f} "
                         f"degrees: a Web Mercator map cannot show it")
    return float(lon[valid].min()), south, float(lon[valid].max()), north


def display_pixel_size(x: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                       default: tuple[float, float], share: float = 0.5) -> tuple[float, float]:
    """``share`` of the smallest width and height (metres) that a cell takes on the display grid, from its corners
    ``x``, ``y`` (Web Mercator metres, ``(rows, cols)``) sampled at cell positions ``rows``, ``cols``; ``default``
    where no sampled block of cells has four finite corners. A cell of a geographic grid is an upright rectangle in
    Web Mercator: pixels no larger than it leave a pixel centre in every cell (:data:`GEOGRAPHIC_PIXEL_SHARE`); a
    projected grid's cells are turned and sheared there, so they get pixels of half their size."""
    along_x = (np.diff(x, axis=1) / np.diff(cols), np.diff(y, axis=1) / np.diff(cols))  # one cell along a row
    along_y = (np.diff(x, axis=0) / np.diff(rows)[:, None], np.diff(y, axis=0) / np.diff(rows)[:, None])
    width = np.abs(along_x[0][:-1]) + np.abs(along_y[0][:, :-1])
    height = np.abs(along_x[1][:-1]) + np.abs(along_y[1][:, :-1])
    return _share_of_smallest(width, default[0], share), _share_of_smallest(height, default[1], share)


def _share_of_smallest(sizes: np.ndarray, default: float, share: float) -> float:
    measured = sizes[np.isfinite(sizes) & (sizes > 0)]
    return float(measured.min()) * share if measured.size else default


def lonlat_bounds(merc: xr.DataArray) -> list[list[float]]:
    """``[[south, west], [north, east]]`` (degrees) of a Web Mercator raster from :func:`to_web_mercator`: the
    corners of a Leaflet overlay (east beyond 180 for a grid across 180 degrees)."""
    left, bottom, right, top = merc.rio.bounds()
    (west, east), (south, north) = _FROM_MERCATOR.transform([left, right], [bottom, top])
    return [[float(south), float(west)], [float(north), float(east)]]


def packed_nulls(values: list) -> list:
    """``values`` (numbers and None) with each run of two or more None written as one string, its length (``"35"``):
    the no-data cells of a land map (most of a global grid) cost a few characters instead of five each in the page.
    :func:`unpacked_nulls` and the map's JavaScript undo it."""
    out = []
    for missing, run in itertools.groupby(values, key=lambda v: v is None):
        run = list(run)
        out += ([None] if len(run) == 1 else [str(len(run))]) if missing else run
    return out


def unpacked_nulls(values: list) -> list:
    """The inverse of :func:`packed_nulls`."""
    out = []
    for v in values:
        out.extend([None] * int(v) if isinstance(v, str) else [v])
    return out


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

