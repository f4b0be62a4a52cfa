"""Bilinear interpolation between grids of one CRS (sdm.bilinear) against GDAL's warper, which it replaces there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from rasterio.enums import Resampling

from sdm.bilinear import axis_weights, bilinear, shifted, source_span
from sdm.climate import _Layers, _on_grid, read_raster
from sdm.grid import make_grid

ISIMIP = Path(__file__).resolve().parents[2] / "shared/data/isimip_bioclim_global_0p5deg/bioclim_gswp3-w5e5_obsclim_1995.tif"


def _source(crs="EPSG:4326", step=0.5, north_up=True, holes=True) -> xr.DataArray:
    """Two smooth bands on 40 x 60 cells from (-5, 10), an elliptic island (NaN around it) when ``holes``."""
    yy, xx = np.mgrid[0:40, 0:60]
    values = np.stack([np.sin(xx / 7.0) + yy / 10.0, np.cos(yy / 5.0) * 100 + xx]).astype("float32")
    if holes:
        values[:, ((xx - 30) ** 2 / 400 + (yy - 20) ** 2 / 150) >= 1] = np.nan
    y = 10 - step * (np.arange(40) + 0.5)
    if not north_up:
        y, values = y[::-1], values[:, ::-1]
    return xr.DataArray(values, dims=("variable", "y", "x"), coords={
        "variable": ["bio1", "bio12"], "y": y, "x": -5 + step * (np.arange(60) + 0.5)}).rio.write_crs(crs)


def _assert_gdal(source, grid):
    ours = _on_grid(source, grid, []).values
    gdal = source.rio.reproject_match(grid, resampling=Resampling.bilinear).values
    assert ours.dtype == np.float32 and ours.shape == gdal.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(gdal))
    scale = np.nanmax(np.abs(gdal), axis=(1, 2), keepdims=True)
    assert np.nanmax(np.abs(ours - gdal) / scale) < 3e-7  # a float32 rounding or two
    return ours


@pytest.mark.parametrize("resolution, bounds", [
    (1 / 12, (-5, -10, 25, 10)),  # 6 cells per source cell, on the source's extent
    (0.2, (-5.3, -9.7, 24.9, 9.9)),  # 2.5 per cell, the edges off the source's
    (0.1, (-5.97, -11.03, 26.03, 11.03)),  # beyond the source's extent: no data there
    (0.5, (-4.75, -9.75, 24.75, 9.75)),  # the same cell size, shifted by half a cell
], ids=["finer", "finer-offset", "beyond", "shifted"])
def test_bilinear_is_gdals_between_geographic_grids(resolution, bounds):
    ours = _assert_gdal(_source(), make_grid("EPSG:4326", resolution, bounds))
    assert np.isnan(ours).any() and np.isfinite(ours).any()


def test_bilinear_is_gdals_from_a_south_up_source_and_on_a_projected_grid():
    _assert_gdal(_source(north_up=False), make_grid("EPSG:4326", 0.2, (-5.3, -9.7, 24.9, 9.9)))
    projected = _source(crs="EPSG:3035", step=1000.0, holes=False).assign_coords(
        x=lambda a: a["x"] * 1 + 4.0e6, y=lambda a: a["y"] + 3.0e6)
    _assert_gdal(projected, make_grid("EPSG:3035", 300, (3.99e6 + 150, 2.97e6 + 150, 4.05e6 - 150, 3.0e6 - 150)))


def test_edge_cells_and_zero_weights():
    values = np.array([[[1.0, 2.0, np.nan, 8.0]]] * 2, dtype="float32").reshape(1, 2, 4)
    rows = axis_weights(np.array([1.9, 1.5, 1.1]), 2.0, -1.0, 2)  # rows: first-row edge, on a centre, between
    cols = axis_weights(np.array([0.25, 1.0, 1.5, 3.5, 3.9, 4.5]), 0.0, 1.0, 4)
    out = bilinear(values, rows, cols)
    # beside the first cell GDAL takes it at weight 1 and the next at 0; beside the last cell that cell alone; a
    # centre on a source centre takes that cell's value, but the next cell's NaN at weight 0 (GDAL multiplies it
    # in); outside the extent, no data
    np.testing.assert_array_equal(out[0, 0], [1.0, 1.5, np.nan, 8.0, 8.0, np.nan])
    assert np.isnan(bilinear(values, rows, axis_weights(np.array([2.0]), 0.0, 1.0, 4))).all()
    # the second cell's NaN reaches the near edge (weight 0), the first cell's does not reach the far edge
    second_missing = np.array([[[3.0, np.nan, 2.0]] * 2], dtype="float32")
    np.testing.assert_array_equal(bilinear(second_missing, rows, axis_weights(
        np.array([0.25, 2.75]), 0.0, 1.0, 3))[0, 0], [np.nan, 2.0])


@pytest.mark.parametrize("north_up", [True, False])
def test_gdals_no_data_cells_at_the_first_cell_and_on_lined_up_centres(north_up):
    """Random holes, cells beside the source's first row and column, and a crop whose centres line up with the
    source's: the same cells without data as GDAL."""
    source = _source(north_up=north_up, holes=False)
    rng = np.random.default_rng(3)
    source.values[:, rng.random(source.shape[1:]) < 0.2] = np.nan
    _assert_gdal(source, make_grid("EPSG:4326", 0.2, (-5.3, -9.7, 24.9, 9.9)))
    _assert_gdal(source, make_grid("EPSG:4326", 0.5, (-2.0, -5.0, 20.0, 6.0)))


