"""Fused mode: per-species sums and per-cell indicators from never-stored predictions equal those of the stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from sdm.climate import ingest_climate, valid_mask
from sdm.demo import generate_demo
from sdm.features import range_features
from sdm.fused import lazy_predictions, run_predictions
from sdm.grid import cell_area_km2
from sdm.indicators import indicator_layers, scenario_presence
from sdm.occurrences import ingest_occurrences
from sdm.predict import open_predictions, predict_scenario
from sdm.train import run_training

PARAMS = {"hidden": 16, "blocks": 1, "dropout": 0.0, "epochs": 3, "batch_size": 128, "background_per_batch": 256,
          "learning_rate": 1e-3, "patience": 3, "block_cells": 10, "seed": 0, "device": "cpu", "baseline": "none",
          "min_records": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    paths = generate_demo(root / "demo", rows=48, cols=40, n_species=8, seed=2,
                          scenarios={"warm": {"warming": 3.0, "precip_change": -0.1}})
    current = ingest_climate(paths["current"], "current")
    future = ingest_climate(paths["warm"], "warm", grid=current.isel(variable=0, drop=True),
                            variables=list(current["variable"].values))
    occurrences, _, _ = ingest_occurrences(paths["occurrences"], current.isel(variable=0, drop=True),
                                           valid_mask(current))
    model = root / "model.pt"
    run_training(current, occurrences, PARAMS, model_path=model, split_path=root / "split.tif", threads=1)
    stores = {}
    for name, cube in (("current", current), ("warm", future)):
        stores[name] = root / f"{name}.zarr"
        predict_scenario(cube, model, stores[name], scenario=name, chunk=16, device="cpu")
    return {"cubes": {"current": current, "warm": future}, "model": model, "stores": stores}


def lazy(world, name, assemblage="threshold"):
    return lazy_predictions(world["cubes"][name], world["model"], scenario=name, chunk=16, device="cpu",
                            assemblage=assemblage)


def test_lazy_predictions_equal_the_stored_ones(world):
    for name in ("current", "warm"):
        stored, fused = open_predictions(world["stores"][name]), lazy(world, name)
        xr.testing.assert_equal(stored["presence"].compute(), fused["presence"].compute())
        xr.testing.assert_allclose(stored["suitability"].compute(), fused["suitability"].compute())
        assert fused["presence"].chunks is not None  # a lazy graph, not an array in memory
        # the trained checkpoint holds the training climate's quantiles: both modes give the same MESS layer
        np.testing.assert_array_equal(stored["mess"].values, fused["mess"].values)


@pytest.mark.parametrize("dispersal", ["full", "none"])
def test_fused_species_sums_equal_materialised(world, dispersal):
    area = cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True))
    stored = range_features(open_predictions(world["stores"]["current"]), open_predictions(world["stores"]["warm"]),
                            dispersal, area)
    fused = range_features(lazy(world, "current"), lazy(world, "warm"), dispersal, area)
    pd.testing.assert_series_equal(stored["range_km2"], fused["range_km2"])  # counts of 1 km2 cells: exact
    pd.testing.assert_series_equal(stored["current_range_km2"], fused["current_range_km2"])
    np.testing.assert_allclose(stored["mean_suitability"], fused["mean_suitability"], rtol=1e-6)
    assert stored["range_km2"].sum() > 0


def test_fused_indicators_equal_materialised(world):
    species = [str(s) for s in open_predictions(world["stores"]["current"])["species"].values]
    status = pd.Series(np.resize(["LC", "VU", "CR", "EN"], len(species)), index=species)
    results = []
    for current, future in (
        (open_predictions(world["stores"]["current"]), open_predictions(world["stores"]["warm"])),
        (lazy(world, "current"), lazy(world, "warm")),
    ):
        valid = current["suitability"].isel(species=0).notnull()
        presence = scenario_presence(current["presence"], future["presence"], "none")
        results.append(indicator_layers(presence, status, valid).compute())
    for name in ("richness", "threatened_count", "most_threatened"):
        np.testing.assert_array_equal(results[0][name].values, results[1][name].values)
    np.testing.assert_allclose(results[0]["threatened_share"].values, results[1]["threatened_share"].values,
                               rtol=1e-6, equal_nan=True)
    assert np.nanmax(results[0]["richness"].values) > 0


def test_run_predictions_reads_cubes_in_fused_mode(world, tmp_path):
    from sdm.climate import write_cube

    for name, cube in world["cubes"].items():
        write_cube(cube, tmp_path / f"{name}.zarr", chunk=16)
    inputs = {"model": world["model"], "current": tmp_path / "current.zarr", "future": tmp_path / "warm.zarr"}
    prediction = {"fused": True, "chunk": 16, "batch_size": 4096, "assemblage": "threshold", "k": 5}
    current, future = run_predictions(inputs, "warm", prediction, device="cpu")
    stored = open_predictions(world["stores"]["warm"])
    xr.testing.assert_equal(stored["presence"].compute(), future["presence"].compute())
    _, none = run_predictions(inputs, "current", prediction, device="cpu")
    assert none is None


def test_fused_average_k_equals_its_materialised_threshold(world):
    from sdm.accessible import AccessibleArea, restrict_presence
    from sdm.assemblage import assemble
    from sdm.model import load_checkpoint

    stored = xr.open_zarr(world["stores"]["current"], consolidated=False, decode_coords="all")["suitability"]
    area = AccessibleArea.from_checkpoint(load_checkpoint(world["model"])[1])
    assert area is not None  # the default: presence kept to each species' accessible area
    expected = restrict_presence(assemble(stored, "average_k", k=2.0).rio.write_crs(
        world["cubes"]["current"].rio.crs), area) == 1
    fused = lazy_predictions(world["cubes"]["current"], world["model"], scenario="current", chunk=16, device="cpu",
                             assemblage="average_k", k=2.0)
    np.testing.assert_array_equal(expected.values, fused["presence"].values)
    assert bool((fused["presence"] <= (assemble(stored, "average_k", k=2.0) == 1)).all())  # only removes
    unrestricted = assemble(stored, "average_k", k=2.0) == 1
    set_size = unrestricted.sum("species").where(fused["suitability"].isel(species=0).notnull()).mean()
    # before the accessible area, the set size is the closest to K that one code threshold gives: this 3-epoch model's logits all lie within [-1.1, 0.6], 17
    # codes of 0.1 logit, and the nearest set sizes there are 4.7, 2.7 and 1.2
    codes = stored.values
    valid = codes[0] != 255
    sizes = [(codes[:, valid] >= c).sum(axis=0).mean() for c in range(255)]
    assert abs(float(set_size) - 2.0) == pytest.approx(min(abs(size - 2.0) for size in sizes))


def count_forwards(monkeypatch) -> list:
    """Record every model forward over a chunk of cells (sdm.predict.predict_block)."""
    import sdm.predict

    calls, forward = [], sdm.predict.predict_block
    monkeypatch.setattr(sdm.predict, "predict_block", lambda block, *a, **k: calls.append(block.shape) or forward(
        block, *a, **k))
    return calls


def test_one_forward_per_chunk_for_both_dispersal_runs(world, monkeypatch):
    """A scenario's range sums for both dispersal assumptions, and the present's range they overlap with, come from
    one pass: each chunk of the current and of the future climate goes through the model once."""
    from sdm.features import scenario_ranges

    area = cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True))
    current, future = lazy(world, "current"), lazy(world, "warm")
    chunks = int(np.prod([len(c) for c in current["presence"].chunks[1:]]))
    calls = count_forwards(monkeypatch)
    ranges = scenario_ranges(current, future, ["full", "none"], area)
    assert len(calls) == 2 * chunks  # current + future, once each
    for dispersal in ("full", "none"):  # the same numbers as one run at a time
        alone = range_features(lazy(world, "current"), lazy(world, "warm"), dispersal, area)
        pd.testing.assert_frame_equal(ranges[dispersal], alone)


def test_one_forward_per_chunk_for_both_dispersal_indicators(world, monkeypatch, tmp_path):
    from sdm.indicators import run_indicators, scenario_indicators

    species = [str(s) for s in open_predictions(world["stores"]["current"])["species"].values]
    status = tmp_path / "status.csv"
    pd.DataFrame({"species": species, "status": np.resize(["LC", "VU", "CR", "EN"], len(species))}).to_csv(
        status, index=False)
    current, future = lazy(world, "current"), lazy(world, "warm")
    chunks = int(np.prod([len(c) for c in current["presence"].chunks[1:]]))
    calls = count_forwards(monkeypatch)
    written = scenario_indicators(current, future, "warm", {d: tmp_path / f"warm_{d}" for d in ("full", "none")},
                                  {"full": status, "none": status}, status)
    assert len(calls) == 2 * chunks
    import rasterio

    for dispersal in ("full", "none"):
        alone = run_indicators(lazy(world, "current"), lazy(world, "warm"), "warm", dispersal,
                               tmp_path / f"alone_{dispersal}", status=status, current_status=status)
        assert sorted(p.name for p in alone) == sorted(p.name for p in written[dispersal])
        for path in alone:
            with rasterio.open(path) as a, rasterio.open(tmp_path / f"warm_{dispersal}" / path.name) as b:
                np.testing.assert_array_equal(a.read(1), b.read(1))


def test_range_sums_from_codes_equal_those_from_decoded_suitability(world):
    """Decoding only each species' present cells (from the uint8 codes) gives the sums of the decoded cube."""
    area = cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True))
    current, future = (open_predictions(world["stores"][n]) for n in ("current", "warm"))
    assert "suitability_code" in current
    coded = range_features(current, future, "none", area)
    decoded = range_features(current.drop_vars("suitability_code"), future.drop_vars("suitability_code"), "none", area)
    pd.testing.assert_series_equal(coded["range_km2"], decoded["range_km2"])
    np.testing.assert_allclose(coded["mean_suitability"], decoded["mean_suitability"], rtol=1e-12)
    assert (coded["mean_suitability"] > 0).any()


