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
