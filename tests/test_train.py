"""Unit tests of sdm.train: spatial blocks, metrics, and a small end-to-end training on a synthetic cube."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr

from sdm.codes import STEP, decode
from sdm.model import load_checkpoint
from sdm.train import (
    SPLITS,
    auc_per_species,
    max_tss_threshold,
    run_training,
    spatial_blocks,
    train_sdm,
    tss_at,
)

N = 60
SPECIES_RULES = {
    # presence as a known function of the (unscaled) variables v0, v1, v2 in about [-1, 1]
    # (ranges of 10-20 % of the grid: background points include presences, so wide ranges cap the AUC near 0.8)
    "sp_a": lambda v0, v1, v2: v0 > 0.7,
    "sp_b": lambda v0, v1, v2: v1 < -0.7,
    "sp_c": lambda v0, v1, v2: v2 > 0.7,
    "sp_d": lambda v0, v1, v2: np.abs(v0 - v1) < 0.15,
}
FAST = {"hidden": 32, "blocks": 1, "dropout": 0.0, "epochs": 15, "batch_size": 64, "background_per_batch": 256,
        "learning_rate": 3e-3, "patience": 15, "block_cells": 6, "seed": 0, "device": "cpu",
        "baseline": "logistic"}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The code under test may call torch.set_num_threads; keep that from leaking into other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def synthetic_world(seed: int = 0):
    """(cube (variable, y, x) float32 EPSG:3035 with a nodata corner, occurrences, true presence (species, y, x))."""
    yy, xx = np.mgrid[0:N, 0:N] / (N - 1)
    v0 = 2 * xx - 1 + 0.3 * np.sin(6 * yy)
    v1 = 2 * yy - 1 + 0.3 * np.cos(5 * xx)
    v2 = np.sin(3 * np.pi * xx) * np.cos(3 * np.pi * yy)
    # different scales per variable, so the standardisation matters
    data = np.stack([15 + 10 * v0, 1000 + 500 * v1, v2]).astype("float32")
    data[:, :4, :4] = np.nan
    data[1, -2:, -3:] = np.nan  # one variable missing is enough to make a cell invalid
    valid = np.isfinite(data).all(axis=0)
    cube = xr.DataArray(
        data, dims=("variable", "y", "x"), name="climate",
        coords={"variable": ["bio1", "bio12", "bio4"], "y": 3_000_000 - 1000 * (np.arange(N) + 0.5),
                "x": 4_000_000 + 1000 * (np.arange(N) + 0.5)},
    ).rio.write_crs("EPSG:3035")
    rng = np.random.default_rng(seed)
    truth, rows = {}, []
    for name, rule in SPECIES_RULES.items():
        present = rule(v0, v1, v2) & valid
        truth[name] = present
        r, c = np.nonzero(present)
        pick = rng.choice(len(r), size=min(150, len(r)), replace=False)
        rows.append(pd.DataFrame({"species": name, "row": r[pick], "col": c[pick]}))
    occurrences = pd.concat(rows, ignore_index=True)
    return cube, occurrences, truth


@pytest.fixture(scope="module")
def world():
    return synthetic_world()


@pytest.fixture(scope="module")
def trained(world):
    cube, occurrences, _ = world
    return train_sdm(cube, occurrences, progress=False, **FAST)


# --- spatial blocks ---------------------------------------------------------------------------------------------

def test_spatial_blocks_cover_every_cell_with_the_three_codes():
    split = spatial_blocks((33, 47), 5, seed=1)
    assert split.shape == (33, 47)
    assert set(np.unique(split)) == set(SPLITS.values()) == {0, 1, 2}


def test_whole_blocks_share_one_code():
    block = 7
    split = spatial_blocks((30, 25), block, seed=4)
    for r in range(0, 30, block):
        for c in range(0, 25, block):
            assert len(np.unique(split[r:r + block, c:c + block])) == 1, (r, c)


def test_spatial_block_fractions_roughly_respected():
    split = spatial_blocks((100, 100), 5, seed=0)  # 400 blocks
    shares = np.bincount(split.ravel(), minlength=3) / split.size
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.01)


def test_spatial_blocks_deterministic_per_seed():
    a = spatial_blocks((40, 40), 4, seed=7)
    np.testing.assert_array_equal(a, spatial_blocks((40, 40), 4, seed=7))
    assert not np.array_equal(a, spatial_blocks((40, 40), 4, seed=8))


def test_spatial_blocks_smallest_grid_still_has_all_codes():
    split = spatial_blocks((10, 30), 10, seed=0)  # exactly 3 blocks
    assert sorted(np.unique(split[:, ::10][0])) == [0, 1, 2]


@pytest.mark.parametrize("shape, block", [((10, 10), 10), ((10, 20), 10), ((5, 5), 50)])
def test_too_few_blocks_raises(shape, block):
    with pytest.raises(ValueError, match="block_cells"):
        spatial_blocks(shape, block, seed=0)


# --- metrics ----------------------------------------------------------------------------------------------------

def test_max_tss_threshold_on_separable_scores():
    presence = np.array([0.62, 0.7, 0.95, 0.8])
    background = np.array([0.05, 0.3, 0.41, 0.2, 0.1])
    threshold, tss = max_tss_threshold(presence, background)
    assert tss == pytest.approx(1.0)
    assert 0.41 < threshold <= 0.62
    assert tss_at(presence, background, threshold) == pytest.approx(1.0)


def test_max_tss_threshold_with_overlap():
    # best cut is at 0.5: sensitivity 3/4, specificity 3/3 -> TSS 0.75
    threshold, tss = max_tss_threshold(np.array([0.2, 0.5, 0.6, 0.9]), np.array([0.1, 0.3, 0.4]))
    assert threshold == pytest.approx(0.5)
    assert tss == pytest.approx(0.75)


def test_max_tss_threshold_empty_is_nan():
    assert all(np.isnan(max_tss_threshold(np.array([]), np.array([0.1]))))


def test_auc_per_species_perfect_random_and_without_presences():
    rng = np.random.default_rng(0)
    n = 20000
    scores = np.column_stack([np.r_[np.ones(100), np.zeros(n - 100)],  # species 0: perfect
                              rng.random(n),  # species 1: random
                              rng.random(n)])  # species 2: no presences
    presences = [np.arange(100), rng.choice(n, 5000, replace=False), np.array([], dtype=int)]
    background = np.arange(100, n)
    auc = auc_per_species(scores, presences, background)
    assert auc[0] == pytest.approx(1.0)
    assert auc[1] == pytest.approx(0.5, abs=0.02)
    assert np.isnan(auc[2])


def test_auc_per_species_inverted_scorer_is_zero():
    scores = np.array([[0.1], [0.2], [0.8], [0.9]])
    assert auc_per_species(scores, [np.array([0, 1])], np.array([2, 3]))[0] == pytest.approx(0.0)


def test_tss_at():
    presence = np.array([0.2, 0.6, 0.8])
    background = np.array([0.1, 0.5, 0.7, 0.3])
    # sensitivity 2/3, specificity 3/4
    assert tss_at(presence, background, 0.55) == pytest.approx(2 / 3 + 3 / 4 - 1)
    assert tss_at(presence, background, 0.0) == pytest.approx(0.0)  # everything present
    assert np.isnan(tss_at(presence, background, np.nan))
    assert np.isnan(tss_at(np.array([]), background, 0.5))


# --- end-to-end training on the synthetic world ----------------------------------------------------------------

def test_train_sdm_learns_the_known_niches(trained, world):
    model, info = trained
    cube, _, truth = world
    test = info["metrics"]["test"]
    assert test["deep_sdm"]["mean_auc"] > 0.8
    assert test["deep_sdm"]["mean_tss"] is not None
    assert test["deep_sdm"]["species_evaluated"] >= 3
    assert test["baseline"]["mean_auc"] is not None
    assert "logistic" in test["baseline"]["name"]
    # the fitted scores also separate true presence from absence over the whole valid grid
    scores, rows, cols = info["scores"], info["cell_rows"], info["cell_cols"]
    for s, name in enumerate(info["species"]):
        inside = truth[name][rows, cols]
        assert scores[inside, s].mean() > scores[~inside, s].mean() + 0.2, name


def test_train_sdm_info(trained, world):
    model, info = trained
    cube, _, _ = world
    assert info["species"] == sorted(SPECIES_RULES)
    assert info["variables"] == ["bio1", "bio12", "bio4"]
    assert info["thresholds"].shape == (4,)
    assert np.all((info["thresholds"] > 0) & (info["thresholds"] < 1))
    assert info["split"].shape == (N, N)
    assert info["mean"].shape == info["std"].shape == (3,)
    assert info["mean"][1] == pytest.approx(1000, abs=200)  # statistics in the variables' own units
    assert info["scores"].shape == (int(np.isfinite(cube.values).all(axis=0).sum()), 4)
    metrics = info["metrics"]
    assert metrics["device"] == "cpu"
    assert metrics["n_cells"] == info["scores"].shape[0]
    assert sum(metrics["records"].values()) == 600
    assert 1 <= metrics["epochs_run"] <= FAST["epochs"]
    assert model.hparams["hidden"] == 32 and not model.training


def test_train_sdm_is_deterministic_under_a_seed(trained, world):
    cube, occurrences, _ = world
    _, first = trained
    _, again = train_sdm(cube, occurrences, progress=False, **FAST)
    np.testing.assert_array_equal(first["thresholds"], again["thresholds"])
    np.testing.assert_array_equal(first["scores"], again["scores"])
    for key in ("deep_sdm", "baseline"):
        a, b = dict(first["metrics"]["test"][key]), dict(again["metrics"]["test"][key])
        a.pop("fit_seconds", None), b.pop("fit_seconds", None)
        assert a == b
    assert first["metrics"]["history"] == again["metrics"]["history"]


def test_train_sdm_without_species_raises(world):
    cube, occurrences, _ = world
    with pytest.raises(ValueError, match="no species"):
        train_sdm(cube, occurrences.iloc[:0], progress=False, **FAST)


def test_run_training_writes_checkpoint_and_split(world, tmp_path):
    cube, occurrences, _ = world
    rare = pd.DataFrame({"species": "sp_rare", "row": [30, 31, 32], "col": [30, 30, 30]})
    occurrences = pd.concat([occurrences, rare], ignore_index=True)
    params = {**FAST, "epochs": 2, "min_records": 5, "baseline": "none"}
    model_path, split_path = tmp_path / "model.pt", tmp_path / "split.tif"
    metrics = run_training(cube, occurrences, params, model_path=model_path, split_path=split_path, threads=1)

    assert metrics["excluded_species"]["species"] == {"sp_rare": 3}
    assert "5" in metrics["excluded_species"]["reason"]
    assert set(metrics["thresholds"]) == set(SPECIES_RULES)
    assert "baseline" not in metrics["test"]

    model, checkpoint = load_checkpoint(model_path)
    assert checkpoint["species"] == sorted(SPECIES_RULES)
    assert checkpoint["variables"] == ["bio1", "bio12", "bio4"]
    assert checkpoint["config"]["min_records"] == 5
    np.testing.assert_allclose(checkpoint["thresholds"], [metrics["thresholds"][s] for s in checkpoint["species"]],
                               atol=1e-4)

    with rasterio.open(split_path) as src:
        assert src.crs.to_epsg() == 3035
        assert (src.height, src.width) == (N, N)
        split = src.read(1)
        assert src.transform.a == pytest.approx(1000) and src.transform.c == pytest.approx(4_000_000)
        assert src.tags()["codes"] == "0 train, 1 validation, 2 test" and src.descriptions == ("split",)
    assert set(np.unique(split)) == {0, 1, 2}


def test_the_split_map_is_written_a_band_of_rows_at_a_time(world, tmp_path, monkeypatch):
    from sdm import train

    cube, _, _ = world
    grid = cube.isel(variable=0, drop=True)
    codes = np.random.default_rng(0).integers(0, 3, size=grid.shape).astype("int8")
    monkeypatch.setattr(train, "SPLIT_ROWS", 3)
    train.write_split(codes, grid, tmp_path / "split.tif")
    with rasterio.open(tmp_path / "split.tif") as src:
        np.testing.assert_array_equal(src.read(1), codes)
        assert src.transform == grid.rio.transform(recalc=True) and src.crs == grid.rio.crs


def test_the_baseline_fitted_a_block_of_species_at_a_time_is_the_same(world, monkeypatch):
    from sdm import train

    cube, occurrences, _ = world
    kwargs = {**FAST, "epochs": 2, "baseline": "logistic", "progress": False}
    _, whole = train.train_sdm(cube, occurrences, **kwargs)
    monkeypatch.setattr(train, "SCORE_BYTES", 1)  # one species per block
    _, blocked = train.train_sdm(cube, occurrences, **kwargs)
    np.testing.assert_array_equal(whole["baseline_scores"], blocked["baseline_scores"])
    for m in (whole["metrics"], blocked["metrics"]):
        m.pop("train_seconds"), m["test"]["baseline"].pop("fit_seconds")
    assert whole["metrics"]["test"] == blocked["metrics"]["test"]
    assert np.isfinite(whole["metrics"]["test"]["baseline"]["mean_auc"])


def test_run_training_without_enough_records_raises(world, tmp_path):
    cube, occurrences, _ = world
    with pytest.raises(ValueError, match="min_records=1000"):
        run_training(cube, occurrences, {**FAST, "min_records": 1000}, model_path=tmp_path / "m.pt",
                     split_path=tmp_path / "s.tif")


def test_spatial_blocks_give_every_split_records_when_records_are_clustered():
    """51 records in one corner of a large grid (like a single-species study) must reach validation and test."""
    records = np.zeros((60, 60))
    rng = np.random.default_rng(0)
    np.add.at(records, (rng.integers(0, 15, 51), rng.integers(0, 15, 51)), 1)
    split = spatial_blocks((60, 60), 5, seed=2, records=records)
    held = {name: records[split == code].sum() for name, code in SPLITS.items()}
    assert held["validation"] >= 0.15 * 51 and held["test"] >= 0.15 * 51
    assert held["train"] > 0
    assert sum(held.values()) == 51


# --- options used by benchmarks/skill_sdm.py -------------------------------------------------------------------

def test_auc_per_species_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    scores = np.round(rng.random((500, 3)), 1)  # many ties
    presences = [rng.choice(500, 40, replace=False) for _ in range(3)]
    background = np.arange(500)
    ours = auc_per_species(scores, presences, background)
    for s in range(3):
        y = np.r_[np.ones(40), np.zeros(500)]
        expected = roc_auc_score(y, np.r_[scores[presences[s], s], scores[background, s]])
        assert ours[s] == pytest.approx(expected, abs=1e-12)


def test_train_sdm_options_ensemble_quadratic_location_target_group(world):
    from sdm.model import with_coordinate_layers
    from sdm.predict import suitability_cube

    cube, occurrences, truth = world
    model, info = train_sdm(cube, occurrences, progress=False,
                            **{**FAST, "epochs": 4, "baseline": "none", "members": 2, "quadratic": True,
                               "coordinates": 2, "target_group": 0.5, "sampling_exponent": 0.5,
                               "steps_per_epoch": 3})
    assert model.hparams["members"] == 2 and model.hparams["quadratic"]
    assert info["variables"][:3] == ["bio1", "bio12", "bio4"]
    assert info["variables"][3:] == ["coord_sin1_lon", "coord_cos1_lon", "coord_sin1_lat", "coord_cos1_lat",
                                     "coord_sin2_lon", "coord_cos2_lon", "coord_sin2_lat", "coord_cos2_lat"]
    assert info["metrics"]["epochs_run"] <= 4
    assert info["baseline_scores"] is None
    # prediction gets the location layers from the checkpoint's variable names and reproduces the training scores
    checkpoint = {"variables": info["variables"], "mean": info["mean"], "std": info["std"],
                  "species": info["species"], "thresholds": info["thresholds"]}
    suitability = suitability_cube(with_coordinate_layers(cube, info["variables"]), model, checkpoint).values
    predicted = decode(suitability[:, info["cell_rows"], info["cell_cols"]]).T
    np.testing.assert_allclose(predicted, info["scores"], atol=STEP / 8 + 1e-6)


def test_train_sdm_without_test_blocks_fits_the_baseline_for_every_species(world):
    cube, occurrences, _ = world
    _, info = train_sdm(cube, occurrences, progress=False,
                        **{**FAST, "epochs": 2, "block_cells": 6}, fractions=(0.8, 0.2, 0.0))
    assert SPLITS["test"] not in np.unique(info["split"])
    assert info["metrics"]["test"]["deep_sdm"]["mean_auc"] is None
    assert np.isfinite(info["baseline_scores"]).all()


def test_the_baseline_keeps_every_training_record_when_the_background_is_sampled(world):
    # a sampled background rarely holds the record cells: the baseline must still see every training record, as
    # the deep SDM does (it used to keep only the records whose cell was drawn as background)
    cube, occurrences, _ = world
    common = {**FAST, "epochs": 2, "block_cells": 6, "baseline": "logistic"}
    _, full = train_sdm(cube, occurrences, progress=False, fractions=(0.8, 0.2, 0.0), **common)
    _, sampled = train_sdm(cube, occurrences, progress=False, fractions=(0.8, 0.2, 0.0), background_cells=60,
                           **common)
    assert np.isfinite(full["baseline_scores"]).all()
    assert np.isfinite(sampled["baseline_scores"]).all()


def test_train_sdm_fits_the_baseline_only_for_the_species_asked(world):
    cube, occurrences, _ = world
    _, info = train_sdm(cube, occurrences, progress=False, **{**FAST, "epochs": 2}, baseline_species=["sp_b"])
    fitted = np.isfinite(info["baseline_scores"]).all(axis=0)
    assert fitted.tolist() == [s == "sp_b" for s in info["species"]]
    assert info["metrics"]["test"]["baseline"]["species_evaluated"] <= 1


def test_run_training_passes_optional_params_to_the_checkpoint(world, tmp_path):
    cube, occurrences, _ = world
    params = {**FAST, "epochs": 2, "min_records": 5, "baseline": "none", "coordinates": 1, "members": 2}
    run_training(cube, occurrences, params, model_path=tmp_path / "m.pt", split_path=tmp_path / "s.tif")
    model, checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert model.hparams["members"] == 2
    assert checkpoint["variables"][-1] == "coord_cos1_lat"


def test_train_sdm_samples_evaluation_cells_on_large_grids(world):
    """A split bigger than ``eval_cells`` is scored on a sample; records are always scored; the scores handed back
    are the model's at the cells named, for deep SDM and baseline alike."""
    from sdm.predict import suitability_cube

    cube, occurrences, _ = world
    model, info = train_sdm(cube, occurrences, progress=False, **{**FAST, "epochs": 3}, eval_cells=50)
    metrics = info["metrics"]
    assert all(metrics["cells"][name] > 50 for name in SPLITS)
    assert metrics["evaluation_cells"] == {name: 50 for name in SPLITS}
    rows, cols = info["cell_rows"], info["cell_cols"]
    n_records_cells = len(np.unique(occurrences[["row", "col"]].to_numpy(), axis=0))
    assert len(rows) <= 150 + n_records_cells and len(rows) < metrics["n_cells"]
    assert info["scores"].shape == (len(rows), 4) and info["baseline_scores"].shape == (len(rows), 4)
    scored = set(zip(rows.tolist(), cols.tolist()))
    assert all((r, c) in scored for r, c in occurrences[["row", "col"]].itertuples(index=False))
    checkpoint = {"variables": info["variables"], "mean": info["mean"], "std": info["std"],
                  "species": info["species"], "thresholds": info["thresholds"]}
    predicted = decode(suitability_cube(cube, model, checkpoint).values[:, rows, cols]).T
    np.testing.assert_allclose(predicted, info["scores"], atol=STEP / 8 + 1e-6)
    assert metrics["test"]["deep_sdm"]["mean_auc"] > 0.7
    assert metrics["test"]["baseline"]["mean_auc"] > 0.7