def test_average_k_with_its_code_restricts_presence_in_the_prediction_task(world):
    """Fused average-K with its code given (as every fused pass has it): presence is made and kept to the accessible
    area in the prediction task itself (no presence or restriction tasks of their own), with the codes of the
    materialised way: threshold the stored codes, then restrict."""
    import dask

    from sdm.accessible import AccessibleArea, restrict_presence
    from sdm.assemblage import assemble, average_k_code
    from sdm.model import load_checkpoint

    raw = torch.load(world["model"], weights_only=True)
    raw["accessible"]["distance_km"] = 15.0  # cuts the 200 km wide world
    path = Path(str(world["model"]).replace(".pt", "_tight.pt"))
    torch.save(raw, path)
    tight = load_checkpoint(path)[1]
    stored = xr.open_zarr(world["stores"]["current"], consolidated=False, decode_coords="all")["suitability"]
    code = average_k_code(stored, 2.0)
    unrestricted = assemble(stored, "average_k", average_k=code).rio.write_crs(world["cubes"]["current"].rio.crs)
    expected = restrict_presence(unrestricted, AccessibleArea.from_checkpoint(tight))
    fused = lazy_predictions(world["cubes"]["current"], path, scenario="current", chunk=16, device="cpu",
                             assemblage="average_k", k=2.0, average_k=code)
    tasks = " ".join(str(key) for key in dict(fused["presence"].data.__dask_graph__()))
    assert "restrict" not in tasks and "presence_block" not in tasks
    np.testing.assert_array_equal((expected == 1).values, fused["presence"].values)
    removed = int((unrestricted == 1).sum() - (expected == 1).sum())
    assert removed > 0  # the 15 km area removes presences: the test would pass vacuously otherwise
    assert fused["presence"].attrs["accessible_area_km"] == 15.0
    with dask.config.set(scheduler="threads"):  # the tasks change their own arrays: the same codes twice
        np.testing.assert_array_equal(fused["presence"].values, fused["presence"].values)


