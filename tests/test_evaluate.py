"""Evaluation code with known answers: set recall of assemblages, equal-size comparison, threat shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from sdm.assemblage import species_histograms, threshold_set_size
from sdm.evaluate import compare_assemblages, estopinan_shares, set_recall, threat_shares


def test_set_recall_perfect_empty_and_partial():
    presence = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)  # (species, cells)
    recorded = pd.DataFrame({"cell": [0, 1, 2, 2], "species": [0, 1, 0, 1]})
    perfect = set_recall(presence, recorded)
    assert perfect["recall"] == 1.0 and perfect["mean_set_size"] == 4 / 3
    assert set_recall(np.zeros_like(presence), recorded)["recall"] == 0.0
    half = set_recall(np.array([[1, 0, 0], [0, 0, 1]], dtype=bool), recorded)
    assert half["recall"] == 0.5


def test_random_sets_recall_their_share_of_species():
    rng = np.random.default_rng(0)
    presence = rng.random((50, 4000)) < 0.2
    recorded = pd.DataFrame({"cell": rng.integers(0, 4000, 5000), "species": rng.integers(0, 50, 5000)})
    assert abs(set_recall(presence, recorded)["recall"] - 0.2) < 0.02


def test_compare_assemblages_matches_set_sizes_and_prefers_the_informative_method():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 255, size=(20, 500)).astype("uint8")
    recorded = pd.DataFrame({"cell": np.arange(500), "species": codes.argmax(axis=0)})  # the top species is recorded
    table = compare_assemblages(codes, np.full(20, 0.9), recorded).set_index("method")
    size = table.iloc[0]["mean_set_size"]
    assert all(abs(table["mean_set_size"] - size) <= 1.0)
    top = table[table.index.str.startswith("top-K")]
    assert (top["recall"] == 1.0).all()  # the recorded species is each cell's most suitable one


def test_histograms_give_the_threshold_set_size():
    codes = np.array([[[10, 200], [254, 255]], [[0, 159], [160, 255]]], dtype="uint8")  # (species, y, x)
    da = xr.DataArray(codes, dims=("species", "y", "x")).chunk({"y": 1, "x": 1})
    hist = species_histograms(da)
    assert hist.shape == (2, 256) and hist[:, 255].tolist() == [1, 1] and hist.sum() == 8
    # thresholds 0.5 -> code 160 (logit 0): species 0 present at 200, 254; species 1 at 160 -> 3 presences / 3 cells
    assert threshold_set_size(hist, [0.5, 0.5]) == 3 / 3
    assert threshold_set_size(hist, [0.5, 0.47]) == 4 / 3  # 0.47 -> code 159 (0.475): species 1 at 159 too


def test_threat_shares_and_estopinan_columns():
    status = pd.DataFrame({"species": ["a", "b", "a", "b"], "scenario": ["current"] * 2 + ["hot"] * 2,
                           "dispersal": ["none", "none", "full", "full"], "status": ["LC", "EN", "CR", "VU"],
                           "no_suitable_cell": [False, False, True, False]})
    shares = threat_shares(status).set_index("scenario")
    assert shares.loc["current", "threatened_share"] == 0.5 and shares.loc["hot", "threatened_share"] == 1.0
    assert shares.loc["hot", "no_suitable_cell"] == 1
    published = pd.DataFrame({"species": ["a", "b", "c"], "detail_nodispersal_present": ["LC", "EXT", "EN"],
                              "detail_dispersal_present": ["LC", "LC", "EN"]})
    table = estopinan_shares(published, {"a", "b"}, "present").set_index("dispersal")
    assert table.loc["none", "threatened_share"] == 0.5 and table.loc["none", "no_suitable_cell"] == 1
    assert table.loc["full", "threatened_share"] == 0.0
