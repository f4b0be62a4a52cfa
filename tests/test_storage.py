"""Stores and files appear complete or not at all."""
import numpy as np
import pytest
import xarray as xr

from sdm.storage import replacing, write_zarr


def test_replacing_leaves_the_old_output_when_the_write_fails(tmp_path):
    target = tmp_path / "out.zarr"
    write_zarr(xr.Dataset({"a": ("x", np.arange(3))}), target)
    with pytest.raises(RuntimeError):
        with replacing(target) as partial:
            xr.Dataset({"a": ("x", np.arange(5))}).to_zarr(partial, consolidated=False)
            raise RuntimeError("killed half-way")
    assert xr.open_zarr(target, consolidated=False)["a"].values.tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no partial sibling left


def test_replacing_swaps_in_the_new_output_and_clears_a_stale_partial(tmp_path):
    target = tmp_path / "layer.tif"
    target.write_text("old")
    stale = tmp_path / ".layer.tif.partial"
    stale.write_text("left by a killed job")
    with replacing(target) as partial:
        assert not partial.exists()
        partial.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the write is complete
    assert target.read_text() == "new" and not stale.exists()
