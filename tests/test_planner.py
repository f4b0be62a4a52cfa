"""Ensembles of climate models, per-region summaries and protection (sdm.ensembles, sdm.regions, sdm.protection)
on small worlds whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import rioxarray
import xarray as xr
from shapely.geometry import box

from sdm.config import ConfigError, validate_config
from sdm.ensembles import check_ensembles, ensemble_indicators, ensemble_layer_names, ensemble_runs, \
    ensemble_status, member_runs
from sdm.indicators import layer_names
from sdm.protection import protection_gap, protection_table
from sdm.regions import read_regions, region_summary, regions_geojson

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
H, W = 10, 12


def grid_array(values: np.ndarray, crs: str = "EPSG:3035", x0: float = 4_200_000.0, y0: float = 2_700_000.0,
               res: float = 1000.0) -> xr.DataArray:
    h, w = values.shape
    da = xr.DataArray(values.astype("float32"), dims=("y", "x"),
                      coords={"y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)})
    return da.rio.write_crs(crs).rio.write_nodata(np.nan)


def write_run(folder: Path, layers: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in layers.items():
        grid_array(values).rio.to_raster(folder / f"{name}.tif")
    return folder


def member_layers(seed: int, change_sign: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    layers = {name: rng.integers(0, 10, (H, W)).astype(float) for name in layer_names(True, True)}
    layers["most_threatened"] = rng.integers(0, 5, (H, W)).astype(float)
    layers["threatened_count_change"] = np.full((H, W), change_sign)
    layers["richness_change"] = np.full((H, W), -change_sign)
    for values in layers.values():
        values[0, 0] = np.nan  # a cell without data in every member
    return layers


def read(path: Path) -> np.ndarray:
    with rioxarray.open_rasterio(path, masked=True) as src:
        return src.squeeze("band", drop=True).values


def test_two_members_that_agree_everywhere(tmp_path):
    same = member_layers(1, +1.0)
    members = {"a_full": write_run(tmp_path / "a_full", same), "b_full": write_run(tmp_path / "b_full", same)}
    written = ensemble_indicators(members, tmp_path / "ab_full", with_status=True)
    assert sorted(p.stem for p in written) == sorted(ensemble_layer_names(True))
    for name in layer_names(True, True):  # the median of two equal layers is that layer
        np.testing.assert_array_equal(read(tmp_path / "ab_full" / f"{name}.tif"), same[name].astype("float32"))
    rise = read(tmp_path / "ab_full" / "threatened_rise_agreement.tif")
    assert np.isnan(rise[0, 0]) and np.all(rise[np.isfinite(rise)] == 1.0)  # both members: threatened rise
    loss = read(tmp_path / "ab_full" / "richness_loss_agreement.tif")
    assert np.all(loss[np.isfinite(loss)] == 1.0)
    with rioxarray.open_rasterio(tmp_path / "ab_full" / "richness.tif") as src:
        assert src.rio.crs.to_epsg() == 3035



def test_three_members_median_and_agreement(tmp_path):
    layers = [member_layers(s, sign) for s, sign in ((1, 1.0), (2, 1.0), (3, -1.0))]
    members = {f"m{i}_none": write_run(tmp_path / f"m{i}_none", l) for i, l in enumerate(layers)}
    ensemble_indicators(members, tmp_path / "ens_none", with_status=True)
    stack = np.stack([l["richness"] for l in layers])
    np.testing.assert_allclose(read(tmp_path / "ens_none" / "richness.tif")[1:, 1:], np.median(stack, 0)[1:, 1:])
    rise = read(tmp_path / "ens_none" / "threatened_rise_agreement.tif")
    np.testing.assert_allclose(rise[np.isfinite(rise)], 2 / 3)
    codes = read(tmp_path / "ens_none" / "most_threatened.tif")
    assert set(np.unique(codes[np.isfinite(codes)])) <= {0, 1, 2, 3, 4}  # a category code, never an average


def test_even_members_take_the_higher_middle_category(tmp_path):
    low, high = member_layers(1, 1.0), member_layers(1, 1.0)
    low["most_threatened"][:] = 1.0
    high["most_threatened"][:] = 3.0
    members = {"l_full": write_run(tmp_path / "l_full", low), "h_full": write_run(tmp_path / "h_full", high)}
    ensemble_indicators(members, tmp_path / "e_full", with_status=True)
    assert np.all(read(tmp_path / "e_full" / "most_threatened.tif") == 3.0)


def test_ensemble_status_share_of_members_threatened():
    table = pd.DataFrame({
        "species": ["A", "A", "A", "B", "B", "B"],
        "scenario": ["g1", "g2", "g3"] * 2, "dispersal": ["full"] * 6,
        "status": ["VU", "EN", "LC", "LC", "LC", "NT"],
        "range_km2": [10.0, 20.0, 30.0, 1.0, 2.0, 3.0], "range_loss": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0],
    })
    rows = ensemble_status(table, {"ens": ["g1", "g2", "g3"]}).set_index("species")
    assert rows.loc["A", "threatened_agreement"] == pytest.approx(2 / 3)
    assert rows.loc["A", "status"] == "VU" and rows.loc["B", "status"] == "LC"
    assert rows.loc["A", "range_km2"] == 20.0 and rows.loc["A", "members"] == 3
    assert set(rows["scenario"]) == {"ens"} and set(rows["dispersal"]) == {"full"}


def test_ensemble_names_and_members_are_checked():
    assert ensemble_runs({"e": ["a", "b"]}, ["full", "none"]) == ["e_full", "e_none"]
    assert member_runs("e_none", {"e": ["a", "b"]}) == ["a_none", "b_none"]
    with pytest.raises(ValueError, match=r"climate.ensembles.e: \['c'\] not in climate.scenarios"):
        check_ensembles({"e": ["a", "c"]}, ["a", "b"])
    with pytest.raises(ValueError, match="taken by a scenario"):
        check_ensembles({"a": ["a", "b"]}, ["a", "b"])
    config = {"occurrences": {"path": "o.csv"},
              "climate": {"current": "c.tif", "scenarios": {"a": "a.tif", "b": "b.tif"},
                          "ensembles": {"e": ["a", "x"]}}}
    with pytest.raises(ConfigError, match="climate.ensembles.e"):
        validate_config(config, SCHEMA)
    config["climate"]["ensembles"] = {"e": ["a"]}
    with pytest.raises(ConfigError, match="climate.ensembles.e"):  # one member is no ensemble
        validate_config(config, SCHEMA)


def regions_file(tmp_path: Path, crs: str = "EPSG:3035") -> Path:
    """West and East halves of the H x W grid, plus an invalid bow-tie polygon named West (merged into it)."""
    x0, y0 = 4_200_000.0, 2_700_000.0
    mid = x0 + W / 2 * 1000
    frame = gpd.GeoDataFrame(
        {"NAME": ["West", "East"]},
        geometry=[box(x0, y0 - H * 1000, mid, y0), box(mid, y0 - H * 1000, x0 + W * 1000, y0)], crs="EPSG:3035")
    path = tmp_path / "regions.geojson"
    frame.to_crs(crs).to_file(path)
    return path


def test_a_region_that_holds_all_of_a_range(tmp_path):
    richness = np.zeros((H, W))
    richness[2:5, 1:4] = 1.0  # one species, all of its range in the West
    richness[0, :] = np.nan   # no data along the top row
    write_run(tmp_path / "current_none", {"richness": richness})
    regions = read_regions(regions_file(tmp_path, "EPSG:4326"), "NAME", "EPSG:3035")
    table = region_summary({"richness": {"current_none": tmp_path / "current_none" / "richness.tif"}}, regions)
    row = table.set_index("region")
    west_cells = (H - 1) * (W // 2)
    assert row.loc["West", "max"] == 1.0 and row.loc["East", "max"] == 0.0
    assert row.loc["West", "mean"] == pytest.approx(9 / west_cells, rel=1e-3)  # equal-area grid: the cell mean
    assert row.loc["East", "mean"] == 0.0
    assert row.loc["West", "area_km2"] == pytest.approx(west_cells, rel=1e-3)  # 1 km2 cells with data


def test_regions_file_errors_name_the_column(tmp_path):
    path = regions_file(tmp_path)
    with pytest.raises(ValueError, match=r"maps.regions.name_column: .* has no column 'name'; its columns are \['NAME'\]"):
        read_regions(path, "name", "EPSG:3035")
    with pytest.raises(FileNotFoundError, match="maps.regions.path"):
        read_regions(tmp_path / "missing.geojson", "NAME", "EPSG:3035")


def test_invalid_geometries_are_repaired_and_outlines_simplified(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": "Bow"}, "geometry": bowtie}]}))
    regions = read_regions(path, "n", "EPSG:4326")
    assert regions.geometry.is_valid.all() and shapely.area(regions.geometry.values).sum() == pytest.approx(2.0)
    geojson = regions_geojson(regions)
    assert geojson["features"][0]["properties"]["region"] == "Bow"


def test_protection_gap_weights_threatened_species_by_the_unprotected_share():
    threatened = grid_array(np.array([[4.0, 4.0, np.nan], [2.0, 0.0, 1.0]]))
    protected = grid_array(np.array([[1.0, 0.25, 0.5], [np.nan, 0.5, 0.0]]))
    gap = protection_gap(threatened, protected).values
    np.testing.assert_allclose(gap, [[0.0, 3.0, np.nan], [2.0, 0.0, 1.0]])  # no coverage data = unprotected


def test_protection_table_ranks_threatened_species_least_protected_first():
    status = pd.DataFrame({"species": ["A", "B", "C", "A", "B", "C", "A"],
                           "scenario": ["current"] * 3 + ["w"] * 3 + ["ens"],
                           "dispersal": ["none"] * 3 + ["full"] * 3 + ["full"],
                           "status": ["EN", "VU", "LC", "EN", "LC", "CR", "EN"]})
    features = {"current_none": pd.DataFrame({"protected_share_range": [0.5, 0.1, 0.9], "range_km2": [5.0, 6, 7]},
                                             index=pd.Index(["A", "B", "C"], name="species")),
                "w_full": pd.DataFrame({"protected_share_range": [0.4, 0.0, 0.8], "range_km2": [1.0, 2, 3]},
                                       index=pd.Index(["A", "B", "C"], name="species"))}
    table = protection_table(features, status)
    assert table["species"].tolist() == ["B", "A", "C"]  # C: threatened in a future run only
    assert table.set_index("species").loc["A", "threatened_runs"] == 2  # the ensemble row is not a run
    assert table.set_index("species").loc["C", "protected_share_w_full"] == 0.8


def test_an_ensemble_cell_where_most_members_hold_no_species_has_no_most_threatened_category(tmp_path):
    """Members' richness 0, 0, 1 and most threatened NaN (empty), NaN (empty), CR: the ensemble's median richness is
    0, so it has no most threatened category (it said CR, the one member's); with 1, 1, 0 the CR of the majority
    stays."""
    members = {}
    for i, (richness, category) in enumerate([(0.0, np.nan), (0.0, np.nan), (1.0, 4.0)]):
        layers = member_layers(i, +1.0)
        layers["richness"][1, 1], layers["most_threatened"][1, 1] = richness, category
        layers["threatened_share"][1, 1] = np.nan if richness == 0 else 1.0
        layers["richness"][2, 2], layers["most_threatened"][2, 2] = (1.0, 4.0) if i < 2 else (0.0, np.nan)
        members[f"m{i}_full"] = write_run(tmp_path / f"m{i}_full", layers)
    ensemble_indicators(members, tmp_path / "ens_full", with_status=True)
    assert read(tmp_path / "ens_full" / "richness.tif")[1, 1] == 0
    assert np.isnan(read(tmp_path / "ens_full" / "most_threatened.tif")[1, 1])
    assert np.isnan(read(tmp_path / "ens_full" / "threatened_share.tif")[1, 1])
    assert read(tmp_path / "ens_full" / "most_threatened.tif")[2, 2] == 4