def test_average_k_threshold_once_per_scenario_saves_a_forward_and_changes_nothing(world, monkeypatch, tmp_path):
    """Fused average-K: the scenario's threshold, computed once (one forward per chunk) and written to a file, gives
    its passes the presence they computed themselves, with one forward per chunk instead of two."""
    from sdm.features import scenario_ranges
    from sdm.fused import average_k_threshold, read_average_k, write_average_k

    area = cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True))
    options = dict(chunk=16, device="cpu", assemblage="average_k", k="auto")
    chunks = int(np.prod([len(c) for c in lazy(world, "current")["presence"].chunks[1:]]))
    calls = count_forwards(monkeypatch)
    ranges = scenario_ranges(lazy_predictions(world["cubes"]["current"], world["model"], scenario="current",
                                              **options), None, ["none"], area)["none"]
    assert len(calls) == 2 * chunks  # the histograms, then the sums
    codes = {}
    for name in ("current", "warm"):
        threshold = average_k_threshold(world["cubes"][name], world["model"], scenario=name, k="auto", chunk=16,
                                        device="cpu")
        write_average_k(threshold, tmp_path / f"{name}.json")
        codes[name] = read_average_k(tmp_path / f"{name}.json")
        assert 0 < codes[name] < 255 and 0 < threshold["probability"] < 1
    calls.clear()
    shared = scenario_ranges(lazy_predictions(world["cubes"]["current"], world["model"], scenario="current",
                                              average_k=codes["current"], **options), None, ["none"], area)["none"]
    assert len(calls) == chunks
    pd.testing.assert_frame_equal(ranges, shared)
    assert ranges["range_km2"].sum() > 0
    inputs = {"model": world["model"], "current": tmp_path / "c.zarr", "future": tmp_path / "w.zarr",
              "average_k_current": tmp_path / "current.json", "average_k_future": tmp_path / "warm.json"}
    from sdm.climate import write_cube

    for name, role in (("current", "c"), ("warm", "w")):
        write_cube(world["cubes"][name], tmp_path / f"{role}.zarr", chunk=16)
    prediction = {"fused": True, "chunk": 16, "batch_size": 4096, "assemblage": "average_k", "k": "auto"}
    _, future = run_predictions(inputs, "warm", prediction, device="cpu")
    alone = lazy_predictions(world["cubes"]["warm"], world["model"], scenario="warm", **options)
    xr.testing.assert_equal(alone["presence"].compute(), future["presence"].compute())