def test_train_sdm_without_sampling_scores_every_valid_cell(trained, world):
    cube, _, _ = world
    _, info = trained
    assert info["metrics"]["evaluation_cells"] == info["metrics"]["cells"]
    assert len(info["cell_rows"]) == int(np.isfinite(cube.values).all(axis=0).sum())


# --- the evaluation fit never sees test blocks; the stored model is refitted on everything ---------------------------

def test_no_test_block_record_reaches_training_or_thresholds(world, monkeypatch):
    import sdm.train

    cube, occurrences, _ = world
    calls = []
    real_fit, real_thresholds = sdm.train.fit_network, sdm.train.choose_thresholds

    def spy_fit(x, presences, background, *args, **kwargs):
        calls.append({"presences": presences.copy(), "background": background.copy(),
                      "epochs": kwargs.get("epochs")})
        return real_fit(x, presences, background, *args, **kwargs)

    def spy_thresholds(scores, validation, validation_background, training, training_background):
        calls.append({"threshold_rows": np.concatenate([*validation, validation_background, *training,
                                                        training_background])})
        return real_thresholds(scores, validation, validation_background, training, training_background)

    monkeypatch.setattr(sdm.train, "fit_network", spy_fit)
    monkeypatch.setattr(sdm.train, "choose_thresholds", spy_thresholds)
    model, info = train_sdm(cube, occurrences, progress=False, **{**FAST, "epochs": 4, "baseline": "none"})
    valid = np.isfinite(cube.values).all(axis=0)
    rows, cols = np.nonzero(valid)
    cell_split = info["split"][rows, cols]
    evaluation, refit, thresholds = calls
    assert (cell_split[evaluation["presences"][:, 0]] == SPLITS["train"]).all()
    assert (cell_split[evaluation["background"]] == SPLITS["train"]).all()
    scored_split = info["split"][info["cell_rows"], info["cell_cols"]]
    assert (scored_split[thresholds["threshold_rows"]] != SPLITS["test"]).all()
    # the refit sees every record and every cell, for the evaluation fit's best epoch + 1
    assert len(refit["presences"]) == info["metrics"]["records"]["train"] + info["metrics"]["records"][
        "validation"] + info["metrics"]["records"]["test"] == 600
    assert len(refit["background"]) == valid.sum()
    assert refit["epochs"] == info["metrics"]["best_epoch"] + 1 == info["metrics"]["refit_epochs"]
    assert "refitted on every record" in info["metrics"]["held_out"]
    assert set(sum(info["metrics"]["threshold_rules"].values(), [])) == set(info["species"])


