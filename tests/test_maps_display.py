"""The display grid (sdm.maps.display) seen as Leaflet sees it: every cell drawn where it lies, a click at a cell's
centre answered by that cell, grids across 180 degrees, beyond +-85 degrees and in other CRSs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from sdm.maps import display
from sdm.maps.explorer import _records_of, display_index

R = 6378137.0  # Leaflet's L.Projection.SphericalMercator.R
MAX_LATITUDE = 85.0511287798  # and its MAX_LATITUDE, the map's edge


def leaflet_project(lon, lat):
    """Leaflet's ``L.CRS.EPSG3857.project`` (metres): no wrapping of longitudes, latitudes clamped at its edge."""
    lat = np.clip(lat, -MAX_LATITUDE, MAX_LATITUDE)
    return R * np.radians(lon), R * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))


def leaflet_unproject_lat(y):
    return np.degrees(2 * np.arctan(np.exp(y / R)) - np.pi / 2)


def write_tif(path: Path, values: np.ndarray, crs: str, x0: float, y0: float, res: float) -> Path:
    """Single-band float32 GeoTIFF, top-left corner (x0, y0), square cells of ``res`` CRS units, NaN nodata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[0], width=values.shape[1], count=1,
                       dtype="float32", crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), nodata=np.nan) as dst:
        dst.write(values.astype("float32"), 1)
    return path


def click(popup: dict, lon, lat) -> np.ndarray:
    """What the indicator map's click handler reads from a popup grid at ``lon``, ``lat`` (None outside)."""
    x, y = leaflet_project(np.asarray(lon, float), np.asarray(lat, float))
    col = np.floor((x - popup["x0"]) / popup["dx"]).astype(int)
    row = np.floor((popup["y0"] - y) / popup["dy"]).astype(int)
    inside = (col >= 0) & (col < popup["nx"]) & (row >= 0) & (row < popup["ny"])
    flat = np.where(inside, row * popup["nx"] + col, -1)
    return np.array([popup["values"][i] if i >= 0 else None for i in flat.ravel()], dtype=object)


def cell_centres(x0: float, y0: float, res: float, shape: tuple[int, int]):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return x0 + res * (cols + 0.5), y0 - res * (rows + 0.5)


@pytest.mark.parametrize("crs, x0, y0, res, shape", [
    ("EPSG:4326", -10.0, 70.0, 0.5, (70, 80)),            # Europe at half a degree: 58 px wide before
    ("EPSG:3035", 3_000_000, 4_000_000, 10_000, (60, 90)),  # equal-area 10 km
])
def test_every_cell_is_drawn_and_a_click_at_its_centre_returns_it(tmp_path, crs, x0, y0, res, shape):
    values = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    grid = display.read_display_grid(write_tif(tmp_path / "v.tif", values, crs, x0, y0, res))
    assert set(np.unique(grid["values"][np.isfinite(grid["values"])])) == set(values.ravel())
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(*cell_centres(x0, y0, res, shape))
    assert (click(display.popup_grid(grid), lon, lat) == values.ravel()).all()