def test_average_k_threshold_from_a_sample_of_cells_forwards_only_the_sample(world, monkeypatch):
    """On a grid with more valid cells than ``sample_cells`` the threshold comes from a seeded uniform sample: only
    the sampled cells go through the model, and the code is the whole grid's (nearly all cells) or within a couple
    of codes of it (a third of them, on this small grid)."""
    from sdm.climate import valid_mask
    from sdm.fused import average_k_threshold

    cube = world["cubes"]["warm"]
    n_valid = int(valid_mask(cube).sum())
    options = dict(scenario="warm", k="auto", chunk=16, device="cpu")
    exact = average_k_threshold(cube, world["model"], **options)
    assert exact["cells"] == n_valid
    calls = count_forwards(monkeypatch)
    nearly_all = average_k_threshold(cube, world["model"], sample_cells=n_valid - 2, batch_size=512, **options)
    assert sum(int(np.prod(shape[1:])) for shape in calls) == n_valid - 2  # the sample, in batches of 512
    assert max(shape[2] for shape in calls) == 512
    assert nearly_all["cells"] == n_valid - 2 and nearly_all["code"] == exact["code"]
    third = average_k_threshold(cube, world["model"], sample_cells=n_valid // 3, seed=1, **options)
    assert abs(third["code"] - exact["code"]) <= 2
    again = average_k_threshold(cube, world["model"], sample_cells=n_valid // 3, seed=1, **options)
    assert again == third  # seeded


@pytest.mark.parametrize("text", ["", "{}", '{"code": 300}', '{"code": "12"}'])
def test_a_bad_average_k_file_is_one_line_naming_it(tmp_path, text):
    from sdm.fused import read_average_k

    path = tmp_path / "warm.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^{path}: .*average-K") as error:
        read_average_k(path)
    assert "\n" not in str(error.value)


def test_every_run_of_every_scenario_from_one_forward_per_chunk_of_each_climate(world, monkeypatch, tmp_path):
    """Fused mode's range sums and indicators of all runs at once: the present's forward of a chunk serves its own
    range and every scenario's overlap, so each climate goes through the model once (one scenario given twice here,
    under two names), and the same pass stores presence as bits, from which the indicators of every run are made
    with no forward at all; the numbers are those of one scenario at a time from the predictions."""
    import rasterio

    from sdm.features import all_scenario_ranges, scenario_ranges
    from sdm.indicators import all_indicators, run_indicators
    from sdm.packed import PRESENCE_BITS, open_presence_store, unpack_presence

    area = cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True))
    current = lazy(world, "current")
    chunks = int(np.prod([len(c) for c in current["presence"].chunks[1:]]))
    calls = count_forwards(monkeypatch)
    stores = {name: tmp_path / "presence" / f"{name}.zarr" for name in ("current", "warm", "warm2")}
    tables = all_scenario_ranges(current, {"warm": lazy(world, "warm"), "warm2": lazy(world, "warm")},
                                 ["full", "none"], area, presence_stores=stores)
    assert len(calls) == 3 * chunks  # the present once, each scenario once, stores included
    assert not list((tmp_path / "presence").glob(".*partial"))
    for name, source in (("current", "current"), ("warm2", "warm")):
        store, predicted = open_presence_store(stores[name]), lazy(world, source)
        assert store.attrs["species"] == [str(s) for s in predicted["species"].values]
        assert store.rio.crs == predicted.rio.crs and store[PRESENCE_BITS].dtype == np.uint64
        np.testing.assert_array_equal(unpack_presence(store[PRESENCE_BITS].values, len(predicted["species"])),
                                      predicted["presence"].values)
        np.testing.assert_array_equal(store["mess"].values, predicted["mess"].values)
        np.testing.assert_array_equal(store["valid"].values, predicted["suitability"].isel(species=0).notnull())
    pd.testing.assert_frame_equal(tables["current"]["none"],
                                  scenario_ranges(lazy(world, "current"), None, ["none"], area)["none"])
    for name in ("warm", "warm2"):
        for dispersal in ("full", "none"):
            pd.testing.assert_frame_equal(tables[name][dispersal], range_features(
                lazy(world, "current"), lazy(world, "warm"), dispersal, area))
    assert (tables["warm"]["none"]["range_km2"] <= tables["current"]["none"]["range_km2"]).all()

    species = [str(s) for s in current["species"].values]
    status = tmp_path / "status.csv"
    pd.DataFrame({"species": species, "status": np.resize(["LC", "VU", "CR", "EN"], len(species))}).to_csv(
        status, index=False)
    keys = ["current", ("warm", "full"), ("warm", "none"), ("warm2", "none")]
    calls.clear()
    written = all_indicators(open_presence_store(stores["current"]),
                             {name: open_presence_store(stores[name]) for name in ("warm", "warm2")},
                             {key: tmp_path / "all" / str(key) for key in keys}, dict.fromkeys(keys, status), status)
    assert calls == []  # presence read back as bits: no forward
    expected = {"current": run_indicators(lazy(world, "current"), None, "current", "none", tmp_path / "now",
                                          status=status, current_status=status)}
    for key in keys[1:]:
        expected[key] = run_indicators(lazy(world, "current"), lazy(world, "warm"), "warm", key[1],
                                       tmp_path / f"alone_{key[1]}", status=status, current_status=status)
    for key in keys:
        assert sorted(p.name for p in written[key]) == sorted(p.name for p in expected[key])
        for path in expected[key]:
            with rasterio.open(path) as a, rasterio.open(tmp_path / "all" / str(key) / path.name) as b:
                np.testing.assert_array_equal(a.read(1), b.read(1))