def test_train_sdm_uses_sklearn_metrics_with_ties():
    from sklearn.metrics import roc_auc_score

    scores = np.array([[0.1], [0.5], [0.5], [0.9]])
    assert auc_per_species(scores, [np.array([1, 3])], np.array([0, 2]))[0] == pytest.approx(
        roc_auc_score([1, 1, 0, 0], [0.5, 0.9, 0.1, 0.5]))


def test_inputs_are_clamped_to_the_training_range(trained):
    model, info = trained
    x = torch.zeros((2, 3))
    x[0, 0], x[1, 0] = 50.0, 500.0  # both far beyond the training range of bio1
    with torch.inference_mode():
        logits = model(x)
    torch.testing.assert_close(logits[0], logits[1])


def test_maxent_loss_is_bounded_below_when_records_separate_perfectly():
    """Presence rows are part of the normaliser, so pushing logits up at records cannot drive the loss to -inf."""
    from sdm.train import _batch_loss

    logits = torch.full((1, 6, 2), -50.0)
    logits[0, :2, 0] = 50.0  # two presences of species 0 with huge logits, background rows very low
    loss = _batch_loss(logits, torch.tensor([0, 0]), 2, torch.tensor([True, True]), "maxent")
    assert float(loss) >= -np.log(6) - 1e-6


