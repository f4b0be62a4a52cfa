"""Unit tests of sdm.model: the residual MLP, device choice and the checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdm.model import ResidualMLP, load_checkpoint, resolve_device, save_checkpoint, standardise


def _model(seed: int = 0, **kwargs) -> ResidualMLP:
    torch.manual_seed(seed)
    return ResidualMLP(**{"n_inputs": 3, "n_species": 5, "hidden": 16, "blocks": 2, "dropout": 0.1, **kwargs})


def test_output_shape_is_batch_by_species():
    model = _model().eval()
    out = model(torch.randn(7, 3))
    assert out.shape == (7, 5)
    assert out.dtype == torch.float32


def test_output_shape_without_residual_blocks():
    model = _model(blocks=0, n_species=2).eval()
    assert model(torch.randn(4, 3)).shape == (4, 2)


def test_standardise_uses_training_statistics():
    values = np.array([[1.0, 10.0], [3.0, 30.0]])
    z = standardise(values, np.array([2.0, 20.0]), np.array([1.0, 10.0]))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, [[-1, -1], [1, 1]])


def test_checkpoint_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    model = _model(seed=3)
    # move the weights away from their initialisation so a fresh model cannot pass by accident
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    species = ["Abies alba", "Betula pendula", "Carex sp.", "Draba", "Erica"]
    variables = ["bio1", "bio12", "bio4"]
    mean, std = np.array([10.5, 800.0, 3.25]), np.array([2.0, 150.0, 0.5])
    thresholds = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    config = {"hidden": 16, "blocks": 2, "seed": 3}
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, species=species, variables=variables, mean=mean, std=std, thresholds=thresholds,
                    config=config)

    loaded, checkpoint = load_checkpoint(path)
    assert not loaded.training  # eval mode: dropout off, outputs deterministic
    assert loaded.hparams == model.hparams
    x = torch.randn(32, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert checkpoint["species"] == species
    assert checkpoint["variables"] == variables
    np.testing.assert_array_equal(checkpoint["mean"], mean)
    np.testing.assert_array_equal(checkpoint["std"], std)
    np.testing.assert_array_equal(checkpoint["thresholds"], thresholds)
    assert checkpoint["config"] == config
    assert isinstance(checkpoint["mean"], np.ndarray)


def test_load_checkpoint_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resolve_device_auto_is_cpu_without_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_resolve_device_cuda_without_gpu_raises(device):
    with pytest.raises(RuntimeError, match="(?i)cuda"):
        resolve_device(device)


# --- options: quadratic inputs, deep ensembles, location inputs ---------------------------------------------------

def test_default_model_keeps_the_original_state_dict_layout():
    keys = set(_model().state_dict())
    assert "head.weight" in keys and "encoder.0.weight" in keys
    assert not any(k.startswith("members") for k in keys)
    assert _model().state_dict()["encoder.0.weight"].shape == (16, 3)


def test_checkpoint_without_new_hparams_still_loads(tmp_path):
    """Checkpoints written before quadratic / members existed have only the original hparams."""
    model = _model(seed=1).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, model, species=list("abcde"), variables=["bio1", "bio12", "bio4"], mean=np.zeros(3),
                    std=np.ones(3), thresholds=np.full(5, 0.5), config={})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hparams"] = {k: v for k, v in checkpoint["hparams"].items() if k not in ("quadratic", "members", "additive")}
    torch.save(checkpoint, path)
    loaded, _ = load_checkpoint(path)
    x = torch.randn(8, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_additive_network_has_no_interactions_and_round_trips(tmp_path):
    """``additive``: each species' logit is a sum of one curve per input, so the mixed difference of any two inputs
    is zero (a residual MLP's is not), and the model saves, loads and predicts through the head like the MLP."""
    from sdm.predict import _logits_t

    torch.manual_seed(0)
    model = ResidualMLP(3, 5, additive=8, dropout=0.0).eval()
    assert model.hparams["additive"] == 8 and model.head.in_features == 24
    a, b = torch.randn(64, 3), torch.randn(64, 3)
    mixed = torch.cat([a[:, :1], b[:, 1:]], dim=1), torch.cat([b[:, :1], a[:, 1:]], dim=1)
    with torch.no_grad():
        interaction = model(a) + model(b) - model(mixed[0]) - model(mixed[1])
        torch.testing.assert_close(interaction, torch.zeros_like(interaction), rtol=0, atol=1e-4)
        mlp = _model(seed=3).eval()
        assert (mlp(a) + mlp(b) - mlp(mixed[0]) - mlp(mixed[1])).abs().max() > 1e-2
    path = tmp_path / "additive.pt"
    save_checkpoint(path, model, species=list("abcde"), variables=["a", "b", "c"], mean=np.zeros(3),
                    std=np.ones(3), thresholds=np.full(5, 0.5), config={})
    loaded, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(a), model(a), rtol=0, atol=0)
        torch.testing.assert_close(_logits_t(loaded, a), model(a).T)


