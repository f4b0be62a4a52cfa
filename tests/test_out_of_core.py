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
    # GDAL's bilinear weights may round differently in the last bit when the window is not the whole grid
    np.testing.assert_allclose(windowed.values, memory.values, rtol=0, atol=2e-6)
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
