"""The demo world: files, climate structure, truth consistency, occurrences and determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer

from sdm.demo import VARIABLES, criterion_b_category, generate_demo, load_truth, range_metrics
from sdm.redlist import CATEGORIES, category_code

SMALL = {"rows": 60, "cols": 70, "n_species": 20, "seed": 3}
SCENARIOS = {"warm": {"warming": 2.0, "precip_change": -0.1}, "hot": {"warming": 4.0, "precip_change": -0.3}}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    return out, generate_demo(out, scenarios=SCENARIOS, **SMALL)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    return out, generate_demo(out)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.crs, src.descriptions, src.nodata, src.transform


def _clean_occurrences(path) -> pd.DataFrame:
    occ = pd.read_csv(path, dtype=str, keep_default_na=False)
    lon = pd.to_numeric(occ["decimalLongitude"], errors="coerce")
    lat = pd.to_numeric(occ["decimalLatitude"], errors="coerce")
    ok = lon.notna() & lat.notna() & lat.between(-90, 90) & ~((lon == 0) & (lat == 0))
    return occ.assign(lon=lon, lat=lat)[ok]


def _cells(occ: pd.DataFrame, transform):
    """Row/col index of each WGS84 point on the grid."""
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True).transform(occ["lon"].values,
                                                                                   occ["lat"].values)
    col = np.floor((np.asarray(x) - transform.c) / transform.a).astype(int)
    row = np.floor((np.asarray(y) - transform.f) / transform.e).astype(int)
    return row, col


def test_files_and_returned_keys(small):
    out, paths = small
    assert set(paths) == {"occurrences", "redlist", "current", "warm", "hot", "truth_species", "truth_presence"}
    for p in paths.values():
        assert p.exists() and str(p).startswith(str(out))
    assert paths["warm"].name == "warm.tif" and paths["current"].parent.name == "climate"


def test_geotiffs_crs_shape_bands_and_nodata(small):
    _, paths = small
    masks = []
    for key in ("current", "warm", "hot"):
        data, crs, desc, nodata, transform = _read(paths[key])
        assert crs.to_epsg() == 3035
        assert data.shape == (len(VARIABLES), SMALL["rows"], SMALL["cols"])
        assert data.dtype == np.float32
        assert desc == VARIABLES
        assert np.isnan(nodata)
        assert transform.a == 1000 and transform.e == -1000
        nan = np.isnan(data)
        # water is NaN in every band, and only water
        assert (nan == nan[0]).all()
        assert 0.03 <= nan[0].mean() <= 0.08
        masks.append(nan[0])
    assert all((m == masks[0]).all() for m in masks)


def test_climate_structure(small):
    _, paths = small
    cur = dict(zip(VARIABLES, _read(paths["current"])[0]))
    land = ~np.isnan(cur["bio1"])
    # plausible alpine values
    assert -15 < np.nanmin(cur["bio1"]) < np.nanmax(cur["bio1"]) < 16
    assert (cur["bio6"][land] < cur["bio1"][land]).all()
    assert 300 < np.nanmin(cur["bio12"]) and np.nanmax(cur["bio12"]) < 4000
    # cold places are cold all year: bio1 and bio6 move together
    assert np.corrcoef(cur["bio1"][land], cur["bio6"][land])[0, 1] > 0.8
    # wetter in the west than in the east
    half = cur["bio12"].shape[1] // 2
    assert np.nanmean(cur["bio12"][:, :half]) > np.nanmean(cur["bio12"][:, half:])
    # high places are wet: precipitation falls as temperature rises (orography)
    assert np.corrcoef(cur["bio1"][land], cur["bio12"][land])[0, 1] < -0.3


@pytest.mark.parametrize("name", ["warm", "hot"])
def test_future_warms_and_dries(small, name):
    _, paths = small
    cur = dict(zip(VARIABLES, _read(paths["current"])[0]))
    fut = dict(zip(VARIABLES, _read(paths[name])[0]))
    land = ~np.isnan(cur["bio1"])
    warming, change = SCENARIOS[name]["warming"], SCENARIOS[name]["precip_change"]
    dt = (fut["bio1"] - cur["bio1"])[land]
    assert abs(dt.mean() - warming) < 0.15 * warming
    assert np.abs(dt - warming).max() < 0.2 * warming
    ratio = (fut["bio12"] / cur["bio12"])[land]
    assert abs(ratio.mean() - (1 + change)) < 0.3 * abs(change)
    # rainfall change varies in space, not a scalar
    assert ratio.std() > 0.05 * abs(change)


def test_truth_dataset_matches_species_table(small):
    out, paths = small
    table, ds = load_truth(out)
    assert list(ds["scenario"].values) == ["current", "warm", "hot"]
    assert list(ds["species"].values) == table["species"].tolist()
    assert ds["presence"].dims == ("scenario", "species", "y", "x")
    assert ds["presence"].dtype == np.uint8 and ds["suitability"].dtype == np.float32
    assert ds.rio.crs.to_epsg() == 3035
    _, _, _, _, transform = _read(paths["current"])
    assert ds["x"].values[0] == transform.c + 500 and ds["y"].values[0] == transform.f - 500
    suit = ds["suitability"].values
    pres = ds["presence"].values
    assert 0 <= suit.min() and suit.max() <= 1
    land = ~np.isnan(_read(paths["current"])[0][0])
    assert not pres[:, :, ~land].any()
    # presence is the thresholded suitability, away from float32 rounding at the threshold
    clear = np.abs(suit - 0.5) > 1e-5
    assert ((suit >= 0.5) == pres.astype(bool))[clear].all()
    for sp, cur in zip(table.itertuples(), pres[0]):
        area, eoo, aoo = range_metrics(cur.astype(bool))
        assert sp.true_range_km2 == area > 0
        assert sp.eoo_km2 == pytest.approx(eoo, abs=1e-3) and sp.aoo_km2 == aoo
        assert sp.true_category == criterion_b_category(eoo, aoo)
        # the niche in the table reproduces the stored suitability
        clim = dict(zip(VARIABLES, _read(paths["current"])[0].astype(np.float64)))
        d2 = sum(((clim[v] - getattr(sp, f"{v}_opt")) / getattr(sp, f"{v}_tol")) ** 2 for v in sp.variables.split())
        expected = np.nan_to_num(np.exp(-0.5 * d2), nan=0.0)
        np.testing.assert_allclose(suit[0, table.index[table.species == sp.species][0]], expected, atol=1e-6)


def test_range_metrics_known_shapes():
    pres = np.zeros((10, 10), bool)
    pres[2:4, 2:4] = True  # one aligned 2x2 km block
    assert range_metrics(pres) == (4.0, 1.0, 4.0)
    pres[:] = False
    pres[0, 0] = pres[0, 9] = pres[9, 0] = True  # a right triangle with 9 km legs, three AOO blocks
    area, eoo, aoo = range_metrics(pres)
    assert (area, eoo, aoo) == (3.0, 40.5, 12.0)
    assert criterion_b_category(eoo, aoo) == "CR"
    assert criterion_b_category(50_000, 9) == "CR"
    assert criterion_b_category(4_999, 50_000) == "EN"
    assert criterion_b_category(25_000, 1_000) == "VU"
    assert criterion_b_category(25_000, 5_000) == "NT"
    assert criterion_b_category(30_000, 3_000) == "LC"


def test_occurrences_fall_in_true_presence(small):
    out, paths = small
    table, ds = load_truth(out)
    _, _, _, _, transform = _read(paths["current"])
    occ = _clean_occurrences(paths["occurrences"])
    row, col = _cells(occ, transform)
    inside = (row >= 0) & (row < SMALL["rows"]) & (col >= 0) & (col < SMALL["cols"])
    occ, row, col = occ[inside], row[inside], col[inside]
    pres = ds["presence"].sel(scenario="current").values
    sp_index = {s: i for i, s in enumerate(ds["species"].values)}
    idx = occ["species"].map(sp_index).to_numpy()
    assert pres[idx, row, col].all()
    # every species has enough records, and the truth counts the distinct ones
    distinct = occ.drop_duplicates(["species", "decimalLongitude", "decimalLatitude"])
    counts = distinct.groupby("species").size()
    assert (counts >= 8).all() and set(counts.index) == set(table["species"])
    assert counts.reindex(table["species"]).tolist() == table["n_records"].tolist()


def test_bad_rows_and_duplicates_exist(small):
    _, paths = small
    raw = pd.read_csv(paths["occurrences"], dtype=str, keep_default_na=False)
    assert list(raw.columns) == ["species", "decimalLongitude", "decimalLatitude"]
    lon = pd.to_numeric(raw["decimalLongitude"], errors="coerce")
    lat = pd.to_numeric(raw["decimalLatitude"], errors="coerce")
    empty = (raw["decimalLongitude"] == "") & (raw["decimalLatitude"] == "")
    text = (lon.isna() | lat.isna()) & ~empty
    assert empty.any() and text.any()
    assert (lat > 90).any()
    assert ((lon == 0) & (lat == 0)).any()
    far = lon.notna() & lat.notna() & (lat <= 90) & ~((lon - 9.5).abs() < 3) & ~((lon == 0) & (lat == 0))
    assert far.any()
    n_bad = empty.sum() + text.sum() + (lat > 90).sum() + far.sum() + ((lon == 0) & (lat == 0)).sum()
    assert 0.005 * len(raw) <= n_bad <= 0.03 * len(raw)
    assert raw.duplicated().any()


def test_redlist_matches_truth(small):
    out, paths = small
    table, _ = load_truth(out)
    rl = pd.read_csv(paths["redlist"])
    assert list(rl.columns) == ["scientificName", "redlistCategory"]
    assert rl["scientificName"].is_unique
    truth = table.set_index("species")
    assessed = truth.index[truth["assessed"]]
    assert (~truth["assessed"]).sum() == round(0.2 * SMALL["n_species"])
    listed = rl.set_index("scientificName")["redlistCategory"]
    assert set(assessed) <= set(listed.index)
    # long names, read back by the Red List ingest, give the true categories
    assert listed[assessed].str.contains(" ").any()
    assert (listed[assessed].map(category_code) == truth.loc[assessed, "true_category"]).all()
    # unassessed species are absent or Data Deficient, and that case exists
    others = listed.drop(assessed)
    assert len(others) >= 1 and (others == "Data Deficient").all()
    assert not truth.loc[others.index, "assessed"].any()


def test_species_names_unique_binomials(small):
    out, _ = small
    table, _ = load_truth(out)
    names = table["species"]
    assert names.is_unique and len(names) == SMALL["n_species"]
    assert names.str.fullmatch(r"[A-Z][a-z]+ [a-z]+").all()


def test_deterministic_and_seed_dependent(small, tmp_path):
    _, paths = small
    again = generate_demo(tmp_path / "again", scenarios=SCENARIOS, **SMALL)
    for key in ("occurrences", "redlist", "truth_species"):
        assert again[key].read_bytes() == paths[key].read_bytes()
    np.testing.assert_array_equal(_read(again["hot"])[0], _read(paths["hot"])[0])
    other = generate_demo(tmp_path / "other", scenarios=SCENARIOS, **{**SMALL, "seed": 4})
    assert other["occurrences"].read_bytes() != paths["occurrences"].read_bytes()


def test_default_world_covers_every_category(default):
    out, paths = default
    table, ds = load_truth(out)
    assert set(paths) >= {"ssp126_2070", "ssp585_2070"}
    assert ds.sizes == {"scenario": 3, "species": 40, "y": 200, "x": 200}
    counts = table["true_category"].value_counts()
    assert set(counts.index) == set(CATEGORIES)
    assert (counts >= 3).all()
    # ranges span tens of km2 to most of the world
    assert table["true_range_km2"].min() < 100 and table["true_range_km2"].max() > 20_000
    assert table["n_records"].min() >= 8 and table["n_records"].max() > 200
    # warming shrinks the ranges of the narrow cold-adapted species and the total of all presences
    pres = ds["presence"].sum(["y", "x"]).values
    assert pres[2].sum() < pres[0].sum()