def test_grid_across_180_is_drawn_east_of_it_and_records_land_on_it(tmp_path):
    """170 to 190 E: one overlay from 170 to 190 (Leaflet takes longitudes beyond 180), every cell on it, clicks
    there answered, the explorer reaching every cell and a record at -170.5 moved onto the overlay."""
    values = np.arange(400, dtype=float).reshape(20, 20)
    grid = display.read_display_grid(write_tif(tmp_path / "pacific.tif", values, "EPSG:4326", 170.0, 10.0, 1.0))
    assert np.ravel(grid["bounds"]) == pytest.approx([-10.0, 170.0, 10.0, 190.0])
    assert set(np.unique(grid["values"])) == set(values.ravel())
    lon, lat = cell_centres(170.0, 10.0, 1.0, (20, 20))
    assert (click(display.popup_grid(grid), lon, lat) == values.ravel()).all()

    ids = display_index(display._read_for_display(tmp_path / "pacific.tif", 1024), 1024)
    assert np.ravel(ids["bounds"]) == pytest.approx(np.ravel(grid["bounds"]))
    assert set(np.unique(ids["index"])) == set(range(400))
    (south, west), (north, east) = ids["bounds"]
    record_lon = float(display.longitudes_near(-170.5, (west + east) / 2))
    assert record_lon == 189.5
    x, y = leaflet_project(record_lon, 0.5)
    index_x0, index_y0 = leaflet_project(west, north)
    index_dx = (leaflet_project(east, 0)[0] - index_x0) / ids["index"].shape[1]
    index_dy = (index_y0 - leaflet_project(0, south)[1]) / ids["index"].shape[0]
    assert ids["index"][int((index_y0 - y) // index_dy), int((x - index_x0) // index_dx)] == 9 * 20 + 19
    records = pd.DataFrame({"species": ["Aus aus", "Aus aus"], "longitude": [-170.5, 175.0], "latitude": [0.5, 1.0]})
    assert _records_of(records, ids["bounds"]) == {"Aus aus": [[0.5, 189.5], [1.0, 175.0]]}  # what the explorer draws


def test_global_grid_keeps_each_latitude_where_leaflet_draws_it(tmp_path):
    """Cells across +-85 degrees: the overlay ends at Leaflet's edge (85.0511), so every display row is drawn at the
    latitude of the cell it holds (to half a display pixel); 45 N was drawn at 46.7 N with whole cells kept."""
    res = 0.7
    h, w = round(180 / res), round(360 / res)
    centre_lat = 90 - res * (np.arange(h) + 0.5)
    values = np.repeat(centre_lat[:, None], w, axis=1)
    grid = display.read_display_grid(write_tif(tmp_path / "lat.tif", values, "EPSG:4326", -180.0, 90.0, res))
    (south, _), (north, _) = grid["bounds"]
    assert (south, north) == pytest.approx((-MAX_LATITUDE, MAX_LATITUDE))
    rows = grid["values"][:, w // 2]
    _, top = leaflet_project(0, north)
    _, bottom = leaflet_project(0, south)
    pixel = (top - bottom) / len(rows)
    drawn_top = leaflet_unproject_lat(top - pixel * np.arange(len(rows)))  # where Leaflet puts each row's edges
    drawn_bottom = leaflet_unproject_lat(top - pixel * (np.arange(len(rows)) + 1))
    assert (drawn_bottom <= rows + res / 2 + 1e-9).all() and (drawn_top >= rows - res / 2 - 1e-9).all()
    at_45 = np.flatnonzero((drawn_bottom <= 45.0) & (drawn_top >= 45.0))[0]
    assert abs(rows[at_45] - 45.0) <= res / 2


def test_mollweide_global_grid_reaches_the_arctic(tmp_path):
    x0, y0, res, shape = -18_050_000, 9_050_000, 100_000, (181, 361)
    lon, lat = Transformer.from_crs("ESRI:54009", "EPSG:4326", always_xy=True).transform(
        *cell_centres(x0, y0, res, shape))
    values = np.where(np.isfinite(lat) & (np.abs(lon) <= 180), lat, np.nan)
    grid = display.read_display_grid(write_tif(tmp_path / "moll.tif", values, "ESRI:54009", x0, y0, res))
    assert grid["bounds"][1][0] >= 84.0 and grid["bounds"][0][0] <= -84.0  # north edge was 74.6
    assert np.nanmax(grid["values"]) >= 84.0 and np.nanmin(grid["values"]) <= -84.0


def test_grid_beyond_web_mercator_raises_naming_it(tmp_path):
    path = write_tif(tmp_path / "arctic.tif", np.ones((4, 8)), "EPSG:4326", 0.0, 90.0, 1.0)  # 86 to 90 N
    with pytest.raises(ValueError, match=r"arctic\.tif: the grid spans latitudes 86 to 90, .*Web Mercator"):
        display.read_display_grid(path)


def test_longitudes_near_takes_the_copy_nearest_the_centre():
    assert display.longitudes_near([-170.0, 175.0, 185.0, 540.0], 180.0).tolist() == [190.0, 175.0, 185.0, 180.0]
    assert display.longitudes_near([-180.0, 180.0, 10.0], 0.0).tolist() == [-180.0, 180.0, 10.0]  # both edges kept
    assert math.isnan(display.longitudes_near(np.nan, 0.0))
