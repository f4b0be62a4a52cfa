"""Unit tests of sdm.predict: the per-chunk forward and codes, the lazy suitability cube and the Zarr store."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr

from sdm.codes import ATTRS, NODATA, STEP, encode, encode_logits
from sdm.model import ResidualMLP, save_checkpoint
from sdm.predict import (
    forward_block,
    open_predictions,
    predict_scenario,
    suitability_cube,
)

VARIABLES = ["bio1", "bio12", "bio4"]
# the most a decoded probability moves from the model's: half a code of logit, times the largest dp / dlogit (1/4)
DECODE_ATOL = STEP / 2 / 4 + 1e-6
SPECIES = ["sp_a", "sp_b", "sp_c", "sp_d"]
THRESHOLDS = np.array([0.2, 0.5, 0.65, 0.9])
NY, NX = 40, 36


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The code under test may call torch.set_num_threads; keep that from leaking into other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cube() -> xr.DataArray:
    """(variable, y, x) float32 on EPSG:3035, variables on different scales, a nodata corner and a lone NaN."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:NY, 0:NX]
    data = np.stack([5 + 0.5 * xx + rng.normal(0, 1, (NY, NX)),
                     900 + 20 * yy + rng.normal(0, 50, (NY, NX)),
                     rng.normal(2, 0.5, (NY, NX))]).astype("float32")
    data[:, :5, :7] = np.nan
    data[2, 30, 30] = np.nan  # one variable missing -> the whole cell is no data
    return xr.DataArray(
        data, dims=("variable", "y", "x"), name="climate",
        coords={"variable": VARIABLES, "y": 2_500_000 - 1000 * (np.arange(NY) + 0.5),
                "x": 4_100_000 + 1000 * (np.arange(NX) + 0.5)},
    ).rio.write_crs("EPSG:3035")


def _model() -> ResidualMLP:
    torch.manual_seed(0)
    model = ResidualMLP(len(VARIABLES), len(SPECIES), hidden=16, blocks=1, dropout=0.0)
    with torch.no_grad():  # spread the probabilities over (0, 1) rather than all near 0.5
        model.head.weight.mul_(8)
    return model.eval()


@pytest.fixture(scope="module")
def cube():
    return _cube()


@pytest.fixture(scope="module")
def checkpoint(cube, tmp_path_factory):
    """(model, checkpoint dict as load_checkpoint gives it, path)."""
    model = _model()
    values = cube.values.reshape(len(VARIABLES), -1)
    mean, std = np.nanmean(values, axis=1), np.nanstd(values, axis=1)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, model, species=SPECIES, variables=VARIABLES, mean=mean, std=std, thresholds=THRESHOLDS,
                    config={})
    return model, {"species": SPECIES, "variables": VARIABLES, "mean": mean, "std": std,
                   "thresholds": THRESHOLDS}, path


def _direct(model, checkpoint, cube) -> np.ndarray:
    """Reference: a plain model forward on every cell, (species, y, x), NaN where any variable is missing."""
    values = cube.sel(variable=checkpoint["variables"]).values.astype("float64").reshape(len(VARIABLES), -1).T
    z = ((values - checkpoint["mean"]) / checkpoint["std"]).astype("float32")
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(np.nan_to_num(z)))).numpy()
    probs[~np.isfinite(values).all(axis=1)] = np.nan
    return probs.T.reshape(len(SPECIES), NY, NX)


def test_forward_block_equals_direct_forward(checkpoint, cube):
    model, ckpt, _ = checkpoint
    out = forward_block(cube.values.astype("float64"), model, ckpt["mean"], ckpt["std"], torch.device("cpu"),
                        batch_size=100)  # several batches, the last one partial
    assert out.shape == (len(SPECIES), NY, NX) and out.dtype == np.float32
    expected = _direct(model, ckpt, cube)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    nodata = ~np.isfinite(cube.values).all(axis=0)
    assert np.isnan(out[:, nodata]).all()
    assert np.isfinite(out[:, ~nodata]).all()
    assert np.isnan(out[:, 30, 30]).all()
    # the probabilities are spread, so the threshold tests below mean something
    assert np.nanmin(out) < 0.2 and np.nanmax(out) > 0.8


def test_forward_block_all_nodata(checkpoint):
    model, ckpt, _ = checkpoint
    out = forward_block(np.full((3, 2, 3), np.nan), model, ckpt["mean"], ckpt["std"], torch.device("cpu"), 16)
    assert out.shape == (4, 2, 3) and np.isnan(out).all()