def test_maxent_baseline_survives_glmnet_failing_on_few_records(monkeypatch, caplog):
    """glmnet's lambda selection raises IndexError on some species with very few records (the demo's, nsw30); the
    baseline then fits that species with elapid's scikit-learn path and logs it."""
    import elapid

    from sdm.train import fit_baseline

    real_fit = elapid.MaxentModel.fit

    def glmnet_fails(self, *args, **kwargs):
        if not self.use_sklearn:
            raise IndexError("index 0 is out of bounds for axis 0 with size 0")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(elapid.MaxentModel, "fit", glmnet_fails)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3000, 3)).astype("float32")
    presences = np.array([[5, 0], [17, 0], [29, 0]])
    _, scores = fit_baseline(values, presences, 1, np.arange(3000), "maxent", seed=0, n_background=2000,
                             progress=False)
    assert np.isfinite(scores).all()
    assert "lambda selection failed for species 0" in caplog.text


def test_distinct_draws_are_distinct_uniform_and_seeded():
    from sdm.train import _distinct_draws

    draws = _distinct_draws(10_000_000, 200_000, np.random.default_rng(3))
    assert len(draws) == 200_000 and len(np.unique(draws)) == 200_000 and np.all(np.diff(draws) > 0)
    assert draws.min() >= 0 and draws.max() < 10_000_000
    # uniform: each tenth of the population holds about a tenth of the draws (binomial sd ~134)
    counts = np.bincount(draws // 1_000_000, minlength=10)
    assert np.abs(counts - 20_000).max() < 800
    np.testing.assert_array_equal(draws, _distinct_draws(10_000_000, 200_000, np.random.default_rng(3)))
    near_all = _distinct_draws(1000, 900, np.random.default_rng(0))
    assert len(np.unique(near_all)) == 900
    with pytest.raises(ValueError, match="cannot draw 11 distinct cells of 10"):
        _distinct_draws(10, 11, np.random.default_rng(0))


def test_held_out_metrics_do_not_depend_on_the_species_blocks(world, monkeypatch):
    """Thresholds, held-out AUC / TSS and the scores are the same whether the species are scored all at once or one
    at a time (the workflow's memory bound), and the workflow's rule keeps no score matrix."""
    import sdm.train as train

    cube, occurrences, _ = world
    kwargs = {**FAST, "baseline": "none", "progress": False}
    _, whole = train.train_sdm(cube, occurrences, **kwargs)
    monkeypatch.setattr(train, "SCORE_BYTES", 1)  # one species per block
    assert len(train.species_blocks(4, 1000, train.SCORE_BYTES)) == 4
    _, blocked = train.train_sdm(cube, occurrences, **kwargs)
    # a head computed for fewer species may round differently in the last bit of float32
    np.testing.assert_allclose(whole["thresholds"], blocked["thresholds"], rtol=1e-6)
    np.testing.assert_allclose(whole["scores"], blocked["scores"], rtol=1e-5, atol=1e-6)
    assert whole["metrics"]["test"] == blocked["metrics"]["test"]  # rounded to 4 decimals
    assert whole["metrics"]["threshold_rules"] == blocked["metrics"]["threshold_rules"]
    _, lean = train.train_sdm(cube, occurrences, keep_scores=False, **kwargs)
    assert lean["scores"] is None and lean["evaluation_scores"] is None
    np.testing.assert_allclose(lean["thresholds"], blocked["thresholds"], rtol=1e-6)


def test_held_out_assemblages_come_from_the_test_blocks_records(trained):
    """metrics.json's assemblage comparison counts the test blocks' record cells and records, and compares the three
    methods at the per-species thresholds' mean set size."""
    _, info = trained
    held_out = info["metrics"]["test"]["assemblages"]
    split = info["split"]
    _, occurrences, _ = synthetic_world()
    test = occurrences[split[occurrences["row"], occurrences["col"]] == SPLITS["test"]]
    assert held_out["cells"] == len(test[["row", "col"]].drop_duplicates()) > 0
    assert held_out["records"] == len(test[["species", "row", "col"]].drop_duplicates())
    assert "evaluation fit" in held_out["rule"]
    methods = {m["method"].split(" (")[0]: m for m in held_out["methods"]}
    assert set(methods) == {"threshold", "top-K", "average-K"}
    assert all(0 <= m["recall"] <= 1 for m in held_out["methods"])
    size = methods["threshold"]["mean_set_size"]
    assert methods["average-K"]["mean_set_size"] == pytest.approx(size, abs=1.0)


def test_held_out_assemblages_on_known_scores():
    import sdm.train as train

    # 3 species x 4 cells; species 0 recorded in cells 0 and 1, species 2 in cell 3
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.2, 0.9, 0.1], [0.1, 0.2, 0.7]])
    cells = np.array([10, 11, 12, 13])
    pairs = np.array([[10, 0], [11, 0], [13, 2]])
    out = train.held_out_assemblages(scores, np.array([0.5, 0.5, 0.5]), pairs, cells)
    assert out["cells"] == 4 and out["records"] == 3
    threshold = out["methods"][0]
    assert threshold["method"].startswith("threshold") and threshold["recall"] == 1.0
    assert threshold["mean_set_size"] == 1.0  # one species above 0.5 in each cell
    assert train.held_out_assemblages(scores[:0], np.full(3, 0.5), pairs[:0], cells[:0])["methods"] == []


