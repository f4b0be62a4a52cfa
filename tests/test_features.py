"""Unit tests of sdm.features on hand-made occurrences, cubes and presence arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from pyproj import Transformer

from sdm.features import (
    BASE_FEATURE_COLUMNS,
    FEATURE_COLUMNS,
    LOG_COLUMNS,
    OCCURRENCE_FEATURES,
    feature_columns,
    occurrence_features,
    range_features,
    species_features,
)

TO_LONLAT = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True)


def _cube(ny: int = 4, nx: int = 5) -> xr.DataArray:
    values = np.arange(2 * ny * nx, dtype="float32").reshape(2, ny, nx)
    values[1] = values[1] * 10
    return xr.DataArray(
        values,
        dims=("variable", "y", "x"),
        coords={"variable": ["bio1", "bio12"], "y": np.arange(ny)[::-1] * 1000.0, "x": np.arange(nx) * 1000.0},
    )


def _occ(species, lon, lat, row, col, n_records=None) -> pd.DataFrame:
    n = len(species)
    return pd.DataFrame(
        {
            "species": species,
            "longitude": lon,
            "latitude": lat,
            "x": np.zeros(n),
            "y": np.zeros(n),
            "row": np.asarray(row, dtype=int),
            "col": np.asarray(col, dtype=int),
            "n_records": np.ones(n, dtype=int) if n_records is None else n_records,
        }
    )


def _points_from_equal_area(xs, ys):
    lon, lat = TO_LONLAT.transform(np.asarray(xs, float), np.asarray(ys, float))
    return list(lon), list(lat)


def test_eoo_of_square_corners_is_its_area():
    # A 100 km square in the equal-area CRS, plus a point inside that must not change the hull.
    x0, y0, side = 1_000_000.0, 4_000_000.0, 100_000.0
    lon, lat = _points_from_equal_area(
        [x0, x0 + side, x0 + side, x0, x0 + side / 2], [y0, y0, y0 + side, y0 + side, y0 + side / 3]
    )
    occ = _occ(["a"] * 5, lon, lat, [0, 1, 2, 3, 0], [0, 1, 2, 3, 4])
    feats = occurrence_features(occ, _cube())
    assert feats.loc["a", "eoo_km2"] == pytest.approx(100.0 * 100.0, rel=0.01)


def test_eoo_of_one_degree_cell_matches_geodesic_area():
    from pyproj import Geod

    lon, lat = [10.0, 11.0, 11.0, 10.0], [45.0, 45.0, 46.0, 46.0]
    # Densified geodesic area of the cell bounded by meridians and parallels.
    edge = np.linspace(0, 1, 200)
    ring_lon = np.concatenate([10 + edge, np.full(200, 11.0), 11 - edge, np.full(200, 10.0)])
    ring_lat = np.concatenate([np.full(200, 45.0), 45 + edge, np.full(200, 46.0), 46 - edge])
    truth = abs(Geod(ellps="WGS84").polygon_area_perimeter(ring_lon, ring_lat)[0]) / 1e6
    feats = occurrence_features(_occ(["a"] * 4, lon, lat, [0] * 4, [0] * 4), _cube())
    assert feats.loc["a", "eoo_km2"] == pytest.approx(truth, rel=0.02)


def test_eoo_is_aoo_below_three_distinct_points():
    occ = _occ(["a", "a", "a", "b", "b"], [10, 10, 11, 5, 6], [45, 45, 45, 0, 1], [0] * 5, [0] * 5)
    feats = occurrence_features(occ, _cube())
    # no polygon: the IUCN Guidelines set EOO to AOO (two 2 km cells each)
    assert feats.loc["a", "eoo_km2"] == feats.loc["a", "aoo_km2"] == 8.0
    assert feats.loc["b", "eoo_km2"] == feats.loc["b", "aoo_km2"] == 8.0


def test_range_metrics_come_from_every_record_when_given():
    # one row per grid cell hides the second record; the records table holds both, 3 km apart (two AOO cells)
    lon, lat = _points_from_equal_area([500, 3500], [500, 500])
    occ = _occ(["a"], lon[:1], lat[:1], [0], [0])
    records = pd.DataFrame({"species": ["a", "a"], "longitude": lon, "latitude": lat})
    assert occurrence_features(occ, _cube())["aoo_km2"].tolist() == [4.0]
    feats = occurrence_features(occ, _cube(), records)
    assert feats.loc["a", "aoo_km2"] == 8.0 and feats.loc["a", "n_locations_10km"] == 1
    assert feats.loc["a", "criterion_b_rank"] == 3  # AOO < 10 km2 at one location: CR


def test_aoo_counts_distinct_two_km_cells():
    # Four points in three distinct 2 km cells of EPSG:6933 (two share a cell).
    lon, lat = _points_from_equal_area([500, 1500, 2500, 10_500], [500, 1500, 500, 20_500])
    occ = _occ(["a"] * 4, lon, lat, [0, 1, 2, 3], [0, 1, 2, 3])
    feats = occurrence_features(occ, _cube())
    assert feats.loc["a", "aoo_km2"] == pytest.approx(12.0)


def test_counts_latitudes_and_centroid():
    occ = _occ(
        ["a", "a", "b", "b"],
        [179.0, -179.0, 10.0, 20.0],
        [-5.0, 5.0, 40.0, 50.0],
        [0, 0, 1, 1],
        [0, 1, 0, 1],
        [3, 4, 1, 1],
    )
    feats = occurrence_features(occ, _cube())
    assert list(feats.index) == ["a", "b"]
    assert feats.loc["a", "n_records"] == 7 and feats.loc["a", "n_sites"] == 2
    assert feats.loc["b", "lat_min"] == 40.0 and feats.loc["b", "lat_max"] == 50.0
    assert feats.loc["b", "lat_span"] == 10.0
    assert feats.loc["b", "centroid_lon"] == pytest.approx(15.0)
    assert feats.loc["b", "centroid_lat"] == pytest.approx(45.0)
    # Across the antimeridian the centroid is at 180, not at 0.
    assert abs(feats.loc["a", "centroid_lon"]) == pytest.approx(180.0)


def test_spread_of_sites():
    # a: three sites on the equator 10 degrees apart; b: across the antimeridian; c: one site.
    occ = _occ(
        ["a", "a", "a", "b", "b", "c"],
        [0.0, 10.0, 20.0, 175.0, -175.0, 3.2],
        [0.0, 0.0, 0.0, 30.0, 30.0, -40.0],
        [0] * 6,
        [0] * 6,
        [1, 1, 4, 2, 2, 5],
    )
    feats = occurrence_features(occ, _cube())
    degree_km = np.pi * 6371.0088 / 180  # one degree of a great circle
    assert feats.loc["a", "lon_span"] == pytest.approx(20.0)
    assert feats.loc["b", "lon_span"] == pytest.approx(10.0)  # the short way, across 180
    assert feats.loc["c", "lon_span"] == 0.0
    assert feats.loc["a", "mean_dist_km"] == pytest.approx(20 / 3 * degree_km, rel=1e-6)  # centroid at lon 10
    assert feats.loc["a", "max_dist_km"] == pytest.approx(10 * degree_km, rel=1e-6)
    assert feats.loc["c", "max_dist_km"] == pytest.approx(0.0, abs=1e-6)
    assert feats.loc["a", "abs_centroid_lat"] == pytest.approx(0.0) and feats.loc["c", "abs_centroid_lat"] == 40.0
    assert feats.loc["a", "tropical_share"] == 1.0 and feats.loc["b", "tropical_share"] == 0.0
    assert feats.loc["a", "n_cells_1deg"] == 3 and feats.loc["a", "n_cells_10deg"] == 3
    assert feats.loc["b", "n_cells_1deg"] == 2 and feats.loc["c", "n_cells_10deg"] == 1
    assert feats.loc["a", "records_per_site"] == pytest.approx(2.0)
    assert feats.loc["b", "eoo_aoo_ratio"] == 1.0  # two points: EOO is AOO
    assert feats.loc["a", "eoo_aoo_ratio"] == pytest.approx(feats.loc["a", "eoo_km2"] / feats.loc["a", "aoo_km2"])


def test_sampling_effort_counts_all_species_in_the_cells():
    # Cell (10.x, 45.x) holds a (3 records) and b (5); cell (30.x, 45.x) only b (2); c is alone far away.
    occ = _occ(
        ["a", "b", "b", "c"],
        [10.2, 10.7, 30.5, -60.0],
        [45.1, 45.9, 45.5, -10.0],
        [0] * 4,
        [0] * 4,
        [3, 5, 2, 1],
    )
    feats = occurrence_features(occ, _cube())
    assert feats.loc["a", "effort_records_1deg"] == 8 and feats.loc["a", "effort_species_1deg"] == 2
    assert feats.loc["b", "effort_records_1deg"] == pytest.approx((8 + 2) / 2)  # mean over b's two sites
    assert feats.loc["b", "effort_species_1deg"] == pytest.approx((2 + 1) / 2)
    assert feats.loc["c", "effort_records_10deg"] == 1 and feats.loc["c", "effort_share_10deg"] == 1.0
    assert feats.loc["a", "effort_share_10deg"] == pytest.approx(3 / 8)
    # 10-degree cells: 10.x and 30.x are different cells, so the same numbers as 1 degree here.
    assert feats.loc["b", "effort_records_10deg"] == pytest.approx(5.0)


def test_effort_share_is_the_share_of_the_records_in_the_species_distinct_10_degree_cells():
    # a: 5 records alone in one 10-degree cell, 5 in a second beside b's 90 (two sites there: the cell counts once)
    occ = _occ(["a", "a", "a", "b"], [5.0, 25.0, 26.0, 25.5], [5.0, 5.0, 5.0, 5.0], [0] * 4, [0] * 4, [5, 2, 3, 90])
    feats = occurrence_features(occ, _cube())
    assert feats.loc["a", "effort_share_10deg"] == pytest.approx(10 / (5 + 95))
    assert feats.loc["b", "effort_share_10deg"] == pytest.approx(90 / 95)
    alone = occurrence_features(_occ(["a", "a"], [5.0, 25.0], [5.0, 5.0], [0, 0], [0, 0], [5, 5]), _cube())
    assert alone.loc["a", "effort_share_10deg"] == 1.0  # alone in its two cells: all their records are its own
    assert (feats["effort_share_10deg"] <= 1.0).all()


def test_occurrence_feature_columns_and_empty_table():
    occ = _occ(["a", "b"], [0, 1], [0, 1], [0, 1], [0, 1])
    feats = occurrence_features(occ, _cube())
    assert list(feats.columns[: len(OCCURRENCE_FEATURES)]) == list(OCCURRENCE_FEATURES)
    assert {"n_records", "eoo_km2", "mean_dist_km", "effort_records_10deg"} <= LOG_COLUMNS
    assert not feats[list(OCCURRENCE_FEATURES)].isna().any().any()
    empty = occurrence_features(occ.iloc[:0], _cube())
    assert len(empty) == 0 and list(empty.columns) == list(feats.columns)


def test_niche_is_mean_and_sd_of_sampled_cube():
    cube = _cube()
    cube[0, 3, 4] = np.nan  # nodata at one occurrence cell: skipped
    rows, cols = [0, 1, 2, 3], [1, 3, 0, 4]
    occ = _occ(["a"] * 4, [0, 1, 2, 3], [0, 1, 2, 3], rows, cols)
    feats = occurrence_features(occ, cube)
    bio1 = cube.sel(variable="bio1").to_numpy()[rows, cols]
    bio12 = cube.sel(variable="bio12").to_numpy()[rows, cols]
    assert feats.loc["a", "niche_mean_bio1"] == pytest.approx(np.nanmean(bio1))
    assert feats.loc["a", "niche_sd_bio1"] == pytest.approx(np.nanstd(bio1))
    assert feats.loc["a", "niche_mean_bio12"] == pytest.approx(bio12.mean())
    assert feats.loc["a", "niche_sd_bio12"] == pytest.approx(bio12.std())


def test_missing_column_is_named():
    occ = _occ(["a"], [0], [0], [0], [0]).drop(columns="n_records")
    with pytest.raises(ValueError, match="n_records"):
        occurrence_features(occ, _cube())


def test_row_col_outside_cube_raises():
    with pytest.raises(ValueError, match="outside"):
        occurrence_features(_occ(["a"], [0], [0], [4], [0]), _cube())


def _predictions(presence: np.ndarray, suitability: np.ndarray | None = None, species=("a", "b")) -> xr.Dataset:
    presence = np.asarray(presence, dtype=bool)
    if suitability is None:
        suitability = np.where(presence, 0.8, 0.1)
    coords = {"species": list(species), "y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]}
    return xr.Dataset(
        {
            "suitability": (("species", "y", "x"), np.asarray(suitability, dtype="float32")),
            "presence": (("species", "y", "x"), presence),
        },
        coords=coords,
    )


AREA = xr.DataArray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dims=("y", "x"), coords={"y": [1.5, 0.5], "x": [0.5, 1.5, 2.5]})

CUR = np.array(
    [
        [[1, 1, 0], [0, 0, 0]],  # a: cells of area 1 + 2 = 3 km2
        [[0, 0, 0], [0, 0, 0]],  # b: nothing now
    ]
)
FUT = np.array(
    [
        [[0, 1, 1], [1, 0, 0]],  # a: 2 + 3 + 4 = 9 km2, overlap with now = 2 km2
        [[0, 0, 0], [0, 0, 0]],  # b: nothing in future either
    ]
)


def test_range_current():
    feats = range_features(_predictions(CUR), None, "none", AREA)
    assert feats.loc["a", "range_km2"] == 3.0
    assert feats.loc["a", "current_range_km2"] == 3.0
    assert feats.loc["a", "range_change"] == 1.0
    assert feats.loc["a", "range_loss"] == 0.0
    assert feats.loc["a", "mean_suitability"] == pytest.approx(0.8)
    # Empty range: 0 / 0 gives 0, mean suitability 0, no NaN anywhere.
    assert feats.loc["b", "range_km2"] == 0.0
    assert feats.loc["b", "range_change"] == 0.0
    assert feats.loc["b", "mean_suitability"] == 0.0
    assert not feats.isna().any().any()


def test_range_full_vs_no_dispersal():
    suit = np.where(FUT.astype(bool), 0.9, 0.2)
    suit[0, 0, 1] = 0.6  # the one cell a keeps
    current, future = _predictions(CUR), _predictions(FUT, suit)
    full = range_features(current, future, "full", AREA)
    none = range_features(current, future, "none", AREA)
    assert full.loc["a", "range_km2"] == 9.0
    assert full.loc["a", "range_change"] == pytest.approx(3.0)
    assert full.loc["a", "range_loss"] == 0.0  # net gain: nothing lost
    assert full.loc["a", "mean_suitability"] == pytest.approx((0.6 + 0.9 + 0.9) / 3)
    assert none.loc["a", "range_km2"] == 2.0
    assert none.loc["a", "range_change"] == pytest.approx(2.0 / 3.0)
    assert none.loc["a", "range_loss"] == pytest.approx(1.0 - 2.0 / 3.0)
    assert none.loc["a", "mean_suitability"] == pytest.approx(0.6)
    assert none.loc["a", "current_range_km2"] == 3.0
    for feats in (full, none):
        assert feats.loc["b", "range_change"] == 0.0 and feats.loc["b", "range_loss"] == 0.0


def test_range_features_lazy_dask():
    current, future = _predictions(CUR).chunk({"x": 1}), _predictions(FUT).chunk({"y": 1})
    feats = range_features(current, future, "none", AREA.chunk({"x": 2}))
    assert feats.loc["a", "range_km2"] == 2.0


def test_bad_dispersal_is_named():
    with pytest.raises(ValueError, match="partial"):
        range_features(_predictions(CUR), _predictions(FUT), "partial", AREA)
    with pytest.raises(ValueError, match="partial"):
        species_features(_occ(["a"], [0], [0], [0], [0]), _cube(), _predictions(CUR), None, "partial", AREA)


def test_mismatched_grids_raise():
    other = _predictions(FUT).assign_coords(x=[10.5, 11.5, 12.5])
    with pytest.raises(ValueError):
        range_features(_predictions(CUR), other, "full", AREA)


def test_species_features_keeps_all_species():
    occ = _occ(["a", "a", "c"], [0, 1, 5], [0, 1, 5], [0, 1, 2], [0, 1, 2])
    feats = species_features(occ, _cube(), _predictions(CUR), _predictions(FUT), "full", AREA)
    assert list(feats.index) == ["a", "b", "c"]
    assert feats.index.name == "species"
    # b: predicted, no occurrences; c: occurrences, no prediction.
    assert feats.loc["b", "n_records"] == 0 and feats.loc["b", "aoo_km2"] == 0
    assert feats.loc["b", "n_cells_1deg"] == 0 and np.isnan(feats.loc["b", "mean_dist_km"])
    assert np.isnan(feats.loc["b", "niche_mean_bio1"])
    assert feats.loc["b", "range_km2"] == 0.0
    assert np.isnan(feats.loc["c", "range_km2"])
    assert feats.loc["c", "n_sites"] == 1
    assert feats.loc["a", "range_km2"] == 9.0
    assert "scenario" not in feats.columns and "dispersal" not in feats.columns
    cols = FEATURE_COLUMNS(feats)
    assert cols == feature_columns(feats)
    assert cols[: len(BASE_FEATURE_COLUMNS)] == list(BASE_FEATURE_COLUMNS)
    assert {"niche_mean_bio1", "niche_sd_bio12"} <= set(cols)
    assert not {"range_change", "range_loss", "current_range_km2"} & set(cols)


def test_float_noise_in_coordinates_is_tolerated():
    noisy = AREA.assign_coords(x=AREA["x"] + 1e-7)
    feats = range_features(_predictions(CUR), _predictions(FUT).assign_coords(y=[1.5 + 1e-7, 0.5]), "full", noisy)
    assert feats.loc["a", "range_km2"] == 9.0


def test_threat_features_at_records_and_over_the_range(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from sdm.grid import make_grid
    from sdm.threats import record_means, threat_layers

    grid = make_grid("EPSG:4326", 1.0, (0.0, 0.0, 4.0, 2.0))  # 2 rows x 4 columns of 1 degree
    protected = np.array([[[1.0, 0.5, np.nan, 0.0], [0.0, 0.0, 0.25, 0.0]]], dtype="float32")
    footprint = np.array([[[10.0, 20.0, 30.0, np.nan], [1.0, 2.0, 3.0, 4.0]]], dtype="float32")
    paths = {}
    for name, data in (("pa", protected), ("hfp", footprint)):
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", driver="GTiff", width=4, height=2, count=1, dtype="float32",
                           crs="EPSG:4326", transform=from_origin(0, 2, 1, 1), nodata=np.nan) as dst:
            dst.write(data)
    layers = threat_layers({"protected_areas": {"path": str(paths["pa"])},
                            "pressures": {"human_footprint": {"path": str(paths["hfp"])}}}, grid)
    assert float(layers["protected_areas"].values[0, 2]) == 0.0  # no data = unprotected
    occ = _occ(["a", "a", "b"], [0.5, 1.5, 3.5], [1.5, 1.5, 1.5], [0, 0, 0], [0, 1, 3], n_records=[3, 1, 2])
    means = record_means(occ, layers)
    assert means.loc["a", "protected_share_records"] == pytest.approx((3 * 1.0 + 1 * 0.5) / 4)
    assert means.loc["a", "human_footprint_at_records"] == pytest.approx((3 * 10 + 20) / 4)
    assert np.isnan(means.loc["b", "human_footprint_at_records"])  # its only cell has no value: left out
    presence = xr.DataArray(np.zeros((1, 2, 4), dtype=bool), dims=("species", "y", "x"),
                            coords={"species": ["a"], "y": grid["y"], "x": grid["x"]})
    presence[0, 0, :2] = True  # range: the two top-left cells, protected 1.0 and 0.5
    current = xr.Dataset({"presence": presence, "suitability": presence.astype("float32")})
    area = xr.ones_like(grid, dtype="float64")
    ranges = range_features(current, None, "none", area, layers["protected_areas"])
    assert ranges.loc["a", "protected_share_range"] == pytest.approx(0.75)
    assert "protected_share_range" not in range_features(current, None, "none", area).columns
    stacked = tmp_path / "two.tif"
    with rasterio.open(stacked, "w", driver="GTiff", width=4, height=2, count=2, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(0, 2, 1, 1)) as dst:
        dst.write(np.concatenate([protected, protected]))
    with pytest.raises(ValueError, match="name one with 'band'"):
        threat_layers({"protected_areas": {"path": str(stacked)}}, grid)
    assert float(threat_layers({"protected_areas": {"path": str(stacked), "band": 2}}, grid)[
        "protected_areas"].values[0, 1]) == 0.5


def _write_raster(path, data, transform, crs="EPSG:4326"):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="float32", crs=crs, transform=transform, nodata=np.nan) as dst:
        dst.write(data[None].astype("float32"))
    return path


def test_protected_no_data_counts_as_unprotected_before_resampling(tmp_path):
    """No data in the protected-area raster is unprotected (0) before the layer is put on the grid: a coarse cell's
    mean counts it (one protected sub-cell of 16 is 1/16, not 1), a finer grid's interpolation does not spread it,
    and grid cells beyond the raster are 0; a pressure's no data stays unknown (left out of the mean)."""
    from rasterio.transform import from_origin

    from sdm.grid import make_grid
    from sdm.threats import threat_layers

    coarse = make_grid("EPSG:4326", 1.0, (0.0, 0.0, 3.0, 1.0))  # 1 x 3 cells of 1 degree; the raster covers 2
    fine = np.full((4, 8), np.nan)
    fine[0, 0] = 1.0  # cell 0: 1 of 16 quarter-degree sub-cells protected, the rest no data
    fine[:, 4:] = 0.0
    fine[0, 4] = 1.0  # cell 1: the same, with explicit zeros
    path = _write_raster(tmp_path / "pa.tif", fine, from_origin(0, 1, 0.25, 0.25))
    hfp = _write_raster(tmp_path / "hfp.tif", np.where(np.isnan(fine), np.nan, 8.0), from_origin(0, 1, 0.25, 0.25))
    layers = threat_layers({"protected_areas": {"path": str(path)}, "pressures": {"hfp": {"path": str(hfp)}}},
                           coarse)
    np.testing.assert_allclose(layers["protected_areas"].values, [[1 / 16, 1 / 16, 0.0]])
    np.testing.assert_allclose(layers["hfp"].values, [[8.0, 8.0, np.nan]])  # no data left out, not 0

    finer = make_grid("EPSG:4326", 0.5, (0.0, 0.0, 4.0, 4.0))
    edges = np.full((4, 4), np.nan)
    edges[:, 0] = edges[:, 3] = 1.0  # protected west and east columns, no data between
    path = _write_raster(tmp_path / "edges.tif", edges, from_origin(0, 4, 1, 1))
    row = threat_layers({"protected_areas": {"path": str(path)}}, finer)["protected_areas"].values[3]
    np.testing.assert_allclose(row, [1.0, 0.75, 0.25, 0.0, 0.0, 0.25, 0.75, 1.0])  # as with explicit zeros


