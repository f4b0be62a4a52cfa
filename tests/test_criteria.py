"""IUCN range metrics and the preliminary criterion B category, on answers known by hand."""
import numpy as np
import pandas as pd
import pytest
from pyproj import Geod, Transformer

from sdm.criteria import aoo_km2, criterion_b, hull_area_km2, n_locations, range_metrics

TO_LONLAT = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True)
ELLIPSOID_KM2 = 510_065_621.724  # WGS84 ellipsoid surface


def _at(x_m, y_m):
    lon, lat = TO_LONLAT.transform(np.asarray(x_m, float), np.asarray(y_m, float))
    return np.asarray(lon), np.asarray(lat)


def test_aoo_two_records_1_km_apart_are_one_cell_3_km_apart_two():
    lon, lat = _at([500.0, 1500.0], [1000.0, 1000.0])  # both in the 2 km cell [0, 2000)
    assert aoo_km2(lon, lat, ["a", "a"]).to_dict() == {"a": 4.0}
    lon, lat = _at([500.0, 3500.0], [1000.0, 1000.0])
    assert aoo_km2(lon, lat, ["a", "a"]).to_dict() == {"a": 8.0}


def test_locations_are_10_km_cells():
    lon, lat = _at([500.0, 9500.0, 10500.0], [100.0, 100.0, 100.0])
    assert n_locations(lon, lat, ["s"] * 3).to_dict() == {"s": 2}


def test_eoo_of_known_triangles():
    # an octant of the ellipsoid: its edges (equator, two meridians) are geodesics
    assert hull_area_km2([0.0, 90.0, 0.0], [0.0, 0.0, 90.0]) == pytest.approx(ELLIPSOID_KM2 / 8, rel=1e-6)
    # a right triangle of 0.1 degree legs at the equator: 11.13 km x 11.06 km / 2
    assert hull_area_km2([0.0, 0.1, 0.0, 0.02], [0.0, 0.0, 0.1, 0.02]) == pytest.approx(61.5, rel=0.01)
    assert hull_area_km2([0.0, 1.0], [0.0, 1.0]) == 0.0  # two points
    assert hull_area_km2([0.0, 1.0, 2.0], [0.0, 0.0, 0.0]) == 0.0  # on one geodesic (the equator)


def test_eoo_of_a_wide_range_keeps_its_true_hull():
    # the octant again, with records just inside its edges: on the sphere they lie inside the hull, whose area stays
    # an eighth of the ellipsoid; an equal-area projection bends the edges and made them vertices (area too small)
    lon = [0.0, 90.0, 0.0, 89.5, 45.0, 0.5, 60.0, 30.0]
    lat = [0.0, 0.0, 90.0, 45.0, 0.5, 45.0, 20.0, 60.0]
    assert hull_area_km2(lon, lat) == pytest.approx(ELLIPSOID_KM2 / 8, rel=1e-6)
    # a 120 x 100 degree range around the equator, interior points on a grid
    corners_lon, corners_lat = [-60.0, 60.0, 60.0, -60.0], [-50.0, -50.0, 50.0, 50.0]
    inner_lon, inner_lat = np.meshgrid(np.linspace(-58, 58, 9), np.linspace(-30, 30, 7))
    expected = abs(Geod(ellps="WGS84").polygon_area_perimeter(corners_lon, corners_lat)[0]) / 1e6
    area = hull_area_km2(np.r_[corners_lon, inner_lon.ravel()], np.r_[corners_lat, inner_lat.ravel()])
    assert area == pytest.approx(expected, rel=1e-6)


def test_records_on_either_side_of_the_antimeridian_share_cells_and_nan_records_are_left_out():
    assert aoo_km2([180.0, -180.0], [10.0, 10.0], ["a", "a"]).to_dict() == {"a": 4.0}
    records = pd.DataFrame({"species": ["a", "a", "a", "b"], "longitude": [10.0, np.nan, 10.001, np.nan],
                            "latitude": [45.0, 45.0, np.nan, 45.0]})
    table = range_metrics(records)
    assert table.index.tolist() == ["a"]  # b has no located record: no row, rather than an AOO of 0 (CR)
    assert table.loc["a", "aoo_km2"] == 4.0 and table.loc["a", "n_locations_10km"] == 1
    assert hull_area_km2([0.0, 1.0, 0.0, np.nan], [0.0, 0.0, 1.0, 5.0]) > 0


def test_eoo_across_the_antimeridian_equals_the_same_shape_elsewhere():
    lon = np.array([179.0, -179.0, -179.5, 179.2])
    lat = np.array([-17.0, -17.0, -15.0, -14.0])
    shifted = ((lon + 180.0) % 360.0) - 180.0 - 180.0  # the same shape centred on 0
    shifted = ((shifted + 180.0) % 360.0) - 180.0
    assert hull_area_km2(lon, lat) == pytest.approx(hull_area_km2(shifted, lat), rel=1e-9)
    assert hull_area_km2(lon, lat) < 60_000  # about 2 x 3 degrees, not 358 degrees wide


def test_criterion_b_rule():
    eoo = pd.Series([50.0, 50.0, 3000.0, 15000.0, 15000.0, 50000.0, np.nan])
    aoo = pd.Series([8.0, 8.0, 400.0, 1500.0, 1500.0, 2500.0, 4.0])
    locations = pd.Series([1, 3, 5, 10, 11, 1, 1])
    assert criterion_b(eoo, aoo, locations).tolist()[:6] == ["CR", "EN", "EN", "VU", "LC or NT", "LC or NT"]
    assert pd.isna(criterion_b(eoo, aoo, locations).iloc[6])


def test_range_metrics_raise_eoo_to_aoo_and_use_every_record():
    lon, lat = _at([500.0, 4500.0, 8500.0, 500.0], [1000.0, 1000.0, 1000.0, 1000.0])
    records = pd.DataFrame({"species": ["b", "b", "b", "a"], "longitude": lon, "latitude": lat})
    table = range_metrics(records)
    assert table.index.tolist() == ["a", "b"]
    assert table.loc["b", "aoo_km2"] == 12.0
    assert table.loc["b", "eoo_km2"] == 12.0  # three collinear points: EOO 0, raised to AOO
    assert table.loc["a", "eoo_km2"] == 4.0
    assert table.loc["b", "n_locations_10km"] == 1
    assert table.loc["b", "category_b"] == "CR" and table.loc["b", "criterion_b_rank"] == 3
    with pytest.raises(ValueError, match="longitude"):
        range_metrics(records.drop(columns="longitude"))