def test_a_folder_that_is_not_a_presence_store_is_one_line_naming_it(world, tmp_path):
    from sdm.packed import open_presence_store

    stored = world["stores"]["current"]  # a prediction store: no packed presence
    with pytest.raises(ValueError, match=f"^{stored}: not a presence store .*--forcerun range_sums$") as error:
        open_presence_store(stored)
    with pytest.raises(ValueError, match=f"^{tmp_path / 'absent.zarr'}: not a presence store") as error:
        open_presence_store(tmp_path / "absent.zarr")
    assert "\n" not in str(error.value)


def test_fused_mode_honours_the_prediction_precision(world, tmp_path):
    """``prediction.precision`` reaches the fused forwards (it used to apply to stored predictions only)."""
    from sdm.climate import write_cube

    write_cube(world["cubes"]["warm"], tmp_path / "warm.zarr", chunk=16)
    stored = {}
    for precision in ("float32", "bfloat16"):
        predict_scenario(world["cubes"]["warm"], world["model"], tmp_path / f"{precision}.zarr", scenario="warm",
                         chunk=16, device="cpu", precision=precision)
        stored[precision] = open_predictions(tmp_path / f"{precision}.zarr")["suitability_code"].values
    assert (stored["float32"] != stored["bfloat16"]).any()  # the demo model's codes move with the precision
    inputs = {"model": world["model"], "current": tmp_path / "warm.zarr", "future": tmp_path / "warm.zarr"}
    prediction = {"fused": True, "chunk": 16, "batch_size": 4096, "assemblage": "threshold", "k": 5,
                  "precision": "bfloat16"}
    _, fused = run_predictions(inputs, "warm", prediction, device="cpu")
    np.testing.assert_array_equal(fused["suitability_code"].values, stored["bfloat16"])


