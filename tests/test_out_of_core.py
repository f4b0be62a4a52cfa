"""Out of core: the windowed ingest writes the in-memory ingest's cube, and training reads the cube lazily to the
same table, split and metrics as from the loaded cube."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import sdm.climate
import torch
from sdm.climate import ingest_climate, open_cube, write_climate_cube, write_cube
from sdm.grid import make_grid

VARIABLES = ["bio1", "bio12", "landcover", "bio15"]


def _tif(path: Path, data: np.ndarray, names: list[str], nodata=np.nan, crs="EPSG:4326") -> Path:
    with rasterio.open(path, "w", driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                       dtype=str(data.dtype), crs=crs, transform=from_origin(0, 60, 0.05, 0.05),
                       nodata=nodata) as dst:
        dst.write(data)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Three files to harmonise and stack: a single band, a two-band stack, an integer land-cover layer (classes:
    mode / nearest), with holes in one variable; 0.05 degree cells from 0 to 7.5 E, 54 to 60 N."""
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(1)

    def smooth(n):
        return (np.cumsum(np.cumsum(rng.normal(size=(n, 120, 150)), 1), 2) / 10).astype("float32")

    climate = smooth(3)
    climate[0, 30:40, 40:70] = np.nan
    cover = rng.integers(1, 6, size=(1, 120, 150)).astype("uint8")
    return [_tif(folder / "wc2.1_30s_bio_1.tif", climate[:1], ["bio_1"]),
            _tif(folder / "stack.tif", climate[1:], ["BIO12", "bio15"]),
            _tif(folder / "landcover.tif", cover, ["landcover"], nodata=0)]


def _both(sources, tmp_path, grid, chunk=16):
    """(today's in-memory ingest written by write_cube, the windowed ingest), both opened from Zarr."""
    write_cube(ingest_climate(sources, "current", grid, VARIABLES), tmp_path / "memory.zarr", chunk=chunk)
    windowed = write_climate_cube(sources, "current", tmp_path / "windowed.zarr", grid, VARIABLES, chunk=chunk)
    return open_cube(tmp_path / "memory.zarr"), windowed


def _same_store(memory, windowed, tmp_path):
    """Everything but the values: coordinates, CRS, transform, chunks, attributes, Zarr metadata."""
    xr.testing.assert_identical(memory.isel(y=[0], x=[0]).load(), windowed.isel(y=[0], x=[0]).load())
    assert windowed.chunks == memory.chunks and windowed.dtype == np.float32
    assert windowed.rio.crs == memory.rio.crs
    assert windowed.rio.transform(recalc=True) == memory.rio.transform(recalc=True)
    for name in ("climate", "variable", "x", "y", "spatial_ref"):
        assert (json.loads((tmp_path / "windowed.zarr" / name / "zarr.json").read_text())
                == json.loads((tmp_path / "memory.zarr" / name / "zarr.json").read_text())), name


@pytest.mark.parametrize("grid", [
    None,  # the first file's own grid: read, not resampled
    make_grid("EPSG:4326", 0.13, (1, 55, 7, 59.5)),  # coarser: average, and mode for the classes
    make_grid("EPSG:4326", 0.02, (1, 55, 7, 59.5)),  # finer: bilinear, nearest for the classes
], ids=["own grid", "coarser", "finer"])
def test_windowed_ingest_writes_the_in_memory_cube(sources, tmp_path, grid):
    memory, windowed = _both(sources, tmp_path, grid, chunk=48)  # own grid: 3 x 4 windows, finer: 5 x 7
    _same_store(memory, windowed, tmp_path)
    # GDAL's averaging weights may round differently in the last bit when the window is not the whole grid; the
    # bilinear interpolation between grids of one CRS (sdm.bilinear) weighs each window as the whole grid
    np.testing.assert_allclose(windowed.values, memory.values, rtol=0, atol=2e-6)
    if grid is not None and grid.rio.resolution()[0] < 0.05:
        np.testing.assert_array_equal(windowed.values, memory.values)
    assert np.array_equal(np.isnan(windowed.values), np.isnan(memory.values))
    np.testing.assert_array_equal(windowed.sel(variable="landcover").values, memory.sel(variable="landcover").values)
    assert np.isnan(windowed.values).any()  # the hole in bio1 is a hole in every variable


