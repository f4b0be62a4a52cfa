"""Unit tests of sdm.assemblage on uint8 suitability codes (0..254 on the logit scale of sdm.codes, 255 = no data)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sdm.assemblage import assemble, average_k_code
from sdm.codes import NODATA, TOP, decode, threshold_codes


def _suitability(n_species: int = 12, ny: int = 30, nx: int = 25, seed: int = 0, chunk: int | None = 10):
    """Random codes with a block of no-data cells (all species), lazy when ``chunk`` is given."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, TOP + 1, size=(n_species, ny, nx)).astype("uint8")
    codes[:, :4, :6] = NODATA
    codes[:, -1, -1] = NODATA
    suitability = xr.DataArray(codes, dims=("species", "y", "x"),
                               coords={"species": [f"sp{i:02d}" for i in range(n_species)],
                                       "y": np.arange(ny)[::-1] * 1000.0, "x": np.arange(nx) * 1000.0},
                               name="suitability")
    if chunk:
        suitability = suitability.chunk({"species": -1, "y": chunk, "x": chunk})
    return suitability


def _nodata(suitability) -> np.ndarray:
    return np.asarray(suitability.values[0] == NODATA)


@pytest.mark.parametrize("chunk", [None, 10])
def test_threshold_presence_is_probability_at_least_threshold(chunk):
    suitability = _suitability(n_species=6, chunk=chunk)
    thresholds = np.array([0.0, 0.25, 0.5, 0.731, decode(100), 1.0])
    presence = assemble(suitability, "threshold", thresholds=thresholds)
    assert presence.dtype == np.uint8 and presence.name == "presence"
    assert presence.dims == ("species", "y", "x")
    values = presence.values
    codes = suitability.values
    nodata = _nodata(suitability)
    assert (values[:, nodata] == NODATA).all()
    probability = decode(codes[:, ~nodata])
    reachable = np.minimum(thresholds, decode(TOP))[:, None]  # a threshold above the scale keeps its top code
    np.testing.assert_array_equal(values[:, ~nodata], (probability >= reachable).astype("uint8"))
    # the edges: threshold 0 keeps every valid cell, threshold 1 only code 254 (p >= 1 - 8.7e-5)
    assert values[0, ~nodata].all()
    np.testing.assert_array_equal(values[5, ~nodata], codes[5, ~nodata] == TOP)


def test_threshold_codes_round_up_and_default_nan_to_half():
    # 0.5 is logit 0, code 160 exactly; 1e-4 is logit -9.21, code 67.9: 68 is the first at or above it
    np.testing.assert_array_equal(
        threshold_codes([0.0, 0.5, 1.0, decode(128), np.nextafter(decode(128), 1, dtype="float64"), 1e-4, np.nan]),
        [0, 160, 254, 128, 129, 68, 160])


def test_threshold_presence_stays_lazy():
    presence = assemble(_suitability(), "threshold", thresholds=np.full(12, 0.5))
    assert isinstance(presence.data, da.Array)


@pytest.mark.parametrize("k", [1, 3, 11])
def test_top_k_gives_exactly_k_species_per_valid_cell(k):
    suitability = _suitability(n_species=12)
    presence = assemble(suitability, "top_k", k=k)
    assert isinstance(presence.data, da.Array)
    values = presence.values
    nodata = _nodata(suitability)
    assert (values[:, nodata] == NODATA).all()
    assert set(np.unique(values[:, ~nodata])) <= {0, 1}
    np.testing.assert_array_equal(values[:, ~nodata].sum(axis=0), k)
    # and they are the most suitable ones: every chosen code >= every code left out
    codes = suitability.values.astype(int)[:, ~nodata]
    chosen = values[:, ~nodata] == 1
    assert (np.where(chosen, codes, 999).min(axis=0) >= np.where(chosen, -1, codes).max(axis=0)).all()


def test_top_k_with_species_split_across_chunks():
    suitability = _suitability(n_species=12).chunk({"species": 5})
    presence = assemble(suitability, "top_k", k=4)
    nodata = _nodata(suitability)
    np.testing.assert_array_equal(presence.values[:, ~nodata].sum(axis=0), 4)


