"""MESS extrapolation layers (sdm.novelty) with known answers, and their way through the predictions store, the fused
mode and the indicator GeoTIFFs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr

from sdm.novelty import MOD_NODATA, mess, novelty_layers, similarity

# a reference spread evenly over [0, 10]: percentile k is k / 10, so f(p) = 10 p inside the range
UNIFORM = np.linspace(0.0, 10.0, 101)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- the formula -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, expected", [
    (5.0, 100.0),          # the median: f = 50 -> 2 f = 100
    (0.0, 0.0),            # the minimum: f = 0 -> 100 (p - min) / (max - min) = 0
    (10.0, 0.0),           # the maximum
    (2.5, 50.0),           # f = 25 -> 2 f
    (9.0, 20.0),           # f = 90 -> 2 (100 - f)
    (12.0, -20.0),         # beyond the maximum: 100 (max - p) / (max - min) = 100 (10 - 12) / 10
    (-3.0, -30.0),         # below the minimum: 100 (p - min) / (max - min) = 100 (-3 - 0) / 10
    (5.55, 89.0),          # interpolated between the 55th and 56th percentiles: f = 55.5
])
def test_similarity_known_answers(p, expected):
    assert similarity(np.array([p]), UNIFORM)[0] == pytest.approx(expected, abs=1e-9)


def test_similarity_counts_reference_values_below_p_with_ties():
    # 30 % of the reference equal to the minimum: at that value f = 0 (none below) -> 0; just above, f ~ 30 -> 60
    reference = np.r_[np.zeros(31), np.linspace(0.0, 7.0, 71)[1:]]
    assert len(reference) == 101
    s = similarity(np.array([0.0, 1e-9, 7.0, np.nan]), reference)
    assert s[0] == 0.0
    assert s[1] == pytest.approx(60.0, abs=1e-4)
    assert s[2] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(s[3])


def _definition(p: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Elith et al.'s formula value by value: f = percent of reference values < p (linear between percentiles)."""
    q, levels = np.asarray(quantiles, float), np.linspace(0, 100, len(quantiles))
    low, high, out = q[0], q[-1], []
    for v in p:
        below = int((q < v).sum())
        if np.isnan(v):
            out.append(np.nan)
            continue
        f = 0.0 if below == 0 else 100.0 if below == len(q) else \
            levels[below - 1] + (levels[below] - levels[below - 1]) * (v - q[below - 1]) / (q[below] - q[below - 1])
        out.append(100 * (v - low) / (high - low) if f == 0 else 100 * (high - v) / (high - low) if f == 100
                   else 2 * f if f <= 50 else 2 * (100 - f))
    return np.array(out)


@pytest.mark.parametrize("sample", ["normal", "ties_at_min", "ties_at_max", "discrete", "heavy_tail"])
@pytest.mark.parametrize("levels", [101, 100, 11])
def test_similarity_equals_the_definition(sample, levels):
    rng = np.random.default_rng(levels)
    x = {"normal": rng.normal(size=500), "ties_at_min": np.r_[np.zeros(200), rng.gamma(0.5, 50, 500)],
         "ties_at_max": np.r_[rng.normal(size=500), np.full(100, 3.0)], "discrete": np.round(3 * rng.normal(size=500)),
         "heavy_tail": rng.lognormal(0, 3, 500)}[sample]  # the last: too tight for the bins, a binary search
    q = np.percentile(x, np.linspace(0, 100, levels))
    span = q[-1] - q[0]
    p = np.r_[q, np.nextafter(q, np.inf), np.nextafter(q, -np.inf), rng.uniform(q[0] - span, q[-1] + span, 300),
              rng.choice(x, 100), np.nan]
    np.testing.assert_allclose(similarity(p, q), _definition(p, q), atol=1e-9, equal_nan=True)


def test_mess_is_the_minimum_over_variables_with_the_most_dissimilar_one():
    reference = np.stack([UNIFORM, 100 + 10 * UNIFORM])  # the second variable spans [100, 200]
    values = np.array([[5.0, 2.5, 5.0, 11.0],
                       [150.0, 150.0, 125.0, 90.0]])
    score, mod = mess(values, reference, most_dissimilar=True)
    # cell 0: 100 and 100; cell 1: 50 and 100; cell 2: 100 and 50; cell 3: -10 and 100 (90 - 100) / 100 = -10
    np.testing.assert_allclose(score, [100.0, 50.0, 50.0, -10.0], atol=1e-9)
    assert mod.dtype == np.int8
    assert list(mod[1:3]) == [0, 1]
    np.testing.assert_allclose(mess(values, reference), score)
    assert (score <= 100).all()