def test_quadratic_inputs_double_the_first_layer():
    model = _model(quadratic=True).eval()
    assert model.encoder[0].in_features == 6
    assert model(torch.randn(4, 3)).shape == (4, 5)


def test_ensemble_averages_member_logits_and_round_trips(tmp_path):
    model = _model(seed=2, members=3).eval()
    x = torch.randn(10, 3)
    with torch.no_grad():
        members = model.member_logits(x)
        assert members.shape == (3, 10, 5)
        torch.testing.assert_close(model(x), members.mean(dim=0))
        assert not torch.allclose(members[0], members[1])  # independently initialised
    path = tmp_path / "ensemble.pt"
    save_checkpoint(path, model, species=list("abcde"), variables=["a", "b", "c"], mean=np.zeros(3),
                    std=np.ones(3), thresholds=np.full(5, 0.5), config={})
    loaded, _ = load_checkpoint(path)
    assert loaded.hparams["members"] == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_members_must_be_positive():
    with pytest.raises(ValueError, match="members"):
        _model(members=0)


def _geographic_cube(variables=("bio1",), chunks=None):
    import rioxarray  # noqa: F401
    import xarray as xr

    lon = np.arange(-179.5, 180, 1.0)[::30]
    lat = np.arange(89.5, -90, -1.0)[::30]
    data = np.ones((len(variables), len(lat), len(lon)), dtype="float32")
    cube = xr.DataArray(data, dims=("variable", "y", "x"),
                        coords={"variable": list(variables), "y": lat, "x": lon}).rio.write_crs("EPSG:4326")
    return cube.chunk(chunks) if chunks else cube


def test_coordinate_layers_encode_longitude_and_latitude():
    from sdm.model import coordinate_layers

    cube = _geographic_cube()
    layers = coordinate_layers(cube, 2)
    assert [str(v) for v in layers["variable"].values] == [
        "coord_sin1_lon", "coord_cos1_lon", "coord_sin1_lat", "coord_cos1_lat",
        "coord_sin2_lon", "coord_cos2_lon", "coord_sin2_lat", "coord_cos2_lat"]
    assert layers.dims == ("variable", "y", "x") and layers.shape[1:] == cube.shape[1:]
    lon, lat = cube["x"].values, cube["y"].values
    np.testing.assert_allclose(layers.sel(variable="coord_sin1_lon").values[0], np.sin(np.pi * lon / 180), atol=1e-6)
    np.testing.assert_allclose(layers.sel(variable="coord_cos2_lat").values[:, 0], np.cos(2 * np.pi * lat / 90),
                               atol=1e-6)
    # the dateline is no edge: -179.5 and 179.5 degrees are neighbours in every layer
    edge = coordinate_layers(_geographic_cube().isel(x=[0]).assign_coords(x=[-179.5]), 1).values[:, 0, 0]
    other = coordinate_layers(_geographic_cube().isel(x=[0]).assign_coords(x=[179.5]), 1).values[:, 0, 0]
    np.testing.assert_allclose(edge, other, atol=0.02)


def test_with_coordinate_layers_adds_what_the_model_names_only():
    from sdm.model import with_coordinate_layers

    cube = _geographic_cube(("bio1", "bio12"), chunks={"y": 3, "x": 4})
    assert with_coordinate_layers(cube, ["bio1", "bio12"]) is cube
    wanted = ["bio1", "bio12", "coord_sin1_lon", "coord_cos3_lat"]
    out = with_coordinate_layers(cube, wanted)
    assert [str(v) for v in out["variable"].values] == wanted
    assert out.chunks is not None and out.dtype == cube.dtype
    assert out.rio.crs == cube.rio.crs