def test_top_k_larger_than_species_keeps_all():
    suitability = _suitability(n_species=3)
    values = assemble(suitability, "top_k", k=5).values
    nodata = _nodata(suitability)
    assert (values[:, ~nodata] == 1).all() and (values[:, nodata] == NODATA).all()


def test_top_k_below_one_raises():
    with pytest.raises(ValueError, match="k"):
        assemble(_suitability(), "top_k", k=0)


@pytest.mark.parametrize("k", [1.5, 4, 7.25])
def test_average_k_mean_set_size_is_close_to_k(k):
    suitability = _suitability(n_species=20, ny=40, nx=40, seed=3)
    presence = assemble(suitability, "average_k", k=k)
    values = presence.values
    nodata = _nodata(suitability)
    assert (values[:, nodata] == NODATA).all()
    set_size = values[:, ~nodata].sum(axis=0)
    assert abs(set_size.mean() - k) < 0.5
    # one threshold for all species: the set sizes vary between cells
    assert set_size.std() > 0


def test_average_k_code_is_the_best_single_threshold():
    suitability = _suitability(n_species=8, seed=5, chunk=None)
    codes = suitability.values
    valid = codes[0] != NODATA
    best = average_k_code(suitability, 3)
    sizes = {c: (codes[:, valid] >= c).sum(axis=0).mean() for c in range(TOP + 1)}
    assert abs(sizes[best] - 3) == pytest.approx(min(abs(s - 3) for s in sizes.values()))


def test_average_k_presence_is_its_code_threshold():
    """The single threshold is applied as a code (no round trip through a probability that could move it)."""
    suitability = _suitability(n_species=8, seed=5, chunk=None)
    codes = suitability.values
    valid = codes[0] != NODATA
    best = average_k_code(suitability, 3)
    presence = assemble(suitability, "average_k", k=3).values
    np.testing.assert_array_equal(presence[:, valid], (codes[:, valid] >= best).astype("uint8"))
    assert threshold_codes(decode(best)) == best  # and the probability it stands for maps back to it


def test_average_k_without_valid_cells_raises():
    suitability = _suitability(n_species=2, ny=3, nx=3, chunk=None)
    with pytest.raises(ValueError, match="no valid cell"):
        assemble(suitability.where(False, NODATA).astype("uint8"), "average_k", k=1)


def test_unknown_method_raises_naming_it():
    with pytest.raises(ValueError, match="majority_vote"):
        assemble(_suitability(), "majority_vote", k=3)


def test_average_k_auto_with_no_presence_under_the_thresholds_gives_empty_sets():
    import xarray as xr

    from sdm.assemblage import assemble

    codes = xr.DataArray(np.array([[[10, 20], [255, 30]]], dtype="uint8"), dims=("species", "y", "x"))
    presence = assemble(codes, "average_k", thresholds=[0.9], k="auto")
    assert presence.values.tolist() == [[[0, 0], [255, 0]]]


def test_presence_of_a_block_without_data_is_no_data_and_restrict_leaves_it():
    """The short ways for a block of sea: presence all 255 (as the full comparison gives), and the accessible area
    returns the block unchanged without looking at it."""
    from sdm.accessible import AccessibleArea, _restrict_block
    from sdm.assemblage import _presence_block

    sea = np.full((3, 4, 5), 255, dtype="uint8")
    thresholds = np.array([0, 100, 254], dtype="uint8").reshape(-1, 1, 1)
    assert (_presence_block(sea, thresholds) == 255).all()
    land = sea.copy()
    land[:, 0, 0] = [0, 150, 254]  # one cell with data: compared species by species
    assert _presence_block(land, thresholds)[:, 0, 0].tolist() == [1, 1, 1]
    assert _presence_block(np.moveaxis(land, 0, 2), thresholds.reshape(1, 1, -1), axis=2)[0, 0].tolist() == [1, 1, 1]
    area = AccessibleArea([0.0], [0.0], [0], 3, 100.0)
    info = [{"array-location": [(0, 3), (0, 4), (0, 5)]}]
    assert _restrict_block(sea, np.arange(5.0), np.arange(4.0), "EPSG:4326", area, block_info=info) is sea