def test_nan_propagates_and_constant_variables_are_left_out():
    reference = np.stack([UNIFORM, np.full(101, 3.0), 10 * UNIFORM])
    values = np.array([[5.0, np.nan, 2.5],
                       [3.0, 3.0, 99.0],     # constant in the reference: not part of MESS
                       [25.0, 50.0, np.nan]])
    score, mod = mess(values, reference, most_dissimilar=True)
    assert score[0] == pytest.approx(50.0)  # min(100, f(25) = 25 -> 50)
    assert np.isnan(score[1]) and np.isnan(score[2])
    assert list(mod) == [2, MOD_NODATA, MOD_NODATA]


def test_categorical_variables_score_seen_classes_100_and_unseen_ones_minus_100():
    from sdm.novelty import UNSEEN_CLASS
    from sdm.train import reference_quantiles

    training = np.c_[np.linspace(0, 10, 1000), np.where(np.arange(1000) % 2, 1.0, 5.0)]  # land cover in {1, 5}
    reference = reference_quantiles(training)
    values = np.array([[5.0, 5.0, 5.0, 5.0, 2.5],
                       [1.0, 3.0, 4.0, 5.0, 5.0]])  # classes 3 and 4 were never seen, though between 1 and 5
    score, mod = mess(values, reference, most_dissimilar=True, classes={1: [1.0, 5.0]})
    np.testing.assert_allclose(score, [100.0, UNSEEN_CLASS, UNSEEN_CLASS, 100.0, 50.0], atol=0.2)
    assert UNSEEN_CLASS == -100.0
    assert list(mod[1:3]) == [1, 1] and mod[4] == 0
    # as a continuous number the unseen class 3 would sit at the median (MESS 100): the old behaviour
    assert mess(values, reference)[1] == pytest.approx(100.0, abs=1)
    # a class layer with one class in training is not "constant" and left out: other classes are unseen
    one_class = mess(np.array([[1.0, 2.0]]), np.full((1, 101), 1.0), classes={0: [1.0]})
    np.testing.assert_array_equal(one_class, [100.0, UNSEEN_CLASS])


def test_reference_of_the_wrong_shape_raises():
    with pytest.raises(ValueError, match="reference quantiles"):
        mess(np.zeros((2, 4)), np.stack([UNIFORM]))
    with pytest.raises(ValueError, match="non-decreasing"):
        mess(np.zeros((1, 4)), UNIFORM[::-1][None])


# --- the lazy layer ---------------------------------------------------------------------------------------------

# the predict tests' cube: bio1 grows with x, so its right half is warmer than a left-half reference
from test_predict import NX, NY, VARIABLES, _cube  # noqa: E402