def test_explorer_display_predictions_written_once_per_scenario(world, monkeypatch, tmp_path):
    """Fused explorer: with a scratch folder the display predictions of every species come from one forward per
    chunk, however many species batches the explorer reads, and equal the lazy ones."""
    from sdm.climate import write_cube
    from sdm.maps.explorer import display_predictions

    write_cube(world["cubes"]["warm"], tmp_path / "warm.zarr", chunk=16)
    prediction = {"fused": True, "batch_size": 4096, "assemblage": "threshold", "k": 5}
    lazy = display_predictions({"warm": tmp_path / "warm.zarr"}, prediction, world["model"], "cpu", 1,
                               max_px=12)["warm"]
    species = lazy["species"].values
    calls = count_forwards(monkeypatch)
    stored = display_predictions({"warm": tmp_path / "warm.zarr"}, prediction, world["model"], "cpu", 1,
                                 max_px=12, scratch=tmp_path / "scratch")["warm"]
    n_chunks = len(calls)
    assert n_chunks > 0 and (tmp_path / "scratch" / "warm.zarr").is_dir()
    import zarr

    from sdm.maps.explorer import SPECIES_PER_CHUNK

    stored_chunks = zarr.open_group(tmp_path / "scratch" / "warm.zarr", mode="r")["suitability"].chunks
    assert stored_chunks[0] == min(SPECIES_PER_CHUNK, len(species))  # a batch of species reads its own chunks
    for start in range(0, len(species), 3):  # the explorer reads batches of species
        batch = species[start:start + 3]
        xr.testing.assert_equal(stored["presence"].sel(species=batch).compute(),
                                lazy["presence"].sel(species=batch).compute())
        np.testing.assert_array_equal(stored["suitability"].sel(species=batch).values,
                                      lazy["suitability"].sel(species=batch).values)
    assert len(calls) > n_chunks  # the lazy reads forwarded again ...
    calls.clear()
    for start in range(0, len(species), 3):
        stored["suitability"].sel(species=species[start:start + 3]).values
    assert calls == []  # ... the stored ones never do