def test_assemblage_pairs_sample_whole_cells_when_there_are_too_many(world, monkeypatch):
    import sdm.train as train

    pairs = np.array([[c, s] for c in range(50) for s in range(3)])
    kept = train._assemblage_pairs(pairs, seed=0, max_cells=10)
    assert len(np.unique(kept[:, 0])) == 10 and len(kept) == 30  # every record of a kept cell
    assert np.array_equal(train._assemblage_pairs(pairs, seed=0, max_cells=50), pairs)
    # in train_sdm the cap is the score budget over the species: 4 species x 10 cells here
    cube, occurrences, _ = world
    monkeypatch.setattr(train, "ASSEMBLAGE_SCORES", 40)
    _, info = train.train_sdm(cube, occurrences, progress=False, **{**FAST, "baseline": "none"})
    held_out = info["metrics"]["test"]["assemblages"]
    assert held_out["cells"] == 10 and held_out["records"] < info["metrics"]["records"]["test"]


# --- thresholds carried to the refit; species the evaluation fit never trained; comparable TSS; valid JSON ----------

def test_transferred_thresholds_keep_exactly_as_many_cells():
    from sdm.train import transfer_thresholds

    rng = np.random.default_rng(0)
    evaluation = rng.random((1000, 1)).astype("float32")
    final = (evaluation ** 3 / 7).astype("float32")  # the same ranks on another scale
    for k in (1, 2, 10, 999, 1000):
        threshold = np.sort(evaluation[:, 0])[-k]
        carried = transfer_thresholds(np.array([threshold]), evaluation, final)[0]
        assert (final[:, 0] >= carried).sum() == k
    # nothing at or above the evaluation threshold: nothing at or above the carried one
    carried = transfer_thresholds(np.array([2.0]), evaluation, final)[0]
    assert carried > final.max() and (final[:, 0] >= carried).sum() == 0
    assert np.isnan(transfer_thresholds(np.array([np.nan]), evaluation, final)[0])
    # ties at the k-th refit score: the tied cells are not told apart, all are kept
    tied = np.array([[0.1], [0.2], [0.2], [0.2], [0.9]], dtype="float32")
    carried = transfer_thresholds(np.array([0.8]), np.array([[0.1], [0.2], [0.3], [0.8], [0.9]]), tied)[0]
    assert carried == pytest.approx(0.2) and (tied[:, 0] >= carried).sum() == 4


def test_untrained_thresholds_on_the_refit_or_never_present():
    from sdm.train import NEVER_PRESENT, REFIT_ALL_RECORDS, untrained_thresholds

    thresholds, rules = untrained_thresholds(None, [np.array([0, 1])], np.arange(5))
    assert thresholds.tolist() == [1.0] and rules == [NEVER_PRESENT]
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.1, 0.5], [0.2, 0.5], [0.85, 0.5]])
    # the second species has no record on the grid: no model learnt it either
    thresholds, rules = untrained_thresholds(scores, [np.array([0, 1]), np.array([], dtype=int)], np.arange(5))
    assert rules == [REFIT_ALL_RECORDS, NEVER_PRESENT] and thresholds.tolist() == [pytest.approx(0.8), 1.0]


@pytest.fixture(scope="module")
def untrained(world):
    """A run with ``sp_test_only`` (records in a test block only), ``sp_val_only`` (a validation block only) and
    ``sp_no_val`` (training and test blocks), on a split that does not depend on the records."""
    import sdm.train as train

    cube, occurrences, _ = world
    real = train._assign_blocks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_assign_blocks", lambda cells, records, seed, fractions: real(cells, None, seed,
                                                                                            fractions))
        kwargs = {**FAST, "epochs": 6, "patience": 6, "accessible_km": None, "progress": False}
        _, first = train.train_sdm(cube, occurrences, **kwargs)
        split = first["split"]

        def patch_of(code, which):
            ys, xs = np.nonzero(split == code)
            r0, c0 = ys[which] // 6 * 6, xs[which] // 6 * 6
            rows, cols = np.mgrid[r0:r0 + 6, c0:c0 + 2]
            return rows.ravel(), cols.ravel()

        extra = []
        for name, parts in {"sp_test_only": [(SPLITS["test"], len(np.nonzero(split == 2)[0]) // 2)],
                            "sp_val_only": [(SPLITS["validation"], -1)],
                            "sp_no_val": [(SPLITS["train"], -1), (SPLITS["test"], -1)]}.items():
            for code, which in parts:
                rows, cols = patch_of(code, which)
                assert (split[rows, cols] == code).all()
                extra.append(pd.DataFrame({"species": name, "row": rows, "col": cols}))
        occurrences = pd.concat([occurrences, *extra], ignore_index=True)
        _, info = train.train_sdm(cube, occurrences, **kwargs)
    np.testing.assert_array_equal(info["split"], split)
    return occurrences, info


def test_species_without_training_records_get_thresholds_from_the_refit(untrained):
    from sdm.train import REFIT_ALL_RECORDS

    occurrences, info = untrained
    rules = info["metrics"]["threshold_rules"]
    assert sorted(rules[REFIT_ALL_RECORDS]) == ["sp_test_only", "sp_val_only"]
    cells = info["cell_rows"] * N + info["cell_cols"]  # every valid cell is scored and is background here
    for name in ("sp_test_only", "sp_val_only"):
        s = info["species"].index(name)
        own = occurrences[occurrences["species"] == name]
        rows = np.searchsorted(cells, own["row"].to_numpy() * N + own["col"].to_numpy())
        expected, _ = max_tss_threshold(info["scores"][rows, s], info["scores"][:, s])
        assert info["thresholds"][s] == pytest.approx(expected)
        present = info["scores"][:, s] >= info["thresholds"][s]
        assert present.sum() < 10 * len(rows)  # 12 record cells: not a share of the grid from an untrained output
        assert present[rows].mean() > 0.5


def test_species_without_training_records_have_no_held_out_figures(untrained):
    occurrences, info = untrained
    test = info["metrics"]["test"]
    assert test["untrained_species"]["species"] == ["sp_test_only", "sp_val_only"]
    for key in ("deep_sdm", "baseline"):
        entry = test[key]["per_species"]["sp_test_only"]
        assert entry["test_records"] == 12 and entry["auc"] is None and entry["tss"] is None
    # the assemblage comparison covers the trained species' test records only
    split = info["split"]
    held = occurrences[(split[occurrences["row"], occurrences["col"]] == SPLITS["test"])
                       & (occurrences["species"] != "sp_test_only")]
    assert test["assemblages"]["records"] == len(held)


def test_deep_and_baseline_mean_tss_average_the_same_species(untrained):
    _, info = untrained
    test = info["metrics"]["test"]
    with_tss = {key: {s for s, v in test[key]["per_species"].items() if v["tss"] is not None}
                for key in ("deep_sdm", "baseline")}
    assert "sp_no_val" in with_tss["deep_sdm"]  # no validation record: the training-records rule, for both
    assert with_tss["deep_sdm"] == with_tss["baseline"]
    same = test["same_species"]
    assert same["species_tss"] == len(with_tss["deep_sdm"])
    for key in ("deep_sdm", "baseline"):
        mean = np.mean([test[key]["per_species"][s]["tss"] for s in with_tss[key]])
        assert same[f"{key}_mean_tss"] == pytest.approx(mean, abs=1e-3)
        assert test[key]["mean_tss"] == pytest.approx(mean, abs=1e-3)


def test_metrics_are_valid_json_without_validation_blocks(world):
    import json

    cube, occurrences, _ = world
    _, info = train_sdm(cube, occurrences, progress=False, fractions=(0.85, 0.0, 0.15),
                        **{**FAST, "epochs": 2, "baseline": "none", "accessible_km": None})
    metrics = info["metrics"]
    assert metrics["validation_auc"] is None
    json.dumps(metrics, allow_nan=False)  # raises on NaN, which json.dump would write as invalid JSON


def test_run_training_stores_the_classes_of_categorical_layers(world, tmp_path):
    cube, occurrences, _ = world
    landcover = xr.where(cube.sel(variable="bio4") > 0, 5.0, 1.0).where(np.isfinite(cube.sel(variable="bio4")))
    cube = xr.concat([cube, landcover.expand_dims(variable=["landcover"])], dim="variable")
    cube.attrs["categorical_variables"] = ["landcover"]  # as ingest lists the cube's class layers
    params = {**FAST, "epochs": 1, "min_records": 5, "baseline": "none", "accessible_km": None}
    run_training(cube, occurrences, params, model_path=tmp_path / "m.pt", split_path=tmp_path / "s.tif")
    _, checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["categories"] == {"landcover": [1.0, 5.0]}
    with pytest.raises(ValueError, match="not among the model's variables"):
        train_sdm(cube, occurrences, progress=False, categorical=["soil"], **{**FAST, "epochs": 1})