def test_windowed_ingest_onto_another_crs_is_the_in_memory_cube_up_to_gdal_chunking(sources, tmp_path):
    # GDAL sizes its downsampling kernels per processing chunk: the windows differ from one whole-grid warp by a
    # fraction of the change between neighbouring cells (the continuous layers), and by a few class cells at
    # window edges (mode); the in-memory warp is itself cut into chunks by GDAL once the grid is large
    memory, windowed = _both(sources, tmp_path, make_grid("EPSG:3035", 5000, (3.9e6, 3.7e6, 4.25e6, 4.1e6)))
    _same_store(memory, windowed, tmp_path)
    assert np.array_equal(np.isnan(windowed.values), np.isnan(memory.values))
    for name in ("bio1", "bio12", "bio15"):
        a, b = memory.sel(variable=name).values, windowed.sel(variable=name).values
        step = np.nanmedian(np.abs(np.diff(a, axis=1)))  # typical change between neighbouring cells
        assert np.nanmax(np.abs(a - b)) < 0.5 * step and np.nanmean(np.abs(a - b)) < 0.05 * step
    a, b = memory.sel(variable="landcover").values, windowed.sel(variable="landcover").values
    cells = np.isfinite(a)  # random classes: mode ties are common, the worst case for chunk-dependence
    assert set(np.unique(b[cells])) <= set(range(1, 6)) and np.mean(a[cells] != b[cells]) < 0.02


def test_each_window_is_computed_once(sources, tmp_path, monkeypatch):
    calls = []
    window = sdm.climate._Layers.window
    monkeypatch.setattr(sdm.climate._Layers, "window", lambda self, rows, cols: calls.append((rows.start, rows.stop, cols.start, cols.stop))
                        or window(self, rows, cols))
    grid = make_grid("EPSG:4326", 0.02, (1, 55, 7, 59.5))  # 225 x 300 cells: 5 x 7 windows of 48
    cube = write_climate_cube(sources, "current", tmp_path / "cube.zarr", grid, VARIABLES, chunk=48)
    assert len(calls) == len(set(calls)) == len(cube.chunks[1]) * len(cube.chunks[2]) == 5 * 7


def test_windowed_ingest_keeps_the_errors(sources, tmp_path):
    far = make_grid("EPSG:4326", 0.1, (100, 50, 110, 55))
    with pytest.raises(ValueError, match=r"scenario 'ssp585'.*does not overlap the grid"):
        write_climate_cube(sources, "ssp585", tmp_path / "cube.zarr", far)
    with pytest.raises(ValueError, match=r"scenario 'ssp585'.*missing variable\(s\) \['bio7'\]"):
        write_climate_cube(sources, "ssp585", tmp_path / "cube.zarr", variables=["bio1", "bio7"])
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(sources[1].read_bytes()[: sources[1].stat().st_size // 2])
    with pytest.raises(ValueError, match=r"scenario 'current'.*truncated\.tif: cannot read the raster"):
        write_climate_cube([sources[0], truncated], "current", tmp_path / "cube.zarr")
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".*partial"))  # nothing half-written


def test_windowed_netcdf_on_lat_lon(tmp_path):
    lat = np.arange(-9.5, 10.0, 1.0)  # ascending, as in most NetCDF climatologies
    lon = np.arange(-19.5, 20.0, 1.0)
    bio1 = np.repeat(lat[:, None], lon.size, axis=1).astype("float32")
    xr.Dataset({"bio_1": (("lat", "lon"), bio1), "BIO12": (("time", "lat", "lon"), 10 * bio1[None])},
               coords={"lat": lat, "lon": lon, "time": [0]}).to_netcdf(tmp_path / "climatology.nc")
    grid = make_grid("EPSG:4326", 0.5, (-10, -10, 10, 10))
    memory = ingest_climate(tmp_path / "climatology.nc", "current", grid)
    windowed = write_climate_cube(tmp_path / "climatology.nc", "current", tmp_path / "cube.zarr", grid, chunk=16)
    np.testing.assert_allclose(windowed.values, memory.values, rtol=0, atol=1e-5)
    assert windowed["variable"].values.tolist() == ["bio1", "bio12"]


# --- training from the cube on disk ---------------------------------------------------------------------------------

from test_train import FAST, synthetic_world  # noqa: E402

from sdm.train import run_training, train_sdm, training_table  # noqa: E402


@pytest.fixture(scope="module")
def world_on_disk(tmp_path_factory):
    """The training tests' synthetic world (60 x 60 cells with a nodata corner), loaded and as a lazy Zarr cube of
    16-cell chunks."""
    cube, occurrences, _ = synthetic_world()
    path = tmp_path_factory.mktemp("cube") / "current.zarr"
    write_cube(cube, path, chunk=16)
    return cube, open_cube(path), occurrences


def _every_valid_cell(cube, occurrences, species):
    """The training table before it could be read lazily: every valid cell of the loaded cube."""
    data = np.asarray(cube.values, dtype="float32")
    valid = np.isfinite(data).all(axis=0)
    cell_rows, cell_cols = np.nonzero(valid)
    index = np.full(valid.shape, -1, dtype="int64")
    index[cell_rows, cell_cols] = np.arange(len(cell_rows))
    species_index = {s: i for i, s in enumerate(species)}
    cells = index[occurrences["row"].to_numpy(), occurrences["col"].to_numpy()]
    keep = cells >= 0
    presences = np.c_[cells[keep], occurrences["species"].map(species_index).to_numpy()[keep]]
    return data[:, cell_rows, cell_cols].T, cell_rows, cell_cols, presences