def test_suitability_cube_is_lazy_and_chunked(checkpoint, cube):
    model, ckpt, _ = checkpoint
    result = suitability_cube(cube.chunk({"variable": 1, "y": 16, "x": 16}), model, ckpt)
    assert isinstance(result.data, da.Array)
    assert result.dims == ("species", "y", "x")
    assert result.dtype == np.uint8
    assert result.data.chunks == ((len(SPECIES),), (16, 16, 8), (16, 16, 4))
    assert list(result["species"].values) == SPECIES
    assert result.rio.crs.to_epsg() == 3035
    np.testing.assert_array_equal(result["x"], cube["x"])


def test_suitability_cube_of_a_numpy_cube(checkpoint, cube):
    model, ckpt, _ = checkpoint
    result = suitability_cube(cube, model, ckpt)
    assert isinstance(result.data, da.Array)
    codes = result.values
    assert np.abs(codes.astype(int) - encode(_direct(model, ckpt, cube)).astype(int)).max() <= 1


def test_chunked_prediction_equals_whole_array(checkpoint, cube):
    model, ckpt, _ = checkpoint
    four = cube.chunk({"variable": -1, "y": NY // 2, "x": NX // 2})
    assert four.data.npartitions == 4
    chunked = suitability_cube(four, model, ckpt, batch_size=64).values
    whole = encode_logits(forward_block(cube.values.astype("float64"), model, ckpt["mean"], ckpt["std"],
                                        torch.device("cpu"), batch_size=1_000_000, logits=True))
    np.testing.assert_array_equal(chunked == NODATA, whole == NODATA)
    # float32 sums may differ in the last bit between batch sizes, which can move a rounding by one code
    diff = np.abs(chunked.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_variable_order_of_the_cube_does_not_matter(checkpoint, cube):
    model, ckpt, _ = checkpoint
    reversed_cube = cube.isel(variable=slice(None, None, -1))
    assert list(reversed_cube["variable"].values) == VARIABLES[::-1]
    extra = xr.concat([reversed_cube, (cube.sel(variable="bio1") * 0 + 7).expand_dims(variable=["bio99"])],
                      dim="variable")
    expected = suitability_cube(cube, model, ckpt).values
    np.testing.assert_array_equal(suitability_cube(reversed_cube, model, ckpt).values, expected)
    np.testing.assert_array_equal(suitability_cube(extra, model, ckpt).values, expected)


@pytest.mark.parametrize("assemblage", ["threshold", "top_k", "average_k"])
def test_predict_scenario_writes_a_readable_store(checkpoint, cube, tmp_path, assemblage):
    model, ckpt, path = checkpoint
    out = tmp_path / "current.zarr"
    predict_scenario(cube, path, out, scenario="current", chunk=16, batch_size=256, assemblage=assemblage, k=2,
                     device="cpu")
    assert out.exists()
    ds = open_predictions(out)
    assert ds.rio.crs is not None and ds.rio.crs.to_epsg() == 3035
    suitability, presence = ds["suitability"].values, ds["presence"].values
    assert suitability.shape == presence.shape == (len(SPECIES), NY, NX)
    assert ds["suitability"].dtype == np.float32 and presence.dtype == bool
    assert list(ds["species"].values) == SPECIES
    np.testing.assert_array_equal(ds["x"], cube["x"])
    np.testing.assert_array_equal(ds["y"], cube["y"])
    nodata = ~np.isfinite(cube.values).all(axis=0)
    assert np.isnan(suitability[:, nodata]).all()
    valid = suitability[:, ~nodata]
    assert np.isfinite(valid).all() and valid.min() >= 0 and valid.max() <= 1
    assert not presence[:, nodata].any()
    np.testing.assert_allclose(suitability, _direct(model, ckpt, cube), atol=DECODE_ATOL)
    if assemblage == "threshold":
        np.testing.assert_array_equal(presence[:, ~nodata], valid >= THRESHOLDS[:, None])  # exactly
    elif assemblage == "top_k":
        assert (presence[:, ~nodata].sum(axis=0) == 2).all()
    else:
        assert abs(presence[:, ~nodata].sum(axis=0).mean() - 2) < 0.5
    raw = open_predictions(out, decode=False)
    assert raw["suitability"].dtype == np.uint8 and raw["presence"].dtype == np.uint8
    assert (raw["presence"].values[:, nodata] == NODATA).all()
    # the scale is written down in the store, for readers other than open_predictions (QGIS, xarray)
    assert raw["suitability"].attrs["encoding"] == "logit"
    assert {k: raw["suitability"].attrs[k] for k in ATTRS} == ATTRS


def test_predict_scenario_on_a_reversed_cube_gives_the_same_store(checkpoint, cube, tmp_path):
    _, _, path = checkpoint
    predict_scenario(cube, path, tmp_path / "a.zarr", scenario="current", chunk=16, device="cpu")
    predict_scenario(cube.isel(variable=[2, 0, 1]), path, tmp_path / "b.zarr", scenario="current", chunk=16,
                     device="cpu")
    a, b = open_predictions(tmp_path / "a.zarr", decode=False), open_predictions(tmp_path / "b.zarr", decode=False)
    np.testing.assert_array_equal(a["suitability"].values, b["suitability"].values)
    np.testing.assert_array_equal(a["presence"].values, b["presence"].values)


def test_a_future_applies_the_present_average_k_threshold(checkpoint, cube, tmp_path):
    # a warmer future: chosen on its own suitability the threshold would follow the future's mean set size; the
    # present's applies, so a cell is present exactly where its code reaches the present's threshold
    from sdm.predict import shared_average_k

    _, ckpt, path = checkpoint
    options = dict(chunk=16, device="cpu", assemblage="average_k", k="auto", progress=False)
    predict_scenario(cube, path, tmp_path / "current.zarr", scenario="current", **options)
    warm = cube + xr.DataArray([4.0, 0.0, 0.0], dims="variable", coords={"variable": cube["variable"]})
    predict_scenario(warm, path, tmp_path / "own.zarr", scenario="warm", **options)
    predict_scenario(warm, path, tmp_path / "warm.zarr", scenario="warm", average_k_from=tmp_path / "current.zarr",
                     **options)
    code = shared_average_k(tmp_path / "current.zarr", "auto", ckpt["thresholds"])
    own = shared_average_k(tmp_path / "own.zarr", "auto", ckpt["thresholds"])
    assert code != own  # the warm future's own threshold differs: the case that matters
    for store, expected_code in (("current", code), ("warm", code), ("own", own)):
        ds = open_predictions(tmp_path / f"{store}.zarr", decode=False)
        valid = ds["suitability"].values != NODATA
        expected = (ds["suitability"].values >= expected_code) & valid
        np.testing.assert_array_equal(ds["presence"].values == 1, expected, err_msg=store)


def test_predict_scenario_missing_variable_names_scenario_and_variable(checkpoint, cube, tmp_path):
    _, _, path = checkpoint
    with pytest.raises(ValueError, match=r"ssp585.*bio12|bio12.*ssp585"):
        predict_scenario(cube.drop_sel(variable="bio12"), path, tmp_path / "x.zarr", scenario="ssp585",
                         device="cpu")
    assert not (tmp_path / "x.zarr").exists()


def test_decode_suitability_table_matches_the_arithmetic_decoding():
    from sdm.codes import HIGH, LOW
    from sdm.predict import decode_suitability

    codes = xr.DataArray(np.arange(256, dtype="uint8").reshape(1, 16, 16), dims=("species", "y", "x"))
    logit = LOW + STEP * codes.astype("float64").where(codes != NODATA)
    expected = (1 / (1 + np.exp(-logit))).astype("float32")
    eager = decode_suitability(codes)
    lazy = decode_suitability(codes.copy(data=da.from_array(codes.values, chunks=(1, 8, 8))))
    assert eager.dtype == np.float32 and lazy.dtype == np.float32 and lazy.chunks is not None
    np.testing.assert_array_equal(eager.values, expected.values)  # bit for bit, NaN at 255
    np.testing.assert_array_equal(lazy.values, expected.values)
    flat = eager.values.ravel()
    assert flat[0] == pytest.approx(np.exp(LOW), rel=1e-5) and flat[254] == pytest.approx(1 - np.exp(-HIGH), rel=1e-7)
    assert np.isnan(flat[255]) and np.isnan(flat).sum() == 1
    assert eager.attrs["units"] == "probability"


def test_open_predictions_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.zarr"):
        open_predictions(tmp_path / "nothing.zarr")


@pytest.mark.parametrize("assemblage", ["threshold", "average_k"])
def test_predict_scenario_runs_the_model_once_per_chunk(checkpoint, cube, tmp_path, monkeypatch, assemblage):
    import sdm.predict

    calls = []
    original = sdm.predict.predict_block

    def counting(block, *args, **kwargs):
        if block.size:  # dask may call the function on an empty block to infer its output type
            calls.append(block.shape)
        return original(block, *args, **kwargs)

    monkeypatch.setattr(sdm.predict, "predict_block", counting)
    predict_scenario(cube, checkpoint[2], tmp_path / "p.zarr", scenario="current", chunk=20, assemblage=assemblage,
                     k=2, device="cpu")
    # 40 x 36 cells in chunks of 20: 2 x 2 chunks, each forwarded once (average_k reads the stored suitability)
    assert sorted(s[1:] for s in calls) == [(20, 16), (20, 16), (20, 20), (20, 20)]


# --- speed paths: chunk sizes, the uint8 fast path, bfloat16, Dask distributed, the benchmark -----------------------

@pytest.mark.parametrize("n_species", [1, 40, 1000, 10_000, 100_000])
def test_chunk_cells_bounds_the_chunk(n_species):
    from sdm.predict import CHUNK_BYTES, chunk_cells

    side = chunk_cells(n_species, 19)
    assert side >= 16 and side % 16 == 0
    per_cell = 4 * (n_species + 19)
    if side > 16:
        assert side * side * per_cell <= CHUNK_BYTES < (side + 16) ** 2 * per_cell
    assert chunk_cells(n_species, 19, CHUNK_BYTES // 4) <= side
    assert chunk_cells(n_species, 19, 1) == 16


def test_predict_block_equals_encoded_forward_and_threshold(checkpoint, cube):
    from sdm.assemblage import presence_threshold
    from sdm.codes import threshold_codes
    from sdm.predict import predict_block

    model, ckpt, _ = checkpoint
    block = cube.values
    codes = threshold_codes(ckpt["thresholds"]).astype("uint8")
    layers = predict_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), 100, threshold_codes=codes)
    assert layers.shape == (2, len(SPECIES), NY, NX) and layers.dtype == np.uint8
    logits = forward_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), 100, logits=True)
    expected = encode_logits(logits)
    np.testing.assert_array_equal(layers[0], expected)  # the torch fast path and the numpy encoder, bit for bit
    # from probabilities (float64 logit of a float32 sigmoid) the codes move by one at most, near half-codes only
    probability = forward_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), 100)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-logits.astype("float64"))), rtol=1e-5)
    diff = np.abs(encode(probability).astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    suitability = xr.DataArray(expected, dims=("species", "y", "x"), coords={"species": SPECIES})
    np.testing.assert_array_equal(layers[1], presence_threshold(suitability, ckpt["thresholds"]).values)
    only_codes = predict_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), 100)
    assert only_codes.shape == (1, len(SPECIES), NY, NX)
    np.testing.assert_array_equal(only_codes[0], expected)


@pytest.mark.parametrize("pattern", ["runs", "fragmented", "none valid", "all valid"])
def test_no_data_cells_land_in_place(checkpoint, cube, pattern):
    """The valid cells are computed packed and put back: by runs (coastlines) or, for a scattered mask, indexed."""
    from sdm.predict import predict_block

    model, ckpt, _ = checkpoint
    block = cube.values.copy()
    rng = np.random.default_rng(3)
    if pattern == "runs":
        block[:, :, :9] = np.nan
    elif pattern == "fragmented":
        block[:, rng.random((NY, NX)) < 0.5] = np.nan
    elif pattern == "none valid":
        block[:] = np.nan
    else:
        block = np.nan_to_num(block)
    nodata = ~np.isfinite(block).all(axis=0)
    probability = forward_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"))
    assert np.isnan(probability[:, nodata]).all() and np.isfinite(probability[:, ~nodata]).all()
    codes = predict_block(block, model, ckpt["mean"], ckpt["std"], torch.device("cpu"))[0]
    assert (codes[:, nodata] == NODATA).all() and (codes[:, ~nodata] < NODATA).all()
    # each valid cell gets the prediction of its own climate, wherever it sits in the chunk
    valid_cells = np.flatnonzero(~nodata.ravel())
    if len(valid_cells):
        alone = forward_block(block.reshape(len(VARIABLES), -1)[:, valid_cells][:, :, None], model, ckpt["mean"],
                              ckpt["std"], torch.device("cpu"))
        np.testing.assert_allclose(probability.reshape(len(SPECIES), -1)[:, valid_cells], alone[:, :, 0],
                                   atol=1e-6)


def test_bfloat16_is_close_to_float32(checkpoint, cube):
    from sdm.predict import predict_block

    model, ckpt, _ = checkpoint
    f32 = predict_block(cube.values, model, ckpt["mean"], ckpt["std"], torch.device("cpu"))[0].astype(int)
    bf16 = predict_block(cube.values, model, ckpt["mean"], ckpt["std"], torch.device("cpu"),
                         precision="bfloat16")[0].astype(int)
    np.testing.assert_array_equal(f32 == NODATA, bf16 == NODATA)
    diff = np.abs(f32 - bf16)[f32 != NODATA]
    assert diff.mean() < 1.5 and diff.max() <= 8  # bfloat16 keeps 8 bits of mantissa: a few codes at most
    probability = forward_block(cube.values, model, ckpt["mean"], ckpt["std"], torch.device("cpu"),
                                precision="bfloat16")
    assert probability.dtype == np.float32
    with pytest.raises(ValueError, match="precision"):
        forward_block(cube.values, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), precision="float16")


CODE_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", CODE_DEVICES)
def test_the_bfloat16_code_table_gives_the_arithmetics_codes(device):
    from sdm.predict import _bfloat16_code_table, _code_values_, code_table, table_codes

    every = torch.from_numpy(np.arange(2**16, dtype=np.uint16).view(np.int16)).view(torch.bfloat16)
    every = every[~torch.isnan(every.float())].reshape(2, -1).to(device)  # +-inf and +-0 included
    expected = _code_values_(every.float()).to(torch.uint8)
    table = _bfloat16_code_table().to(device)
    assert torch.equal(table_codes(every, table), expected)
    assert torch.equal(table_codes(every.float(), table), expected)  # float32 logits: the arithmetic
    assert code_table("cpu", "bfloat16") is None and code_table("cuda", "float32") is None


@pytest.mark.parametrize("device", CODE_DEVICES)
def test_the_device_pass_codes_by_the_table_equal_the_arithmetics(checkpoint, cube, monkeypatch, device):
    import sdm.device_pass
    import sdm.predict
    from sdm.predict import _bfloat16_code_table

    model, ckpt, _ = checkpoint
    model = model.to(device)

    def codes():
        return sdm.device_pass.block_codes(cube.values, model, ckpt["mean"], ckpt["std"], torch.device(device),
                                           None, "bfloat16").cpu().numpy()

    monkeypatch.setattr(sdm.predict, "code_table", lambda d, p: None)
    by_arithmetic = codes()
    monkeypatch.setattr(sdm.predict, "code_table", lambda d, p: _bfloat16_code_table().to(d))
    np.testing.assert_array_equal(codes(), by_arithmetic)
    assert (by_arithmetic == NODATA).any() and len(np.unique(by_arithmetic)) > 50


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(checkpoint, cube):
    from sdm.predict import predict_block

    model, ckpt, _ = checkpoint
    cpu = predict_block(cube.values, model, ckpt["mean"], ckpt["std"], torch.device("cpu"), threshold_codes=[10] * 4)
    model_cuda = _model().cuda()
    cuda = predict_block(cube.values, model_cuda, ckpt["mean"], ckpt["std"], torch.device("cuda"),
                         threshold_codes=[10] * 4)
    np.testing.assert_array_equal(cpu == NODATA, cuda == NODATA)
    assert np.abs(cpu.astype(int) - cuda.astype(int)).max() <= 1
    probability = forward_block(cube.values, model_cuda, ckpt["mean"], ckpt["std"], torch.device("cuda"))
    np.testing.assert_allclose(probability, _direct(model, ckpt, cube), atol=1e-4)


def test_predict_scenario_caps_the_chunk_by_memory_and_uses_a_fast_codec(checkpoint, cube, tmp_path):
    import zarr

    from sdm.predict import chunk_cells

    _, _, path = checkpoint
    memory = 4 * (len(SPECIES) + len(VARIABLES)) * 16 * 16  # room for 16 x 16 cells
    assert chunk_cells(len(SPECIES), len(VARIABLES), memory) == 16
    out = tmp_path / "p.zarr"
    predict_scenario(cube, path, out, scenario="current", chunk=1024, memory_bytes=memory, device="cpu",
                     progress=False)
    for name in ("suitability", "presence"):
        array = zarr.open_array(out / name, mode="r")
        assert array.chunks == (len(SPECIES), 16, 16)
        assert [type(c).__name__ for c in array.compressors] == ["BloscCodec"]
    reference = tmp_path / "r.zarr"
    predict_scenario(cube, path, reference, scenario="current", device="cpu", progress=False)
    a, b = open_predictions(out, decode=False), open_predictions(reference, decode=False)
    np.testing.assert_array_equal(a["suitability"].values, b["suitability"].values)
    np.testing.assert_array_equal(a["presence"].values, b["presence"].values)


def test_predict_scenario_restores_torch_threads(checkpoint, cube, tmp_path):
    torch.set_num_threads(1)
    predict_scenario(cube, checkpoint[2], tmp_path / "p.zarr", scenario="current", threads=2, device="cpu",
                     progress=False)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("assemblage", ["threshold", "average_k"])
def test_distributed_scheduler_equals_threaded(checkpoint, cube, tmp_path, assemblage, capfd):
    """On a Dask cluster the workers load the checkpoint from its path (once per process), and write the same store
    as the threaded scheduler; the futures' progress is shown on stderr."""
    from distributed import LocalCluster

    import sdm.predict

    _, _, path = checkpoint
    predict_scenario(cube, path, tmp_path / "threads.zarr", scenario="current", chunk=16, assemblage=assemblage, k=2,
                     device="cpu", progress=False)
    sdm.predict._MODELS.clear()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        predict_scenario(cube, path, tmp_path / "cluster.zarr", scenario="current", chunk=16, assemblage=assemblage,
                         k=2, device="cpu", scheduler=cluster.scheduler_address)
    # the model came from the checkpoint file, loaded inside the tasks, not pickled into the graph
    assert [key[0] for key in sdm.predict._MODELS] == [str(path.resolve())]
    shown = capfd.readouterr().err
    steps = ["predict current (suitability):", "predict current (presence):"] if assemblage == "average_k" else [
        "predict current:"]
    assert all(f"{step}\n" in shown for step in steps) and "100% Completed" in shown, shown
    a = open_predictions(tmp_path / "threads.zarr", decode=False)
    b = open_predictions(tmp_path / "cluster.zarr", decode=False)
    np.testing.assert_array_equal(a["suitability"].values, b["suitability"].values)
    np.testing.assert_array_equal(a["presence"].values, b["presence"].values)
    assert b.rio.crs.to_epsg() == 3035


def test_the_cluster_graph_holds_the_checkpoint_path_not_the_model(checkpoint, cube):
    from sdm.predict import _predict_layers

    _, ckpt, path = checkpoint
    _, layers = _predict_layers(cube.chunk({"y": 20, "x": 18}), str(path), ckpt, batch_size=None, device="auto",
                                precision="float32")
    import cloudpickle

    shipped = cloudpickle.dumps(dict(layers.__dask_graph__()))  # what a distributed scheduler would receive
    assert str(path).encode() in shipped
    assert b"ResidualMLP" not in shipped and len(shipped) < 100_000


def test_throughput_benchmark_quick_runs(tmp_path):
    """The benchmark's --quick mode runs every row (no timing is checked here)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    out = tmp_path / "throughput.json"
    done = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    species = sorted({row["species"] for row in report["rows"]})
    assert len(species) == 2
    methods = ["sdm predict stage, end to end (float32)", "sdm predict stage, end to end (bfloat16)",
               "bare forward, torch float32 (same model)", "numpy float32 matmul, same FLOPs (limit)",
               "elapid MaxEnt predict, per species", "scikit-learn RandomForest predict, per species",
               "scikit-learn HistGradientBoosting predict, per species"]
    for s in species:
        assert [r["method"] for r in report["rows"] if r["species"] == s] == methods
    for row in report["rows"]:
        assert row["rate"] > 0 and row["rss"] > 0
        assert f"| {row['method']} | {row['species']:,} |" in done.stdout
    assert len(report["grid"]) == 3
    assert [g["cells"] for g in report["grid"]] == sorted(g["cells"] for g in report["grid"])
    assert "targets (issue 6)" in done.stdout and "peak RSS" in done.stdout
    fused = report["fused"]
    assert fused["species"] == 20 and fused["cells"] > 0.8 * 4e4
    assert 0 < fused["mean_richness"] <= 20 and 0 < fused["species_present"] <= 20
    # extrapolation in proportion to species-cells
    assert fused["global_seconds"] == pytest.approx(14_129 * 1e8 / fused["rate"])
    assert "published global case" in done.stdout


@pytest.mark.parametrize("ny, nx, cap, workers", [(1000, 1000, 256, 2), (500, 500, 256, 2), (1000, 1000, 736, 2),
                                                  (200, 200, 1056, 2), (40, 36, 1696, 2), (3000, 7000, 64, 8)])
def test_default_chunks_are_even_capped_and_keep_workers_busy(ny, nx, cap, workers):
    from sdm.predict import _even_side

    side = _even_side(ny, nx, cap, workers)
    chunks = -(-ny // side) * -(-nx // side)
    assert 1 <= side <= cap
    assert chunks >= 2 * workers
    if (ny, nx, cap) == (1000, 1000, 256):
        assert side == 250  # 4 x 250, not 3 x 256 + 232: zarr pads a partial edge chunk


def test_predict_scenario_default_chunks(checkpoint, cube, tmp_path):
    import zarr

    out = tmp_path / "p.zarr"
    predict_scenario(cube, checkpoint[2], out, scenario="current", workers=2, threads=2, device="cpu",
                     progress=False)
    assert zarr.open_array(out / "suitability", mode="r").chunks == (len(SPECIES), 20, 20)  # 40 x 36 in 2 x 2


@pytest.mark.parametrize("species, expected", [(None, 4096), (10, 4096), (100, 4096), (1000, 1024), (14_129, 1024)])
def test_cpu_batches_keep_the_output_in_cache(species, expected):
    from sdm.predict import batch_cells

    assert batch_cells("cpu", None, species) == expected
    assert batch_cells("cpu", 512, species) == 512  # batch_size caps it
    assert batch_cells("cuda", None, species) == 65536


# --- the stored codes keep the ranking that AUC measures (issue 11, item 5) -----------------------------------------

def _fit_demo_model(cube: xr.DataArray, occurrences, train_cells: np.ndarray, steps: int = 300):
    """(model, checkpoint fields): a small joint model fitted in a few seconds, species' records in the training
    cells against background (every training cell, absent for every species), logistic loss.

    Fitted here rather than with sdm.train so that this test of the stored scale does not move with the trainer."""
    torch.manual_seed(0)
    values = cube.values.reshape(cube.sizes["variable"], -1).T.astype("float64")
    mean, std = values[train_cells.ravel()].mean(axis=0), values[train_cells.ravel()].std(axis=0)
    z = torch.from_numpy(((values - mean) / std).astype("float32"))
    species = sorted(occurrences["species"].unique())
    cells = occurrences["row"].to_numpy() * cube.sizes["x"] + occurrences["col"].to_numpy()
    keep = train_cells.ravel()[cells]
    presence_cells = torch.from_numpy(cells[keep])
    presence_species = torch.from_numpy(occurrences["species"].map(species.index).to_numpy()[keep])
    background = z[torch.from_numpy(np.flatnonzero(train_cells.ravel()))]
    model = ResidualMLP(z.shape[1], len(species), hidden=32, blocks=1, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: on a busy machine more threads only wait for each other (40x slower)
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            present = model(z[presence_cells]).gather(1, presence_species[:, None])
            absent = model(background)
            loss = bce(present, torch.ones_like(present)) + bce(absent, torch.zeros_like(absent))
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, {"species": species, "variables": [str(v) for v in cube["variable"].values], "mean": mean,
                   "std": std}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 100 x 100 demo world with 10-cell spatial blocks (one in four held out), a model fitted on the others, and
    the same model with its output bias lowered by 6 logits: the probabilities of a model calibrated to rare
    species' prevalence (held-out records at a median of 0.014, a tenth below 1e-3; half the cells below 1e-6),
    to which the former linear codes (probability x 254) gave half the records a code of 4 or less, most cells 0."""
    from sdm.climate import ingest_climate, valid_mask
    from sdm.demo import generate_demo
    from sdm.occurrences import ingest_occurrences

    root = tmp_path_factory.mktemp("demo_auc")
    paths = generate_demo(root / "demo", rows=100, cols=100, n_species=20, seed=2, scenarios={})
    cube = ingest_climate(paths["current"], "current")
    valid = valid_mask(cube)
    occurrences, _, _ = ingest_occurrences(paths["occurrences"], cube.isel(variable=0, drop=True), valid)
    rows, cols = np.mgrid[0:cube.sizes["y"], 0:cube.sizes["x"]]
    test_cells = ((rows // 10 + 2 * (cols // 10)) % 4 == 0) & valid
    model, ckpt = _fit_demo_model(cube, occurrences, valid & ~test_cells)
    models = {"as fitted": root / "model.pt", "rare-species calibration": root / "shifted.pt"}
    for name, shift in (("as fitted", 0.0), ("rare-species calibration", -6.0)):
        with torch.no_grad():
            model.head.bias += shift
        save_checkpoint(models[name], model, thresholds=np.full(len(ckpt["species"]), 0.5), config={}, **ckpt)
    return {"cube": cube, "occurrences": occurrences, "test_cells": test_cells, "models": models, "root": root}


def _held_out_aucs(scores: np.ndarray, species, occurrences, test_cells: np.ndarray) -> np.ndarray:
    """Per species: AUC of its records in the test blocks against every valid test-block cell (background)."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for i, name in enumerate(species):
        records = occurrences[occurrences["species"] == name]
        rows, cols = records["row"].to_numpy(), records["col"].to_numpy()
        held_out = test_cells[rows, cols]
        if held_out.sum() < 2:
            continue
        labels = np.r_[np.ones(held_out.sum()), np.zeros(test_cells.sum())]
        aucs.append(roc_auc_score(labels, np.r_[scores[i][rows[held_out], cols[held_out]], scores[i][test_cells]]))
    return np.array(aucs)


@pytest.mark.parametrize("calibration", ["as fitted", "rare-species calibration"])
def test_auc_from_stored_codes_equals_auc_from_float_scores(demo, calibration):
    from sdm.model import load_checkpoint

    path = demo["models"][calibration]
    out = demo["root"] / f"{path.stem}.zarr"
    predict_scenario(demo["cube"], path, out, scenario="current", device="cpu", progress=False)
    codes = open_predictions(out, decode=False)["suitability"].values
    model, ckpt = load_checkpoint(path)
    floats = forward_block(demo["cube"].sel(variable=ckpt["variables"]).values, model, ckpt["mean"], ckpt["std"],
                           torch.device("cpu"))
    test_cells = demo["test_cells"]
    score = {name: _held_out_aucs(s, ckpt["species"], demo["occurrences"], test_cells)
             for name, s in (("floats", floats), ("codes", codes),
                             ("linear codes", np.rint(np.nan_to_num(floats) * 254)))}
    assert len(score["floats"]) >= 15 and score["floats"].mean() > 0.8
    # the codes rank cells as the floats do, ties only between cells within 0.1 logit of each other: measured
    # 0.0000 on the mean AUC (0.888) and 0.0007 at most for a species (2-89 held-out records), either model
    assert abs(score["codes"].mean() - score["floats"].mean()) < 0.002, score
    assert np.abs(score["codes"] - score["floats"]).max() < 0.002, score
    if calibration == "rare-species calibration":
        # control: the former linear codes tie presences with most background cells (measured: mean AUC 0.809,
        # one species 0.42 below its float AUC)
        assert np.median(floats[:, test_cells]) < 1e-4
        assert score["floats"].mean() - score["linear codes"].mean() > 0.02


def test_indicators_of_stores_predicted_with_other_chunk_sides(checkpoint, cube, tmp_path):
    # a scenario added later with another --cores gets another chunk side: the indicator job still writes its MESS
    from sdm.indicators import all_indicators

    from sdm.train import reference_quantiles

    _, ckpt, _ = checkpoint
    values = cube.values.reshape(len(VARIABLES), -1).T
    path = tmp_path / "model.pt"  # with the training climate's percentiles: the stores hold a MESS layer
    save_checkpoint(path, _model(), species=SPECIES, variables=VARIABLES, mean=ckpt["mean"], std=ckpt["std"],
                    thresholds=THRESHOLDS, config={}, reference=reference_quantiles(values[np.isfinite(values).all(1)]))
    predict_scenario(cube, path, tmp_path / "current.zarr", scenario="current", chunk=16, device="cpu", progress=False)
    warm = cube + xr.DataArray([1.0, 0.0, 0.0], dims="variable", coords={"variable": cube["variable"]})
    predict_scenario(warm, path, tmp_path / "warm.zarr", scenario="warm", chunk=24, device="cpu", progress=False)
    all_indicators(tmp_path / "current.zarr", {"warm": tmp_path / "warm.zarr"},
                   {"current": tmp_path / "c", ("warm", "full"): tmp_path / "wf"})
    written = xr.open_zarr(tmp_path / "wf" / "indicators.zarr", consolidated=False)
    expected = open_predictions(tmp_path / "warm.zarr")["mess"].values
    np.testing.assert_array_equal(written["mess"].values, expected)
