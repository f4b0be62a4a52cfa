"""The range pass on the model's device equals the host pass: the accessible area, packing, sums, tables, stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from sdm.accessible import AccessibleArea, DeviceArea, unit_vectors
from sdm.device_pass import (device_scenario_ranges, mask_sums_on_device, pack_on_device, use_device_pass)
from sdm.features import _mask_sums, all_scenario_ranges
from sdm.fused import lazy_predictions
from sdm.grid import cell_area_km2
from sdm.packed import open_presence_store, pack_presence

from test_fused import world  # noqa: F401  (the fused tests' demo world: cubes of two climates and a model)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
"""The device check: on a machine with CUDA every test below also runs there."""


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distance_km", [60.0, 400.0, 2500.0])
def test_device_area_decides_every_cell_as_the_trees_do(distance_km, device):
    """Whole tiles decided from their centre, the others cell by cell: the same cells as the per-species trees,
    for distances cutting many tiles (60 km) or few, across the antimeridian and for a species without records."""
    rng = np.random.default_rng(1)
    n = 600
    lon = np.r_[rng.uniform(150, 180, n // 2), rng.uniform(-180, -150, n // 2)]
    lat = rng.uniform(-30, 30, n)
    species = rng.integers(0, 12, n)
    area = AccessibleArea(lon, lat, species, 13, distance_km=distance_km)  # species 12 has no record
    xs, ys = np.linspace(170, 190, 70), np.linspace(25, -25, 60)
    xx, yy = np.meshgrid(xs, ys)
    xx = np.where(xx > 180, xx - 360, xx)
    cells = np.flatnonzero(rng.random(xx.size) < 0.7)  # an irregular set, as a block's cells with a presence
    rows, cols = np.divmod(cells, len(xs))
    expected = area.contains(xx.ravel()[cells], yy.ravel()[cells])
    got = DeviceArea(area, device).keep(unit_vectors(xx.ravel()[cells], yy.ravel()[cells]), rows, cols)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)
    assert 0.005 < expected.mean() < 0.98 and not expected[12].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_species", [1, 8, 63, 64, 65, 130])
@pytest.mark.parametrize("n_cells", [37, 1])  # one cell: the corner block of a grid one cell past its chunks
def test_packing_on_the_device_equals_pack_presence(n_species, n_cells, device):
    presence = np.random.default_rng(n_species).random((n_species, n_cells)) < 0.3
    got = pack_on_device(torch.as_tensor(presence, device=device))
    np.testing.assert_array_equal(got, pack_presence(presence))
    assert got.dtype == np.dtype("<u8")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_protected", [False, True])
def test_sums_on_the_device_equal_the_host_sums(with_protected, device):
    rng = np.random.default_rng(3)
    mask = rng.random((9, 500)) < 0.2
    codes = rng.integers(0, 255, (9, 500)).astype("uint8")
    codes[:, :40] = 255  # no data: never in the mask
    mask[:, :40] = False
    valid = codes[0] != 255
    weight = rng.uniform(0.5, 2.0, 500)
    protected = weight * rng.random(500) if with_protected else None
    expected = _mask_sums(mask, codes, valid, weight, protected, coded=True)
    tensor = lambda a: None if a is None else torch.as_tensor(a, device=device)  # noqa: E731
    got = mask_sums_on_device(tensor(mask), tensor(codes), tensor(weight), tensor(protected))
    assert len(got) == (4 if with_protected else 3)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_which_pass_runs():
    assert use_device_pass("device", "cpu", "average_k") and use_device_pass("auto", "cuda", "threshold")
    assert not use_device_pass("auto", "cpu", "average_k") and not use_device_pass("host", "cuda", "average_k")
    assert not use_device_pass("auto", "cuda", "top_k")  # presence needs every species' codes: the host pass
    with pytest.raises(ValueError, match="prediction.reductions must be one of auto, host, device, got 'gpu'"):
        use_device_pass("gpu", "cpu", "average_k")


@pytest.mark.parametrize("device", DEVICES)
def test_packing_no_cells(device):
    assert pack_on_device(torch.zeros((70, 0), dtype=torch.bool, device=device)).shape == (2, 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("assemblage", ["threshold", "average_k"])
def test_the_device_pass_equals_the_host_pass(world, tmp_path, assemblage, device):  # noqa: F811
    """Every run's range table (one scenario given twice, both dispersal assumptions, a protected share) and every
    presence store (bits, cells with data, MESS, species, CRS) of the device pass equal the host pass's."""
    cubes = world["cubes"]
    grid = cubes["current"].isel(variable=0, drop=True)
    area = cell_area_km2(grid)
    protected = xr.zeros_like(grid, dtype="float64") + np.linspace(0, 1, grid.sizes["x"])
    codes = {"current": 150, "warm": 140, "warm2": 140} if assemblage == "average_k" else {}

    # warm2: the warm climate with half its cells without data (another land mask), which keep the present's
    # state in both passes
    holed = cubes["warm"].copy()
    holed[:, :, : holed.sizes["x"] // 2] = np.nan
    climates = {"current": cubes["current"], "warm": cubes["warm"], "warm2": holed}

    def lazy(name):
        return lazy_predictions(climates[name], world["model"], scenario=name, chunk=16, device="cpu",
                                assemblage=assemblage, average_k=codes.get(name))

    host_stores = {name: tmp_path / "host" / f"{name}.zarr" for name in ("current", "warm2")}
    host = all_scenario_ranges(lazy("current"), {"warm": lazy("warm"), "warm2": lazy("warm2")},
                               ["full", "none"], area, protected, presence_stores=host_stores)
    device_stores = {name: tmp_path / "device" / f"{name}.zarr" for name in ("current", "warm2")}
    prediction = {"chunk": 16, "batch_size": 65536, "assemblage": assemblage, "k": 5, "precision": "float32"}
    got = device_scenario_ranges(world["model"], climates, prediction, ["full", "none"], area,
                                 protected, presence_stores=device_stores, average_k=codes, device=device)
    assert torch.load(world["model"], weights_only=True)["accessible"]  # the accessible area is part of the pass
    assert got.keys() == host.keys()
    for scenario in host:
        for dispersal in host[scenario]:
            pd.testing.assert_frame_equal(got[scenario][dispersal], host[scenario][dispersal], check_exact=False,
                                          rtol=1e-10)
    assert (got["warm"]["none"]["range_km2"] > 0).any()
    assert not got["warm2"]["full"].equals(got["warm"]["full"])  # the hole mattered
    assert got["warm"]["none"]["protected_share_range"].between(0, 1).all()
    for name in device_stores:
        xr.testing.assert_identical(open_presence_store(device_stores[name]).compute(),
                                    open_presence_store(host_stores[name]).compute())
    assert not list((tmp_path / "device").glob(".*partial"))


def test_the_device_pass_refuses_an_assemblage_it_cannot_make(world):  # noqa: F811
    prediction = {"chunk": 16, "batch_size": 65536, "assemblage": "top_k", "k": 3, "precision": "float32"}
    with pytest.raises(ValueError, match="reductions: device needs presence by a known code .* set "
                                         "prediction.reductions: host$"):
        device_scenario_ranges(world["model"], {"current": world["cubes"]["current"]}, prediction, ["full"],
                               cell_area_km2(world["cubes"]["current"].isel(variable=0, drop=True)), device="cpu")