def _same_table(a, b):
    for field in ("values", "cell_rows", "cell_cols", "presences", "background", "valid"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.variables == b.variables


@pytest.mark.parametrize("background_cells", [None, 2000, 500])
@pytest.mark.parametrize("coordinates", [0, 2])
def test_the_lazy_cube_gives_the_loaded_cubes_training_table(world_on_disk, background_cells, coordinates):
    cube, lazy, occurrences = world_on_disk
    assert lazy.chunks is not None
    species = sorted(occurrences["species"].unique())
    kwargs = dict(coordinates=coordinates, background_cells=background_cells, seed=3)
    table = training_table(lazy, occurrences, species, **kwargs)
    _same_table(table, training_table(cube, occurrences, species, **kwargs))
    n_valid = int(np.isfinite(cube.values).all(axis=0).sum())  # 3578 cells
    if background_cells is None or background_cells >= n_valid:  # every valid cell, as before
        assert not table.sampled
        expected = _every_valid_cell(cube, occurrences, species)
        for got, want in zip((table.values[:, :3], table.cell_rows, table.cell_cols, table.presences), expected):
            np.testing.assert_array_equal(got, want)
    else:  # the record cells and a uniform sample of valid cells, which alone are background
        assert table.sampled and len(table.background) == background_cells
        assert len(np.unique(table.background)) == background_cells
        assert np.isin(table.presences[:, 0], np.arange(len(table.values))).all()
        assert table.valid[table.cell_rows, table.cell_cols].all()
        rows_in_table = table.cell_rows[table.presences[:, 0]], table.cell_cols[table.presences[:, 0]]
        kept = occurrences[table.valid[occurrences["row"], occurrences["col"]]]
        np.testing.assert_array_equal(rows_in_table[0], kept["row"])
        np.testing.assert_array_equal(rows_in_table[1], kept["col"])
        np.testing.assert_array_equal(np.array(species)[table.presences[:, 1]], kept["species"])
    if coordinates:
        assert table.variables[3:] == [f"coord_{f}{j}_{a}" for j in (1, 2) for a in ("lon", "lat")
                                       for f in ("sin", "cos")]


def test_sampled_background_is_uniform_over_valid_cells():
    from sdm.train import _distinct_draws, sample_valid

    valid = np.random.default_rng(0).random((300, 400)) < 0.3
    picks = sample_valid(valid, 5000, seed=1)
    assert len(np.unique(picks)) == 5000 and np.all(np.diff(picks) > 0)
    assert valid.ravel()[picks].all()
    # the same cells as drawing among the listed valid cells (which this avoids holding)
    listed = np.flatnonzero(valid.ravel())
    draw = _distinct_draws(len(listed), 5000, np.random.default_rng(1 + 104729))
    np.testing.assert_array_equal(picks, listed[draw])


def test_training_on_the_lazy_cube_equals_training_on_the_loaded_cube(world_on_disk):
    cube, lazy, occurrences = world_on_disk
    params = {k: v for k, v in FAST.items() if k not in ("block_cells", "device", "baseline")}
    kwargs = dict(block_cells=6, device="cpu", baseline="logistic", progress=False, eval_cells=500, threads=1,
                  coordinates=1, background_cells=1500, **params)
    model_lazy, lazy_info = train_sdm(lazy, occurrences, **kwargs)
    model, info = train_sdm(cube, occurrences, **kwargs)
    for m in (lazy_info["metrics"], info["metrics"]):
        m.pop("train_seconds")
        m["test"]["baseline"].pop("fit_seconds")
    assert lazy_info["metrics"] == info["metrics"]
    assert lazy_info["metrics"]["background"] == {
        "cells": 1500, "valid_cells": int(np.isfinite(cube.values).all(axis=0).sum()),
        "rule": "a seeded uniform sample of the valid cells (background_cells=1500)"}
    for key in ("thresholds", "split", "scores", "evaluation_scores", "baseline_scores", "cell_rows", "cell_cols",
                "mean", "std", "reference"):
        np.testing.assert_array_equal(lazy_info[key], info[key], err_msg=key)
    state = model.state_dict()
    for name, tensor in model_lazy.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_run_training_on_the_lazy_cube_gives_the_loaded_cubes_metrics(world_on_disk, tmp_path):
    cube, lazy, occurrences = world_on_disk
    params = {**FAST, "min_records": 5, "epochs": 5}
    metrics = {}
    for name, c in (("lazy", lazy), ("loaded", cube)):
        metrics[name] = run_training(c, occurrences, params, model_path=tmp_path / f"{name}.pt",
                                     split_path=tmp_path / f"{name}.tif")
        metrics[name].pop("train_seconds")
        metrics[name]["test"]["baseline"].pop("fit_seconds")
    assert metrics["lazy"] == metrics["loaded"]
    assert metrics["lazy"]["background"]["rule"] == "every valid cell"
    with rasterio.open(tmp_path / "lazy.tif") as a, rasterio.open(tmp_path / "loaded.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs
