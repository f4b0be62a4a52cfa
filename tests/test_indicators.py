"""Unit tests of sdm.indicators on a hand-made presence cube and hand-made prediction stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from sdm.indicators import LAYERS, indicator_layers, run_indicators, run_layers, scenario_presence, write_indicators
from sdm.predict import NODATA, write_predictions

SPECIES = ["least", "vulnerable", "critical"]
STATUS = pd.Series({"least": "LC", "vulnerable": "VU", "critical": "CR"})
X, Y = [4_000_500.0, 4_001_500.0], [3_000_500.0, 2_999_500.0]
NAN = np.nan


def _presence(values) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=bool), dims=("species", "y", "x"),
                        coords={"species": SPECIES, "y": Y, "x": X})


# cell (0, 0): all three; (0, 1): only LC; (1, 0): none; (1, 1): VU only but outside the valid mask
CURRENT = _presence([[[1, 1], [0, 0]],
                     [[1, 0], [0, 1]],
                     [[1, 0], [0, 0]]])
VALID = xr.DataArray([[True, True], [True, False]], dims=("y", "x"), coords={"y": Y, "x": X})


def test_indicator_layers_on_hand_made_cube():
    ds = indicator_layers(CURRENT, STATUS, VALID)
    assert set(ds.data_vars) == set(LAYERS)
    np.testing.assert_array_equal(ds["richness"], [[3, 1], [0, NAN]])
    np.testing.assert_array_equal(ds["threatened_count"], [[2, 0], [0, NAN]])
    np.testing.assert_allclose(ds["threatened_share"], [[2 / 3, 0], [NAN, NAN]])
    np.testing.assert_array_equal(ds["most_threatened"], [[4, 0], [NAN, NAN]])  # CR = 4, LC = 0
    for name in LAYERS:
        assert ds[name].dtype == np.float32, name
        assert ds[name].dims == ("y", "x")
        assert ds[name].attrs["units"]


def test_most_threatened_codes_and_unknown_status():
    # 'vulnerable' alone -> VU = 2; a species without status (or DD) counts as neither threatened nor ranked
    presence = _presence([[[0, 0], [0, 1]],
                          [[1, 0], [0, 1]],
                          [[0, 0], [0, 0]]])
    status = pd.Series({"least": "DD", "vulnerable": "VU"})  # 'critical' missing
    ds = indicator_layers(presence, status, xr.ones_like(VALID))
    np.testing.assert_array_equal(ds["most_threatened"], [[2, NAN], [NAN, 2]])
    np.testing.assert_array_equal(ds["richness"], [[1, 0], [0, 2]])
    np.testing.assert_array_equal(ds["threatened_count"], [[1, 0], [0, 1]])
    np.testing.assert_allclose(ds["threatened_share"], [[1, NAN], [NAN, 0.5]])


def test_scenario_presence_dispersal():
    future = _presence([[[0, 1], [1, 0]],
                        [[1, 1], [1, 1]],
                        [[0, 0], [0, 0]]])
    assert scenario_presence(CURRENT, None, "full") is CURRENT
    np.testing.assert_array_equal(scenario_presence(CURRENT, future, "full"), future)
    np.testing.assert_array_equal(scenario_presence(CURRENT, future, "none"), future.values & CURRENT.values)
    with pytest.raises(ValueError, match="partial"):
        scenario_presence(CURRENT, future, "partial")


def test_future_runs_get_their_change_against_the_present():
    future = _presence([[[1, 1], [1, 0]],
                        [[0, 0], [1, 0]],
                        [[0, 1], [1, 0]]])
    runs = run_layers(CURRENT, future, VALID, {"full": STATUS, "none": STATUS}, STATUS)
    ds = runs["full"]
    np.testing.assert_array_equal(ds["richness_change"], [[1 - 3, 2 - 1], [3 - 0, NAN]])
    np.testing.assert_array_equal(ds["threatened_count_change"], [[0 - 2, 1 - 0], [2 - 0, NAN]])
    np.testing.assert_allclose(ds["threatened_share_change"], [[0 - 2 / 3, 0.5 - 0], [NAN, NAN]], rtol=1e-6)
    for name in ("richness", "threatened_count", "threatened_share"):
        assert ds[f"{name}_change"].dtype == np.float32 and ds[f"{name}_change"].attrs["units"]
    xr.testing.assert_equal(ds["richness"], indicator_layers(future, STATUS, VALID)["richness"])
    assert "most_threatened_change" not in ds
    # no dispersal: the future range inside the present one; (0, 0) keeps LC, (0, 1) keeps LC
    np.testing.assert_array_equal(runs["none"]["richness"], [[1, 1], [0, NAN]])
    np.testing.assert_array_equal(runs["none"]["richness_change"], [[1 - 3, 1 - 1], [0, NAN]])
    alone = run_layers(CURRENT, future, VALID, {"full": None}, None)["full"]  # no Red List: richness only
    assert list(alone.data_vars) == ["richness", "richness_change"]
    np.testing.assert_array_equal(alone["richness_change"], ds["richness_change"])


def test_layers_come_from_one_task_per_block():
    """Each block of the presence cubes feeds every layer of every run through one task, so it is released at
    once (memory stays at a few blocks whatever the grid)."""
    current, future = CURRENT.chunk({"y": 1, "x": 1}), CURRENT.chunk({"y": 1, "x": 1})
    runs = run_layers(current, future, VALID, {"full": STATUS, "none": STATUS}, STATUS)
    graph = {**runs["full"].__dask_graph__(), **runs["none"].__dask_graph__()}
    consumers = [k for k, task in graph.items() if "_indicators_block" in str(k)]
    assert len(consumers) == 4  # one per block of the 2 x 2 grid


def test_write_indicators_geotiffs_and_zarr(tmp_path):
    ds = indicator_layers(CURRENT, STATUS, VALID)
    paths = write_indicators(ds, tmp_path / "run", "EPSG:3035")
    assert sorted(p.name for p in paths) == sorted(f"{name}.tif" for name in LAYERS)
    for path in paths:
        with rasterio.open(path) as src:
            assert src.crs == rasterio.crs.CRS.from_epsg(3035)
            assert src.dtypes == ("float32",)
            assert np.isnan(src.nodata)
            assert (src.height, src.width) == (2, 2)
            assert src.transform.a == pytest.approx(1000) and src.transform.c == pytest.approx(4_000_000)
            band = src.read(1)
            assert "units" in src.tags()
        np.testing.assert_array_equal(band, ds[path.stem].values)
    stored = xr.open_zarr(tmp_path / "run" / "indicators.zarr", consolidated=False, decode_coords="all")
    assert set(LAYERS) <= set(stored.data_vars)
    np.testing.assert_array_equal(stored["richness"].values, ds["richness"].values)
    assert stored.rio.crs.to_epsg() == 3035


def test_indicator_geotiffs_are_cloud_optimised_with_overviews(tmp_path):
    """GDAL's COG layout (header and overviews first, tiles in order), tiled, with overviews on a large grid; the
    category layer's overviews keep category codes (mode), the others are means."""
    rng = np.random.default_rng(0)
    shape = (700, 600)
    layers = xr.Dataset({
        "richness": (("y", "x"), rng.uniform(0, 50, shape).astype("float32")),
        "most_threatened": (("y", "x"), rng.integers(0, 5, shape).astype("float32")),
    }, coords={"y": 3_000_000 - 1000 * np.arange(shape[0]) - 500, "x": 4_000_000 + 1000 * np.arange(shape[1]) + 500})
    paths = write_indicators(layers, tmp_path / "run", "EPSG:3035")
    for path in paths:
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG", path.name
            assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
            assert src.overviews(1) == [2, 4]  # down to the tile size
            overview = src.read(1, out_shape=(350, 300))
            full = src.read(1)
        if path.stem == "most_threatened":
            assert set(np.unique(overview)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        else:
            assert float(overview.mean()) == pytest.approx(float(full.mean()), rel=0.01)
            assert not set(np.unique(overview)) <= set(np.unique(full))  # means, not picked cells



def test_a_future_listing_its_species_in_another_order_is_not_paired_by_position():
    """The blocks pair present and future species by position: a future in another order raises (as the range
    features do) instead of giving one species' future to another; the same future in the present's order passes."""
    reversed_future = FUTURE.isel(species=slice(None, None, -1))
    with pytest.raises(ValueError, match="along 'species'"):
        run_layers(CURRENT, reversed_future, VALID, {"full": STATUS}, STATUS)
    aligned = run_layers(CURRENT, reversed_future.sel(species=SPECIES), VALID, {"full": STATUS}, STATUS)["full"]
    xr.testing.assert_equal(aligned["richness"], indicator_layers(FUTURE, STATUS, VALID)["richness"])


def test_indicator_geotiffs_name_their_band_and_unit_and_tag_categories_only_where_coded(tmp_path):
    """Each band is described by its layer's name with the layer's unit (what QGIS shows); only the category layer
    carries the ``categories`` tag (the category of each code)."""
    ds = run_layers(CURRENT, FUTURE, VALID, {"full": STATUS}, STATUS)["full"]
    paths = {p.stem: p for p in write_indicators(ds, tmp_path / "run", "EPSG:3035")}
    for name, path in paths.items():
        with rasterio.open(path) as src:
            assert src.descriptions == (name,), name
            assert src.units == (ds[name].attrs["units"],), name
            assert src.tags()["units"] == ds[name].attrs["units"]
            assert ("categories" in src.tags()) == (name == "most_threatened"), name
    with rasterio.open(paths["most_threatened"]) as src:
        assert src.tags()["categories"] == "LC,NT,VU,EN,CR"
        assert src.units == ("category code (0 LC, 1 NT, 2 VU, 3 EN, 4 CR)",)
    with rasterio.open(paths["richness_change"]) as src:
        assert src.units == ("number of species",)


# --- run_indicators on prediction stores ------------------------------------------------------------------------

def _store(path, presence: xr.DataArray, nodata: np.ndarray, mess=None):
    """A predictions store as predict_scenario writes it (uint8 codes, 255 = no data, CRS), with a float32 MESS
    layer when ``mess`` (y, x) is given."""
    codes = np.where(presence.values, 200, 10).astype("uint8")
    codes[:, nodata] = NODATA
    flags = presence.values.astype("uint8")
    flags[:, nodata] = NODATA
    ds = xr.Dataset({"suitability": (("species", "y", "x"), codes), "presence": (("species", "y", "x"), flags)},
                    coords={"species": SPECIES, "y": Y, "x": X})
    if mess is not None:
        ds["mess"] = (("y", "x"), np.asarray(mess, dtype="float32"))
    write_predictions(ds.rio.write_crs("EPSG:3035").chunk(), path, progress=False)
    return path


FUTURE = _presence([[[1, 1], [1, 0]],
                    [[0, 0], [1, 0]],
                    [[0, 1], [1, 0]]])
NODATA_CELLS = ~VALID.values


@pytest.fixture
def stores(tmp_path):
    return (_store(tmp_path / "current.zarr", CURRENT, NODATA_CELLS),
            _store(tmp_path / "ssp585.zarr", FUTURE, NODATA_CELLS))


def _read(path):
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 3035 and src.dtypes == ("float32",)
        return src.read(1)


def test_run_indicators_without_status_writes_only_richness(stores, tmp_path):
    current, future = stores
    paths = run_indicators(current, future, "current", "none", tmp_path / "current_none")
    assert [p.name for p in paths] == ["richness.tif"]
    np.testing.assert_array_equal(_read(paths[0]), [[3, 1], [0, NAN]])

    paths = run_indicators(current, future, "ssp585", "full", tmp_path / "ssp585_full")
    assert sorted(p.name for p in paths) == ["richness.tif", "richness_change.tif"]
    out = tmp_path / "ssp585_full"
    np.testing.assert_array_equal(_read(out / "richness.tif"), [[1, 2], [3, NAN]])
    np.testing.assert_array_equal(_read(out / "richness_change.tif"), [[-2, 1], [3, NAN]])
    assert not (out / "threatened_count.tif").exists()
    assert (out / "indicators.zarr").exists()


def test_a_cell_without_data_in_the_scenario_has_none_in_its_layers(stores, tmp_path):
    # the climate model's land mask lacks cell (0, 0), which has data in the present: no data there in the
    # scenario's layers and their change, not an empty cell that lost every species
    current, _ = stores
    gap = NODATA_CELLS.copy()
    gap[0, 0] = True
    future = _store(tmp_path / "gap.zarr", FUTURE, gap)
    run_indicators(current, future, "ssp585", "full", tmp_path / "gap_full")
    np.testing.assert_array_equal(_read(tmp_path / "gap_full" / "richness.tif"), [[NAN, 2], [3, NAN]])
    np.testing.assert_array_equal(_read(tmp_path / "gap_full" / "richness_change.tif"), [[NAN, 1], [3, NAN]])


def test_run_indicators_no_dispersal_keeps_future_inside_current(stores, tmp_path):
    current, future = stores
    run_indicators(current, future, "ssp585", "none", tmp_path / "ssp585_none")
    # future & current: (0,0) least only; (0,1) least; (1,0) none
    np.testing.assert_array_equal(_read(tmp_path / "ssp585_none" / "richness.tif"), [[1, 1], [0, NAN]])
    np.testing.assert_array_equal(_read(tmp_path / "ssp585_none" / "richness_change.tif"), [[-2, 0], [0, NAN]])


def test_run_indicators_with_status(stores, tmp_path):
    current, future = stores
    status_path = tmp_path / "status.csv"
    STATUS.rename("status").rename_axis("species").reset_index().to_csv(status_path, index=False)
    paths = run_indicators(current, future, "ssp585", "full", tmp_path / "ssp585_full", status=status_path,
                           current_status=status_path)
    names = {p.stem for p in paths}
    assert set(LAYERS) <= names
    assert {"richness_change", "threatened_count_change", "threatened_share_change"} <= names
    out = tmp_path / "ssp585_full"
    np.testing.assert_array_equal(_read(out / "threatened_count.tif"), [[0, 1], [2, NAN]])
    np.testing.assert_array_equal(_read(out / "most_threatened.tif"), [[0, 4], [4, NAN]])
    np.testing.assert_array_equal(_read(out / "threatened_count_change.tif"), [[-2, 1], [2, NAN]])

    paths = run_indicators(current, future, "current", "none", tmp_path / "current_none", status=status_path,
                           current_status=status_path)
    assert sorted(p.stem for p in paths) == sorted(LAYERS)
    np.testing.assert_array_equal(_read(tmp_path / "current_none" / "most_threatened.tif"), [[4, 0], [NAN, NAN]])


def test_mess_geotiff_is_the_scenario_climate_s(tmp_path, caplog):
    current_mess, future_mess = [[80, 40], [10, NAN]], [[60, -5], [-30, NAN]]
    current = _store(tmp_path / "current.zarr", CURRENT, NODATA_CELLS, current_mess)
    future = _store(tmp_path / "ssp585.zarr", FUTURE, NODATA_CELLS, future_mess)
    for dispersal in ("full", "none"):  # MESS is a property of the climate: the same for every dispersal
        paths = run_indicators(current, future, "ssp585", dispersal, tmp_path / f"ssp585_{dispersal}")
        assert tmp_path / f"ssp585_{dispersal}" / "mess.tif" in paths
        np.testing.assert_array_equal(_read(tmp_path / f"ssp585_{dispersal}" / "mess.tif"), future_mess)
    run_indicators(current, future, "current", "none", tmp_path / "current_none")
    np.testing.assert_array_equal(_read(tmp_path / "current_none" / "mess.tif"), current_mess)

    old = _store(tmp_path / "old.zarr", CURRENT, NODATA_CELLS)  # no MESS layer: no GeoTIFF, and the log says so
    with caplog.at_level("WARNING", logger="sdm.indicators"):
        paths = run_indicators(old, old, "current", "none", tmp_path / "old_none")
    assert "mess.tif" not in {p.name for p in paths} and "no mess.tif" in caplog.text


def test_streamed_indicators_equal_the_in_memory_ones(stores, tmp_path):
    """Indicators written chunk by chunk (Zarr first, then one layer at a time) are those of the in-memory path."""
    import dask.array

    from sdm.indicators import write_indicators_streamed

    current, future = stores
    status_path = tmp_path / "status.csv"
    STATUS.rename("status").rename_axis("species").reset_index().to_csv(status_path, index=False)
    run_indicators(current, future, "ssp585", "none", tmp_path / "streamed", status=status_path,
                              current_status=status_path)
    from sdm.predict import open_predictions

    now, then = open_predictions(current), open_predictions(future)
    valid = now["suitability"].isel(species=0).notnull()
    layers = run_layers(now["presence"], then["presence"], valid, {"none": STATUS}, STATUS)["none"]
    in_memory = write_indicators(layers.compute(), tmp_path / "in_memory", now.rio.crs)
    for path in in_memory:
        np.testing.assert_array_equal(_read(path), _read(tmp_path / "streamed" / path.name))
    lazy = layers.chunk({"y": 1, "x": 1})  # many small chunks: the streamed writer handles any chunking
    assert isinstance(lazy["richness"].data, dask.array.Array)
    again = write_indicators_streamed({"none": lazy}, {"none": tmp_path / "chunked"}, now.rio.crs)
    for path in again["none"]:
        np.testing.assert_array_equal(_read(path), _read(tmp_path / "in_memory" / path.name))


def test_streamed_indicators_are_written_a_region_of_blocks_at_a_time(stores, tmp_path, monkeypatch):
    """Memory bounded by a region, not the grid: one Dask computation per region of at most ``per_write`` blocks
    (all runs' layers of the region at once), and the same files as one computation over the whole grid."""
    import dask

    from sdm.indicators import write_indicators_streamed
    from sdm.predict import open_predictions

    current, future = stores
    now, then = open_predictions(current), open_predictions(future)
    valid = now["suitability"].isel(species=0).notnull()
    runs = run_layers(now["presence"], then["presence"], valid, {"full": STATUS, "none": STATUS}, STATUS)
    runs = {d: layers.chunk({"y": 4, "x": 4}) for d, layers in runs.items()}
    blocks_y, blocks_x = len(runs["none"].chunks["y"]), len(runs["none"].chunks["x"])
    whole = write_indicators_streamed(runs, {d: tmp_path / f"whole_{d}" for d in runs}, now.rio.crs,
                                      per_write=blocks_y * blocks_x)
    computations, compute = [], dask.compute
    monkeypatch.setattr(dask, "compute", lambda *a, **k: computations.append(len(a)) or compute(*a, **k))
    regions = write_indicators_streamed(runs, {d: tmp_path / f"regions_{d}" for d in runs}, now.rio.crs, per_write=2)
    assert len(computations) == blocks_y * -(-blocks_x // 2) and set(computations) == {2}  # both runs each time
    for d in runs:
        assert [p.name for p in regions[d]] == [p.name for p in whole[d]]  # the same files, region by region
        for path in whole[d]:
            np.testing.assert_array_equal(_read(path), _read(tmp_path / f"regions_{d}" / path.name))


@pytest.mark.parametrize("with_status", [True, False])
def test_a_block_without_data_takes_the_short_way_to_the_same_layers(with_status):
    """A block of sea (no cell with data) skips the passes over the species; its layers are those of the full
    computation: NaN everywhere, as many as for a block with data."""
    from sdm.indicators import _indicators_block, _status_arrays

    species = [f"s{i}" for i in range(6)]
    status = _status_arrays(species, pd.Series(["LC", "VU", "CR", "EN", "NT", "LC"], index=species)) if with_status \
        else None
    runs = ((("full", status), ("none", status)), (("none", status),))
    present = np.zeros((6, 3, 4), dtype=bool)
    land = _indicators_block(np.ones((1, 3, 4), dtype=bool), present, present, present, runs=runs,
                             current_status=status, present=True, packed=False)
    sea = _indicators_block(np.zeros((1, 3, 4), dtype=bool), present, present, present, runs=runs,
                            current_status=status, present=True, packed=False)
    assert sea.shape == land.shape and sea.dtype == land.dtype and np.isnan(sea).all()
