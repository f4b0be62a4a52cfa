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


def test_dask_blocks_keeps_a_broadcast_array_a_broadcast():
    """Per-row cell areas broadcast over a grid (stride 0) line up block for block without a grid-sized copy;
    ordinary in-memory and lazy arrays come out with the same blocks and values."""
    import dask.array as da

    from sdm.storage import dask_blocks

    per_row = np.linspace(1.0, 2.0, 50)
    broadcast = xr.DataArray(np.broadcast_to(per_row[:, None], (50, 4000)), dims=("y", "x"))
    chunks = ((20, 20, 10), (1500, 1500, 1000))
    blocks = dask_blocks(broadcast, chunks)
    assert blocks.chunks == chunks
    # the graph holds the 50 row values, not the 200,000 cells
    held = sum(v.nbytes for v in blocks.dask.values() if isinstance(v, np.ndarray))
    assert held <= 50 * 8
    np.testing.assert_array_equal(blocks.blocks[1, 2].compute(), broadcast.values[20:40, 3000:4000])
    dense = xr.DataArray(np.arange(200_000.0).reshape(50, 4000), dims=("y", "x"))
    np.testing.assert_array_equal(dask_blocks(dense, chunks).compute(), dense.values)
    lazy = dense.chunk({"y": 25, "x": 4000})
    assert dask_blocks(lazy, chunks).chunks == chunks and isinstance(dask_blocks(lazy, chunks), da.Array)