def test_a_window_beyond_the_source_with_coarser_columns(tmp_path):
    """Target columns wider than the source's, past its edge: the window reads only its own source cells."""
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "bio1.tif"
    with rasterio.open(path, "w", driver="GTiff", count=1, height=20, width=20, dtype="float32", crs="EPSG:3035",
                       transform=from_origin(4.0e6, 3.0e6, 1000, 1000)) as dst:
        dst.write(np.arange(400, dtype="float32").reshape(1, 20, 20))
        dst.set_band_description(1, "bio1")
    grid = xr.DataArray(np.zeros((30, 16), "float32"), dims=("y", "x"), coords={
        "y": 3.0e6 - 600 * (np.arange(30) + 0.5), "x": 4.0e6 + 50 + 1600 * (np.arange(16) + 0.5)}).rio.write_crs(
        "EPSG:3035")
    layers = _Layers(path, grid, None, None)
    assert layers.files[0].interpolated == ["bio1"]
    whole = _on_grid(read_raster(path), grid, []).values
    np.testing.assert_array_equal(layers.window(slice(0, 30), slice(0, 16)), whole)
    np.testing.assert_array_equal(layers.window(slice(3, 9), slice(5, 16)), whole[:, 3:9, 5:16])


def test_a_window_reads_only_its_source_cells_and_keeps_the_whole_grids_weights():
    source, grid = _source(), make_grid("EPSG:4326", 1 / 12, (-5, -10, 25, 10))
    whole = _on_grid(source, grid, []).values
    rows, cols = (axis_weights(grid[d].values, *origin, n) for d, origin, n in (
        ("y", (10.0, -0.5), 40), ("x", (-5.0, 0.5), 60)))
    r, c = slice(100, 170), slice(33, 301)
    window_rows, window_cols = (tuple(w[part] for w in axis) for axis, part in ((rows, r), (cols, c)))
    ys, xs = source_span(window_rows), source_span(window_cols)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (13, 46)
    window = bilinear(source.values[:, ys, xs], shifted(window_rows, ys.start), shifted(window_cols, xs.start))
    np.testing.assert_array_equal(window, whole[:, r, c])


@pytest.mark.skipif(not ISIMIP.exists(), reason="real data not found")
def test_the_isimip_climate_on_the_30_arc_second_grid_is_gdals():
    """Windows of the global 30 arc-second grid as the ingest reads them (coasts, the antimeridian), against GDAL
    on the same source cells."""
    grid = make_grid("EPSG:4326", 1 / 120, (-180, -11.25, 180, 0.0))
    layers = _Layers(ISIMIP, grid, ["bio1", "bio12", "bio15"], None)
    (file,) = layers.files
    assert file.interpolated == ["bio1", "bio12", "bio15"]
    lazy = read_raster(ISIMIP, lazy=True).sel(variable=["bio1", "bio12", "bio15"])
    coasts = 0
    for rows, cols in ((slice(0, 300), slice(0, 300)), (slice(200, 500), slice(22400, 22700)),
                       (slice(600, 900), slice(17350, 17650)), (slice(300, 600), slice(36000, 36400))):
        ours = layers.window(rows, cols)
        target = grid.isel(y=rows, x=cols)
        source = lazy.isel(y=slice(170, 205), x=slice(max(0, cols.start // 60 - 3), cols.stop // 60 + 3))
        gdal = source.load().astype("float32").rio.reproject_match(target, resampling=Resampling.bilinear).values
        gdal[:, ~np.isfinite(gdal).all(axis=0)] = np.nan
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(gdal))
        np.testing.assert_allclose(ours, gdal, rtol=3e-7, atol=0)
        coasts += bool(np.isnan(ours).any() and np.isfinite(ours).any())
    assert coasts >= 2 and layers.overlaps
