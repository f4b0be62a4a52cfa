"""Progress bars of the long Dask steps (sdm.progress): labelled, on stderr, for the threaded scheduler, for a
distributed client, and for the fused passes (range sums, average-K histograms) that had none."""

import time

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sdm.progress import compute_on, shown


def _slow(block):
    time.sleep(0.05)
    return block


def slow_sum(n_chunks: int = 8):
    """A Dask array sum that takes about n_chunks x 50 ms on one thread."""
    return da.ones(n_chunks * 4, chunks=4).map_blocks(_slow).sum()


def test_shown_labels_the_bar_on_stderr(capfd):
    with dask.config.set(scheduler="synchronous"), shown("predict ssp585", minimum=0):
        assert slow_sum().compute() == 32
    err = capfd.readouterr().err
    assert "predict ssp585: [########################################] | 100% Completed" in err


def test_shown_is_silent_for_short_steps_and_when_disabled(capfd):
    with shown("quick"):  # minimum 2 s: a short computation draws nothing
        da.ones(4, chunks=2).sum().compute()
    with shown("off", enabled=False, minimum=0):
        slow_sum(2).compute()
    assert capfd.readouterr().err == ""


def test_compute_on_a_distributed_client_shows_its_futures(capfd):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        assert compute_on(client, slow_sum(), "predict current") == 32
    err = capfd.readouterr()
    assert "predict current:\n" in err.err and "100% Completed" in err.err
    assert "Completed" not in err.out  # distributed writes its bar to stdout: sent to stderr (console and log)


def test_fused_range_sums_and_average_k_histograms_show_progress(capfd, monkeypatch):
    """The passes of fused mode that run the model forward (range sums; the histograms of average-K) are named."""
    import sdm.progress
    from sdm.assemblage import species_histograms
    from sdm.features import scenario_ranges

    # every bar drawn from the first second: the small arrays here compute in well under the usual 2 s
    monkeypatch.setattr(sdm.progress, "MINIMUM_S", 0.0)
    monkeypatch.setattr(sdm.progress, "REDRAW_S", 0.05)
    rng = np.random.default_rng(0)
    coords = {"species": ["a", "b"], "y": np.arange(6.0), "x": np.arange(8.0)}
    codes = xr.DataArray(rng.integers(0, 255, (2, 6, 8), dtype="uint8"), coords=coords,
                         dims=("species", "y", "x")).chunk({"y": 3, "x": 4})
    slow = codes.copy(data=codes.data.map_blocks(_slow))
    assert species_histograms(slow).shape == (2, 256)
    current = xr.Dataset({"presence": slow > 100, "suitability": slow.astype("float32") / 255})
    area = xr.DataArray(np.ones((6, 8)), coords={"y": coords["y"], "x": coords["x"]}, dims=("y", "x"))
    scenario_ranges(current, current, ["full", "none"], area)
    err = capfd.readouterr().err
    assert "average-K thresholds (code histograms): [" in err
    assert "range sums (current, future full, future none): [" in err and "100% Completed" in err