@pytest.mark.parametrize("per_compute", [1, 3, 100])
def test_range_sums_in_batches_of_blocks_equal_the_whole_sum(per_compute, monkeypatch):
    """The per-block sums are reduced a few blocks per Dask computation (memory bounded by the batch): the total is
    the whole sum whatever the batch, and no computation takes more blocks than the batch."""
    import dask
    import dask.array as da

    from sdm.features import sum_in_batches

    values = np.random.default_rng(0).random((5, 4, 7, 9))  # species, statistic, block rows, block columns
    blocks = da.from_array(values, chunks=(5, 4, 1, 1))
    sizes, compute = [], dask.compute
    monkeypatch.setattr(da, "compute", lambda *parts: sizes.append(len(parts)) or compute(*parts))
    np.testing.assert_allclose(sum_in_batches(blocks, per_compute), values.sum(axis=(2, 3)), rtol=1e-12)
    assert max(sizes) == min(per_compute, 63) and sum(sizes) == 63


@pytest.mark.parametrize("coded", [False, True])
def test_a_cell_without_data_in_a_scenario_is_not_lost_range(coded, tmp_path):
    # 4 cells of present range, 2 of them without data in the future (another land mask): no loss, where counting
    # them as absent would lose half the range (criterion A3: EN)
    from sdm.codes import NODATA
    from sdm.features import all_scenario_ranges

    coords = {"species": ["a", "b"], "y": [0.0, 1.0], "x": [0.0, 1.0]}
    present = np.ones((2, 2, 2), bool)
    future = present.copy()
    future[:, 0, :] = False  # what a store decodes where it has no data
    if coded:
        codes = np.full((2, 2, 2), 200, "uint8")
        future_codes = codes.copy()
        future_codes[:, 0, :] = NODATA
        suit, future_suit = ("suitability_code", codes), ("suitability_code", future_codes)
    else:
        values = np.full((2, 2, 2), 0.9, "float32")
        future_values = values.copy()
        future_values[:, 0, :] = np.nan
        suit, future_suit = ("suitability", values), ("suitability", future_values)

    def predictions(presence, suitability):
        name, data = suitability
        ds = xr.Dataset({"presence": (("species", "y", "x"), presence), name: (("species", "y", "x"), data)},
                        coords=coords)
        if name == "suitability_code":
            ds["suitability"] = ds[name].astype("float32")  # present for the check on variables; the codes are read
        return ds

    area = xr.DataArray(np.ones((2, 2)), dims=("y", "x"), coords={"y": coords["y"], "x": coords["x"]})
    stores = {"current": tmp_path / "current.zarr", "f": tmp_path / "f.zarr"}
    ranges = all_scenario_ranges(predictions(present, suit).rio.write_crs("EPSG:3035"),
                                 {"f": predictions(future, future_suit).rio.write_crs("EPSG:3035")},
                                 ["full", "none"], area, presence_stores=stores)
    for dispersal in ("full", "none"):
        table = ranges["f"][dispersal]
        np.testing.assert_allclose(table["range_km2"], 4.0)
        np.testing.assert_allclose(table["range_loss"], 0.0)
    # each presence store (fused mode's, read by the indicator pass) keeps its own cells with data
    from sdm.packed import open_presence_store

    assert open_presence_store(stores["current"])["valid"].values.all()
    np.testing.assert_array_equal(open_presence_store(stores["f"])["valid"].values, [[False, False], [True, True]])