def _reference(cube: xr.DataArray) -> np.ndarray:
    """Percentiles of the cube's left half: the right half is warmer (bio1 grows with x) than any reference cell."""
    values = cube.isel(x=slice(0, NX // 2)).values.reshape(len(VARIABLES), -1)
    values = values[:, np.isfinite(values).all(axis=0)]
    return np.percentile(values, np.linspace(0, 100, 101), axis=1).T


def _expected(cube: xr.DataArray, reference: np.ndarray) -> np.ndarray:
    return mess(cube.values.reshape(len(VARIABLES), -1), reference).reshape(NY, NX)


def test_lazy_layers_equal_numpy_on_a_chunked_cube():
    cube = _cube()
    reference = _reference(cube)
    chunked = cube.chunk({"variable": 1, "y": 16, "x": 10})  # variables split: the layer joins them per chunk
    layers = novelty_layers(chunked, reference)
    assert layers["mess"].dims == ("y", "x") and layers["mess"].dtype == np.float32
    assert layers["mess"].chunks == ((16, 16, 8), (10, 10, 10, 6))  # lazy, chunked like the cube
    assert layers.rio.crs.to_epsg() == 3035 and layers["mess"].rio.crs.to_epsg() == 3035
    computed = layers.compute()
    expected = _expected(cube, reference)
    np.testing.assert_allclose(computed["mess"].values, expected.astype("float32"), rtol=1e-6, equal_nan=True)
    assert np.isnan(computed["mess"].values[:5, :7]).all() and np.isnan(computed["mess"].values[30, 30])
    assert (computed["mess"].values[:, NX - 3:][np.isfinite(computed["mess"].values[:, NX - 3:])] < 0).all()
    assert np.nanmin(computed["mess"].values[5:, : NX // 2]) >= 0  # inside the reference's own cells
    _, mod = mess(cube.values.reshape(3, -1), reference, most_dissimilar=True)
    np.testing.assert_array_equal(computed["most_dissimilar"].values.ravel(), mod)
    assert computed["most_dissimilar"].attrs["flag_meanings"] == "bio1 bio12 bio4"
    # the reference's variable order, not the cube's
    reordered = novelty_layers(chunked.sel(variable=VARIABLES[::-1]), reference, VARIABLES)
    np.testing.assert_array_equal(reordered["mess"].values, computed["mess"].values)


# --- through the pipeline ---------------------------------------------------------------------------------------

SPECIES = ["sp_a", "sp_b"]
COORDS = ["coord_sin1_lon", "coord_cos1_lon", "coord_sin1_lat", "coord_cos1_lat"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Checkpoints of a tiny model on the climate + location inputs: with and without reference quantiles. The
    location layers get a reference that no sin / cos reaches: were they not left out, MESS would be < -1000."""
    from sdm.model import ResidualMLP, save_checkpoint

    cube = _cube()
    variables = VARIABLES + COORDS
    torch.manual_seed(0)
    model = ResidualMLP(len(variables), len(SPECIES), hidden=8, blocks=1, dropout=0.0).eval()
    values = cube.values.reshape(len(VARIABLES), -1)
    mean = np.r_[np.nanmean(values, axis=1), np.zeros(len(COORDS))]
    std = np.r_[np.nanstd(values, axis=1), np.ones(len(COORDS))]
    reference = np.vstack([_reference(cube), np.tile(np.linspace(200.0, 210.0, 101), (len(COORDS), 1))])
    root = tmp_path_factory.mktemp("novelty")
    paths = {"with": root / "with.pt", "without": root / "without.pt"}
    common = {"species": SPECIES, "variables": variables, "mean": mean, "std": std,
              "thresholds": np.array([0.3, 0.6]), "config": {}}
    save_checkpoint(paths["with"], model, **common, reference=reference)
    save_checkpoint(paths["without"], model, **common)
    return {"paths": paths, "reference": reference[:len(VARIABLES)]}


@pytest.fixture(scope="module")
def store(checkpoints, tmp_path_factory):
    from sdm.predict import predict_scenario

    path = tmp_path_factory.mktemp("stores") / "warm.zarr"
    predict_scenario(_cube(), checkpoints["paths"]["with"], path, scenario="warm", chunk=16, device="cpu",
                     threads=1, progress=False)
    return path


def test_predictions_store_holds_mess_with_the_cube_crs(store, checkpoints):
    from sdm.predict import open_predictions

    raw = xr.open_zarr(store, consolidated=False, decode_coords="all")
    assert raw["mess"].dims == ("y", "x") and raw["mess"].dtype == np.float32
    assert raw["most_dissimilar"].dtype == np.int8
    assert raw["mess"].rio.crs.to_epsg() == 3035
    expected = _expected(_cube(), checkpoints["reference"])  # climate only: the location inputs are left out
    np.testing.assert_allclose(raw["mess"].values, expected, rtol=1e-6, equal_nan=True)
    assert np.nanmin(raw["mess"].values) > -1000
    decoded = open_predictions(store)
    np.testing.assert_array_equal(decoded["mess"].values, raw["mess"].values)
    assert decoded.rio.crs.to_epsg() == 3035


def test_average_k_store_holds_mess_too(store, checkpoints, tmp_path):
    from sdm.predict import predict_scenario

    returned = predict_scenario(_cube(), checkpoints["paths"]["with"], tmp_path / "k.zarr", scenario="warm",
                                assemblage="average_k", k=1, chunk=16, device="cpu", threads=1, progress=False)
    stored = xr.open_zarr(tmp_path / "k.zarr", consolidated=False)
    assert {"suitability", "presence", "mess", "most_dissimilar"} <= set(stored.data_vars)
    expected = xr.open_zarr(store, consolidated=False)["mess"].values
    np.testing.assert_array_equal(stored["mess"].values, expected)
    np.testing.assert_array_equal(returned["mess"].values, expected)


def test_checkpoint_without_reference_gives_no_mess_and_says_so(checkpoints, tmp_path, caplog):
    from sdm.predict import predict_scenario

    with caplog.at_level(logging.WARNING, logger="sdm.predict"):
        predict_scenario(_cube(), checkpoints["paths"]["without"], tmp_path / "old.zarr", scenario="old",
                         chunk=16, device="cpu", threads=1, progress=False)
    stored = xr.open_zarr(tmp_path / "old.zarr", consolidated=False)
    assert "mess" not in stored and "suitability" in stored
    assert "no MESS extrapolation layer" in caplog.text and "reference_quantiles" in caplog.text


def test_indicators_write_mess_geotiff(store, tmp_path, checkpoints):
    from sdm.indicators import run_indicators

    paths = run_indicators(store, store, "warm", "full", tmp_path / "warm_full")
    assert tmp_path / "warm_full" / "mess.tif" in paths
    with rasterio.open(tmp_path / "warm_full" / "mess.tif") as src:
        assert src.crs.to_epsg() == 3035 and src.dtypes == ("float32",)
        assert "outside the training range" in src.tags()["units"]
        band = src.read(1)
    np.testing.assert_allclose(band, _expected(_cube(), checkpoints["reference"]), rtol=1e-6, equal_nan=True)
    stored = xr.open_zarr(tmp_path / "warm_full" / "indicators.zarr", consolidated=False)
    assert "mess" in stored


def test_fused_mode_computes_mess_from_the_cube(store, checkpoints, tmp_path):
    from sdm.climate import write_cube
    from sdm.fused import lazy_predictions, run_predictions
    from sdm.indicators import run_indicators

    fused = lazy_predictions(_cube(), checkpoints["paths"]["with"], scenario="warm", chunk=16, device="cpu",
                             threads=1)
    assert fused["mess"].chunks is not None
    stored = xr.open_zarr(store, consolidated=False)["mess"]
    np.testing.assert_array_equal(fused["mess"].values, stored.values)

    write_cube(_cube(), tmp_path / "warm_cube.zarr", chunk=16)
    inputs = {"model": checkpoints["paths"]["with"], "current": tmp_path / "warm_cube.zarr",
              "future": tmp_path / "warm_cube.zarr"}
    prediction = {"fused": True, "chunk": 16, "batch_size": 4096, "assemblage": "threshold", "k": 5}
    current, future = run_predictions(inputs, "warm", prediction, device="cpu", threads=1)
    run_indicators(current, future, "warm", "none", tmp_path / "warm_none")
    with rasterio.open(tmp_path / "warm_none" / "mess.tif") as src:
        np.testing.assert_array_equal(src.read(1), stored.values)


def test_extrapolation_layers_score_the_checkpoint_categories_by_class(checkpoints):
    """A checkpoint's ``categories`` make a class layer score 100 / -100 in the predict stage's MESS."""
    from sdm.novelty import UNSEEN_CLASS
    from sdm.predict import extrapolation_layers

    cube = _cube()
    classes = xr.where(cube["x"] < cube["x"].values[NX // 2], 1.0, 3.0).broadcast_like(cube.isel(variable=0))
    cube = xr.concat([cube, classes.expand_dims(variable=["landcover"])], dim="variable")
    reference = np.vstack([checkpoints["reference"], np.r_[np.full(50, 1.0), np.full(51, 5.0)]])
    checkpoint = {"variables": VARIABLES + ["landcover"], "reference_quantiles": reference,
                  "categories": {"landcover": [1.0, 5.0]}}
    layers = extrapolation_layers(cube, checkpoint).compute()
    continuous = _expected(cube.sel(variable=VARIABLES), checkpoints["reference"])
    left, right = slice(0, NX // 2), slice(NX // 2, NX)
    np.testing.assert_allclose(layers["mess"].values[:, left], continuous[:, left], rtol=1e-6, equal_nan=True)
    finite = np.isfinite(continuous[:, right])
    assert (layers["mess"].values[:, right][finite] == UNSEEN_CLASS).all()
    assert (layers["most_dissimilar"].values[:, right][finite] == 3).all()
    with pytest.raises(ValueError, match="not among the variables"):
        extrapolation_layers(cube, {**checkpoint, "categories": {"soil": [1.0]}})
