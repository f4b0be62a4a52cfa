"""Unit tests of sdm.grid: grid templates, cell areas (km2) and the cells of WGS84 points."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from sdm.grid import cell_area_km2, cells_to_lonlat, grid_of, make_grid, points_to_cells


def test_make_grid_shape_transform_crs():
    grid = make_grid("EPSG:3035", 1000, (4_000_000, 3_000_000, 4_010_000, 3_005_000))
    assert grid.dims == ("y", "x")
    assert grid.shape == (5, 10)
    assert grid.rio.crs == "EPSG:3035"
    assert tuple(grid.rio.transform(recalc=True))[:6] == (1000.0, 0.0, 4_000_000.0, 0.0, -1000.0, 3_005_000.0)
    # cell centres, north-up: y decreasing
    assert grid["x"].values[0] == 4_000_500 and grid["x"].values[-1] == 4_009_500
    assert grid["y"].values[0] == 3_004_500 and grid["y"].values[-1] == 3_000_500
    assert np.isnan(grid.values).all()
    assert grid.rio.bounds() == (4_000_000, 3_000_000, 4_010_000, 3_005_000)


def test_make_grid_snaps_outwards_to_whole_cells():
    grid = make_grid("EPSG:4326", 1.0, (0.0, 0.0, 2.5, 1.2))
    assert grid.shape == (2, 3)  # 1.2 -> 2 rows, 2.5 -> 3 columns
    xmin, ymin, xmax, ymax = grid.rio.bounds()
    assert (xmin, ymax) == (0.0, 1.2)  # the origin (top-left) is kept
    assert xmax == pytest.approx(3.0) and ymin == pytest.approx(-0.8)
    # floating-point noise does not add a spurious column or row
    assert make_grid("EPSG:4326", 0.1, (0.0, 0.0, 0.3, 0.7)).shape == (7, 3)


@pytest.mark.parametrize(
    "resolution, bounds, key",
    [
        (1.0, (10, 0, 0, 10), "grid.bounds"),  # xmax < xmin
        (1.0, (0, 5, 10, 5), "grid.bounds"),  # ymax == ymin
        (1.0, (0, 0, float("nan"), 10), "grid.bounds"),
        (1.0, (0, 0, 10), "grid.bounds"),  # three numbers
        (0.0, (0, 0, 10, 10), "grid.resolution"),
        (-1.0, (0, 0, 10, 10), "grid.resolution"),
    ],
)
def test_make_grid_bad_bounds_raise_naming_the_key(resolution, bounds, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        make_grid("EPSG:4326", resolution, bounds)


def test_grid_of_round_trips_a_template():
    grid = make_grid("EPSG:3035", 500, (0, 0, 3000, 2000))
    again = grid_of(grid.copy(data=np.zeros(grid.shape, "float32")))
    assert again.shape == grid.shape and again.rio.crs == grid.rio.crs
    np.testing.assert_allclose(again["x"], grid["x"])
    np.testing.assert_allclose(again["y"], grid["y"])
    with pytest.raises(ValueError, match="no CRS"):
        grid_of(grid.drop_vars("spatial_ref"))


def test_cell_area_projected_one_km_cells_are_one_km2():
    area = cell_area_km2(make_grid("EPSG:3035", 1000, (4_000_000, 3_000_000, 4_005_000, 3_004_000)))
    assert area.dims == ("y", "x") and area.shape == (4, 5)
    np.testing.assert_allclose(area.values, 1.0)
    np.testing.assert_allclose(cell_area_km2(make_grid("EPSG:3035", 2500, (0, 0, 5000, 5000))).values, 6.25)


def test_cell_area_geographic_equator_and_pole():
    grid = make_grid("EPSG:4326", 0.5, (0.0, -0.5, 0.5, 90.0))
    area = cell_area_km2(grid)
    at_equator = float(area.sel(y=0.25).values[0])
    assert at_equator == pytest.approx(3091, rel=0.005)
    near_pole = float(area.values[0, 0])  # 89.5 .. 90 N
    assert 0 < near_pole < at_equator / 100
    # cell area decreases monotonically with latitude in the northern hemisphere
    assert np.all(np.diff(area.values[::-1, 0][1:]) < 0)


def test_cell_area_global_one_degree_grid_sums_to_the_ellipsoid():
    area = cell_area_km2(make_grid("EPSG:4326", 1.0, (-180, -90, 180, 90)))
    assert area.shape == (180, 360)
    assert float(area.sum()) == pytest.approx(510_065_621.72, rel=1e-9)  # WGS84 surface
    # symmetric about the equator
    np.testing.assert_allclose(area.values[:, 0], area.values[::-1, 0])


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_cell_area_geographic_matches_geodesic_polygons_at_the_equator_and_60_degrees(lat):
    from pyproj import Geod

    grid = make_grid("EPSG:4326", 0.01, (10.0, lat, 10.02, lat + 0.01))
    truth = abs(Geod(ellps="WGS84").polygon_area_perimeter([10.0, 10.01, 10.01, 10.0],
                                                           [lat, lat, lat + 0.01, lat + 0.01])[0]) / 1e6
    np.testing.assert_allclose(cell_area_km2(grid).values, truth, rtol=1e-6)


def test_cell_area_of_a_conformal_projection_is_the_true_area():
    # Web Mercator at 60 N: a 1 km x 1 km projected cell covers 0.25 km2 on the ground (scale 1 / cos(60))
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.0, 60.0)
    grid = make_grid("EPSG:3857", 1000, (x - 1000, y - 1000, x + 1000, y + 1000))
    np.testing.assert_allclose(cell_area_km2(grid).values, 0.25, rtol=0.01)
    # UTM is close to but not exactly equal-area: away from its central meridian cells are smaller than 1 km2
    utm = cell_area_km2(make_grid("EPSG:32632", 1000, (800_000, 5_000_000, 802_000, 5_002_000)))
    assert 0.99 < float(utm.max()) < 1.0


def test_points_to_cells_geographic_inside_and_outside():
    grid = make_grid("EPSG:4326", 1.0, (0, 0, 10, 5))
    # every edge belongs to the grid: the west and north edges to the first cells, the east and south edges (which
    # rasterio's half-open cells would leave out) to the last ones
    lon = [0.5, 9.99, 3.2, 0.0, 5.0, 10.0, 5.0, -0.1, 5.0, np.nan, 10.001, np.inf]
    lat = [4.5, 0.01, 2.7, 2.0, 5.0, 2.0, 0.0, 2.0, 5.001, 2.0, 2.0, 2.0]
    cells = points_to_cells(lon, lat, grid)
    assert list(cells.columns) == ["x", "y", "row", "col"]
    assert cells["row"].tolist() == [0, 4, 2, 3, 0, 3, 4, -1, -1, -1, -1, -1]
    assert cells["col"].tolist() == [0, 9, 3, 0, 5, 9, 5, -1, -1, -1, -1, -1]
    assert cells.loc[2, "x"] == 3.5 and cells.loc[2, "y"] == 2.5
    assert cells.loc[7:, ["x", "y"]].isna().all().all()


def test_points_to_cells_on_a_global_grid_keep_the_poles_and_the_antimeridian():
    grid = make_grid("EPSG:4326", 0.5, (-180, -90, 180, 90))
    cells = points_to_cells([180.0, -180.0, 0.0, 0.0, -160.0, 200.0], [0.0, 0.0, -90.0, 90.0, 10.0, 10.0], grid)
    assert cells["col"].tolist()[:4] == [0, 0, 360, 360]  # 180 is -180
    assert cells["row"].tolist()[:4] == [180, 180, 359, 0]  # the south pole in the last row
    assert cells.loc[4, ["row", "col"]].tolist() == cells.loc[5, ["row", "col"]].tolist() == [160, 40]
    # a grid across the antimeridian (170 to 190 degrees east) finds -175 at 185
    pacific = make_grid("EPSG:4326", 1.0, (170, -10, 190, 10))
    assert points_to_cells([-175.0], [0.5], pacific)["col"].tolist() == [15]
    assert cells["row"].dtype == "int64"


def test_points_to_cells_projected_matches_pyproj():
    grid = make_grid("EPSG:3035", 1000, (4_300_000, 2_800_000, 4_320_000, 2_810_000))
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(
        [4_305_250.0, 4_319_999.0, 4_400_000.0], [2_803_600.0, 2_809_999.0, 2_805_000.0]
    )
    # round trip through pyproj in the other direction, as the ingest does
    px, py = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True).transform(lon[0], lat[0])
    assert px == pytest.approx(4_305_250.0, abs=1e-3) and py == pytest.approx(2_803_600.0, abs=1e-3)
    cells = points_to_cells(lon, lat, grid)
    assert cells.loc[0, ["row", "col"]].tolist() == [6, 5]  # (2_810_000 - 2_803_600) // 1000, 5250 // 1000
    assert cells.loc[0, "x"] == 4_305_500 and cells.loc[0, "y"] == 2_803_500
    assert cells.loc[1, ["row", "col"]].tolist() == [0, 19]
    assert cells.loc[2, ["row", "col"]].tolist() == [-1, -1]
    back_lon, back_lat = cells_to_lonlat(cells.loc[:1, "x"], cells.loc[:1, "y"], grid)
    assert back_lon[0] == pytest.approx(lon[0], abs=0.01) and back_lat[0] == pytest.approx(lat[0], abs=0.01)
