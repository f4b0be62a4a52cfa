"""Unit tests of sdm.climate: variable names, raster readers, reprojection onto the grid, Zarr cubes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from sdm.climate import (
    check_variables,
    harmonise_name,
    ingest_climate,
    open_cube,
    read_climate,
    read_raster,
    to_grid,
    valid_mask,
    write_climate_cube,
    write_cube,
)
from sdm.grid import make_grid

ORIGIN = (4_000_000.0, 3_000_000.0)  # top-left corner, EPSG:3035 metres


def _geotiff(path: Path, data: np.ndarray, names: list[str] | None = None, crs: str | None = "EPSG:3035",
             transform=None, nodata=np.nan, **profile) -> Path:
    """Write (band, y, x) ``data`` as a GeoTIFF, with band descriptions when ``names`` are given."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    kwargs = dict(driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                  dtype=str(data.dtype), transform=transform or from_origin(*ORIGIN, 1000, 1000), nodata=nodata)
    if crs is not None:
        kwargs["crs"] = crs
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return path


def _layers(n: int = 3, ny: int = 4, nx: int = 6) -> np.ndarray:
    return np.arange(n * ny * nx, dtype="float32").reshape(n, ny, nx)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bio_1", "bio1"),
        ("bio01", "bio1"),
        ("BIO1", "bio1"),
        ("wc2.1_10m_bio_1.tif", "bio1"),
        ("wc2.1_30s_bio_12.tif", "bio12"),
        ("bio19", "bio19"),
        ("bio_10", "bio10"),
        ("bioclim_05", "bio5"),
        ("CHELSA_bio1_1981-2010_V.2.1.tif", "bio1"),
        ("CHELSA_bio12_2041-2070_gfdl-esm4_ssp585_V.2.1.tif", "bio12"),
        ("/data/climate/wc2.1_10m_bio_7.tif", "bio7"),
        ("Soil Type", "soil_type"),
        ("elevation.tif", "elevation"),
        ("wc2.1_10m_bioc_ACCESS-CM2_ssp126_2041-2060.tif", "wc2_1_10m_bioc_access_cm2_ssp126_2041_2060"),
    ],
)
def test_harmonise_name(name, expected):
    assert harmonise_name(name) == expected


def test_multiband_geotiff_band_descriptions(tmp_path):
    path = _geotiff(tmp_path / "current.tif", _layers(), names=["bio_1", "BIO12", "Soil Type"])
    cube = read_climate(path)
    assert cube.dims == ("variable", "y", "x")
    assert cube["variable"].values.tolist() == ["bio1", "bio12", "soil_type"]
    assert cube.dtype == np.float32 and cube.rio.crs == "EPSG:3035"
    np.testing.assert_array_equal(cube.sel(variable="bio12").values, _layers()[1])


def test_multiband_without_descriptions_get_numbered_names(tmp_path):
    cube = read_climate(_geotiff(tmp_path / "stack.tif", _layers(2)))
    assert cube["variable"].values.tolist() == ["stack_band1", "stack_band2"]


def test_directory_of_single_band_files_named_from_file_names(tmp_path):
    folder = tmp_path / "wc"
    folder.mkdir()
    for i in (12, 1):
        _geotiff(folder / f"wc2.1_10m_bio_{i}.tif", np.full((4, 6), i, "float32"))
    (folder / "readme.txt").write_text("not a raster")
    cube = read_climate(folder)
    assert sorted(cube["variable"].values.tolist()) == ["bio1", "bio12"]
    assert float(cube.sel(variable="bio12").mean()) == 12


def test_list_of_files_and_variable_subset_order(tmp_path):
    files = [_geotiff(tmp_path / f"bio_{i}.tif", np.full((4, 6), i, "float32")) for i in (1, 5, 12)]
    cube = read_climate([str(f) for f in files], variables=["BIO12", "bio_1"])
    assert cube["variable"].values.tolist() == ["bio12", "bio1"]
    assert cube.sel(variable="bio1").values.max() == 1


def test_missing_variable_names_the_variable_and_the_source(tmp_path):
    path = _geotiff(tmp_path / "current.tif", _layers(2), names=["bio1", "bio12"])
    with pytest.raises(ValueError, match=r"current\.tif.*bio7"):
        read_climate(path, variables=["bio1", "bio7"])
    with pytest.raises(ValueError, match=r"scenario 'ssp585'.*current\.tif.*bio7"):
        ingest_climate(path, "ssp585", variables=["bio7"])


def test_duplicate_names_after_harmonising_raise(tmp_path):
    path = _geotiff(tmp_path / "dup.tif", _layers(2), names=["bio_1", "BIO01"])
    with pytest.raises(ValueError, match="bio1"):
        read_climate(path)


def test_raster_without_crs_raises_naming_the_file(tmp_path):
    path = _geotiff(tmp_path / "no_crs.tif", _layers(1), crs=None)
    with pytest.raises(ValueError, match=r"no_crs\.tif.*no CRS"):
        read_climate(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.tif"):
        read_climate([tmp_path / "absent.tif"])


def test_scale_and_offset_are_applied(tmp_path):
    # CHELSA stores temperatures as integers in 0.1 K: value * 0.1 - 273.15 is degrees C
    path = tmp_path / "CHELSA_bio1_1981-2010_V.2.1.tif"
    with rasterio.open(path, "w", driver="GTiff", count=1, height=2, width=2, dtype="uint16", crs="EPSG:4326",
                       transform=from_origin(0, 2, 1, 1), nodata=65535) as dst:
        dst.write(np.array([[[2931, 2981], [3031, 65535]]], dtype="uint16"))
        dst.scales, dst.offsets = (0.1,), (-273.15,)
    cube = read_climate(path)
    assert cube["variable"].values.tolist() == ["bio1"]
    np.testing.assert_allclose(cube.values[0, 0], [19.95, 24.95], atol=1e-3)
    assert np.isnan(cube.values[0, 1, 1])  # no-data stays no-data


def test_ingest_onto_a_coarser_geographic_grid(tmp_path):
    # 0.5 degree source with a north-south gradient; the grid is 1 degree
    lat = 9.75 - 0.5 * np.arange(20)
    data = np.stack([np.repeat(lat[:, None], 20, axis=1), np.full((20, 20), 100.0)]).astype("float32")
    path = _geotiff(tmp_path / "current.tif", data, names=["bio1", "bio12"], crs="EPSG:4326",
                    transform=from_origin(0, 10, 0.5, 0.5))
    grid = make_grid("EPSG:4326", 1.0, (2, 2, 8, 8))
    cube = ingest_climate(path, "current", grid)
    assert cube.name == "climate" and cube.dims == ("variable", "y", "x")
    assert cube.shape == (2, *grid.shape) and cube.rio.crs == grid.rio.crs
    np.testing.assert_array_equal(cube["x"], grid["x"])
    np.testing.assert_array_equal(cube["y"], grid["y"])
    assert cube.rio.transform(recalc=True) == grid.rio.transform(recalc=True)
    # the gradient survives, oriented north-up: bio1 ~ latitude of the cell centre
    np.testing.assert_allclose(cube.sel(variable="bio1").values[:, 0], grid["y"].values, atol=0.3)
    np.testing.assert_allclose(cube.sel(variable="bio12").values, 100.0)


def test_ingest_onto_a_projected_grid_from_geographic_source(tmp_path):
    data = np.ones((2, 40, 40), dtype="float32")
    path = _geotiff(tmp_path / "current.tif", data, names=["bio1", "bio12"], crs="EPSG:4326",
                    transform=from_origin(5, 52, 0.1, 0.1))
    grid = make_grid("EPSG:3035", 5000, (4_050_000, 2_950_000, 4_100_000, 3_000_000))
    cube = ingest_climate(path, "current", grid)
    assert cube.shape == (2, 10, 10) and cube.rio.crs == "EPSG:3035"
    assert np.isfinite(cube.values).any()


def test_a_raster_off_the_grid_raises_with_the_scenario(tmp_path):
    path = _geotiff(tmp_path / "elsewhere.tif", _layers(1), names=["bio1"], crs="EPSG:4326",
                    transform=from_origin(100, 50, 1, 1))
    grid = make_grid("EPSG:4326", 1.0, (0, 0, 10, 10))
    with pytest.raises(ValueError, match=r"scenario 'ssp126_2070'.*does not overlap"):
        ingest_climate(path, "ssp126_2070", grid)


def test_nan_in_one_variable_is_nan_in_all(tmp_path):
    data = _layers(3)
    data[0, 1, 2] = np.nan
    data[2, 3, 5] = np.nan
    path = _geotiff(tmp_path / "current.tif", data, names=["bio1", "bio12", "bio15"])
    cube = ingest_climate(path, "current")  # onto the source's own grid: no resampling
    np.testing.assert_array_equal(cube.sel(variable="bio12").values[[0, 2], [0, 4]], data[1][[0, 2], [0, 4]])
    for y, x in ((1, 2), (3, 5)):
        assert np.isnan(cube.values[:, y, x]).all()
    mask = valid_mask(cube)
    assert mask.dtype == bool and mask.shape == (4, 6) and mask.sum() == 22


def test_nodata_value_becomes_nan(tmp_path):
    data = np.full((2, 4, 6), 5, dtype="int16")
    data[1, 0, 0] = -9999
    path = _geotiff(tmp_path / "current.tif", data, names=["bio1", "bio12"], nodata=-9999)
    cube = ingest_climate(path, "current")
    assert cube.dtype == np.float32
    assert np.isnan(cube.values[:, 0, 0]).all() and np.isfinite(cube.values[:, 1:, :]).all()


def test_write_open_cube_round_trip(tmp_path):
    grid = make_grid("EPSG:3035", 1000, (ORIGIN[0], ORIGIN[1] - 40_000, ORIGIN[0] + 40_000, ORIGIN[1]))
    data = np.random.default_rng(0).normal(size=(2, 40, 40)).astype("float32")
    data[:, 3, 4] = np.nan
    cube = xr.DataArray(data, dims=("variable", "y", "x"),
                        coords={"variable": ["bio1", "bio12"], "y": grid["y"], "x": grid["x"]})
    cube = to_grid(cube.rio.write_crs("EPSG:3035"), grid)
    write_cube(cube, tmp_path / "current.zarr", chunk=16)
    back = open_cube(tmp_path / "current.zarr")
    assert back.dims == ("variable", "y", "x")
    assert back.rio.crs == "EPSG:3035"
    assert back["variable"].values.tolist() == ["bio1", "bio12"]
    assert back.chunks == ((2,), (16, 16, 8), (16, 16, 8))
    np.testing.assert_array_equal(back.values, cube.values)
    np.testing.assert_array_equal(back["y"], grid["y"])
    assert back.rio.transform(recalc=True) == grid.rio.transform(recalc=True)
    # rewriting the same store replaces it
    write_cube(cube * 2, tmp_path / "current.zarr", chunk=16)
    np.testing.assert_allclose(open_cube(tmp_path / "current.zarr").values, cube.values * 2)
    with pytest.raises(FileNotFoundError):
        open_cube(tmp_path / "absent.zarr")


def test_check_variables_names_scenario_and_variable():
    cube = xr.DataArray(np.zeros((2, 1, 1)), dims=("variable", "y", "x"), coords={"variable": ["bio1", "bio12"]})
    check_variables(cube, ["bio12", "bio1"], "ssp585_2070")
    with pytest.raises(ValueError, match=r"scenario 'ssp585_2070'.*bio15"):
        check_variables(cube, ["bio1", "bio15"], "ssp585_2070")


def test_netcdf_on_lat_lon(tmp_path):
    lat = np.arange(-9.5, 10.0, 1.0)  # ascending, as in most NetCDF climatologies
    lon = np.arange(-19.5, 20.0, 1.0)
    bio1 = np.repeat(lat[:, None], lon.size, axis=1).astype("float32")
    ds = xr.Dataset(
        {"bio_1": (("lat", "lon"), bio1), "BIO12": (("time", "lat", "lon"), 10 * bio1[None])},
        coords={"lat": lat, "lon": lon, "time": [0]},
    )
    path = tmp_path / "climatology.nc"
    ds.to_netcdf(path)
    cube = read_climate(path)
    assert cube.dims == ("variable", "y", "x")
    assert cube["variable"].values.tolist() == ["bio1", "bio12"]
    assert cube.rio.crs == "EPSG:4326"
    assert cube.shape == (2, 20, 40)
    # onto a north-up grid: the first row is the northernmost
    grid = make_grid("EPSG:4326", 1.0, (-10, -10, 10, 10))
    on_grid = ingest_climate(path, "current", grid)
    np.testing.assert_allclose(on_grid.sel(variable="bio1").values[:, 0], grid["y"].values, atol=1e-5)
    np.testing.assert_allclose(on_grid.sel(variable="bio12").values[0, 0], 95.0, atol=1e-4)


def test_worldclim_cmip6_stack_without_band_names_reads_as_bio1_to_bio19(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "wc2.1_10m_bioc_MIROC6_ssp585_2081-2100.tif"
    data = np.arange(19 * 4 * 5, dtype="float32").reshape(19, 4, 5)
    with rasterio.open(path, "w", driver="GTiff", width=5, height=4, count=19, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(-50, -20, 0.5, 0.5)) as dst:
        dst.write(data)
    cube = read_climate(path)
    assert list(cube["variable"].values) == [f"bio{i}" for i in range(1, 20)]
    np.testing.assert_array_equal(cube.sel(variable="bio2").values, data[1])


def test_to_grid_leaves_the_callers_array_alone_unless_told():
    import rioxarray  # noqa: F401

    from sdm.climate import to_grid

    data = np.ones((2, 4, 5), dtype="float32")
    data[0, 1, 1] = np.nan
    cube = xr.DataArray(data.copy(), dims=("variable", "y", "x"),
                        coords={"variable": ["bio1", "bio12"], "y": [3.5, 2.5, 1.5, 0.5],
                                "x": [0.5, 1.5, 2.5, 3.5, 4.5]}).rio.write_crs("EPSG:4326")
    grid = cube.isel(variable=0, drop=True)
    out = to_grid(cube, grid)
    assert np.isnan(out.values[1, 1, 1]) and out.values.dtype == np.float32  # masked where any variable is missing
    assert cube.values[1, 1, 1] == 1  # the caller's array untouched
    in_place = to_grid(cube, grid, copy=False)
    assert np.isnan(cube.values[1, 1, 1]) and np.shares_memory(in_place.values, cube.values)


def _classes_and_temperature(tmp_path):
    """A 1 km land-cover layer (uint8 classes) and a continuous layer on the same 4 x 6 km source grid."""
    classes = np.array([[1, 1, 2, 2, 3, 3],
                        [1, 7, 2, 2, 3, 9],
                        [5, 5, 5, 4, 4, 4],
                        [5, 5, 6, 4, 4, 4]], dtype="uint8")
    cover = _geotiff(tmp_path / "landcover.tif", classes, ["landcover"], nodata=0)
    temperature = _geotiff(tmp_path / "bio1.tif", _layers(1), ["bio1"])
    return classes, cover, temperature


def test_categorical_layer_takes_the_most_common_class_onto_a_coarser_grid(tmp_path):
    classes, cover, temperature = _classes_and_temperature(tmp_path)
    grid = make_grid("EPSG:3035", 2000, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    cube = read_climate([temperature, cover], grid=grid, categorical=["landcover"])
    # each 2 x 2 km cell: the class of 3 of its 4 source cells (never an average such as 2.75)
    np.testing.assert_array_equal(cube.sel(variable="landcover").values, [[1, 2, 3], [5, 4, 4]])
    # the continuous layer is averaged over the 4 source cells
    source = _layers(1)[0]
    expected = source.reshape(2, 2, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(cube.sel(variable="bio1").values, expected)


def test_averaging_onto_a_coarser_grid_leaves_no_data_out_of_the_mean(tmp_path):
    # a coastal 2 x 2 km cell: one of its four 1 km source cells is sea (no data); the cell is the mean of the other
    # three, not no data (GDAL counted the NaN as a value until the source declared it as its no-data)
    layers = _layers(1)
    layers[0, 0, 0] = np.nan
    grid = make_grid("EPSG:3035", 2000, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    cube = read_climate(_geotiff(tmp_path / "bio1.tif", layers, ["bio1"]), grid=grid)
    values = cube.sel(variable="bio1").values
    np.testing.assert_allclose(values[0, 0], np.nanmean(layers[0, :2, :2]))
    np.testing.assert_allclose(values[1, 2], layers[0, 2:, 4:].mean())


def test_the_resampling_method_compares_cells_in_the_same_crs_at_any_latitude():
    from rasterio.enums import Resampling

    from sdm.climate import resampling_for

    # a global 0.5-degree source and a 0.7-degree grid in the far north: the grid is the coarser (measured each at
    # its own centre latitude, the northern cells looked narrower than the equator's)
    source = make_grid("EPSG:4326", 0.5, (-180, -90, 180, 90))
    north = make_grid("EPSG:4326", 0.7, (0, 55, 14, 70))
    assert resampling_for(source, north, categorical=False) == Resampling.average
    assert resampling_for(source, north, categorical=True) == Resampling.mode


def test_categorical_layer_takes_the_nearest_class_onto_a_finer_grid(tmp_path):
    classes, cover, _ = _classes_and_temperature(tmp_path)
    grid = make_grid("EPSG:3035", 500, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    cube = read_climate(cover, grid=grid, categorical=["landcover"])
    values = cube.sel(variable="landcover").values
    assert set(np.unique(values)) <= set(np.unique(classes).tolist())  # only classes that exist
    np.testing.assert_array_equal(values[::2, ::2], classes)


def test_an_integer_land_cover_band_is_categorical_without_the_config(tmp_path):
    _, cover, _ = _classes_and_temperature(tmp_path)
    grid = make_grid("EPSG:3035", 2000, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    cube = read_climate(cover, grid=grid)
    np.testing.assert_array_equal(cube.sel(variable="landcover").values, [[1, 2, 3], [5, 4, 4]])


def test_continuous_layer_is_bilinear_onto_a_finer_grid(tmp_path):
    from rasterio.enums import Resampling

    from sdm.climate import read_raster, resampling_for

    source = read_raster(_geotiff(tmp_path / "bio1.tif", _layers(1), ["bio1"]))
    fine = make_grid("EPSG:3035", 500, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    coarse = make_grid("EPSG:3035", 2000, (ORIGIN[0], ORIGIN[1] - 4000, ORIGIN[0] + 6000, ORIGIN[1]))
    assert resampling_for(source, fine, categorical=False) == Resampling.bilinear
    assert resampling_for(source, coarse, categorical=False) == Resampling.average
    assert resampling_for(source, coarse, categorical=True) == Resampling.mode
    assert resampling_for(source, fine, categorical=True) == Resampling.nearest
    assert resampling_for(source, source, categorical=False) == Resampling.bilinear


def test_a_netcdf_with_latitudes_ascending_gives_a_north_up_grid(tmp_path):
    lat, lon = np.arange(-4.5, 5, 1.0), np.arange(0.5, 10, 1.0)
    values = np.broadcast_to(lat[:, None], (10, 10)).astype("float32")  # each cell holds its latitude
    xr.Dataset({"bio1": (("lat", "lon"), values)}, coords={"lat": lat, "lon": lon}).to_netcdf(tmp_path / "asc.nc")
    cube = read_climate(tmp_path / "asc.nc")
    transform = cube.rio.transform()
    assert transform.e == -1.0 and transform.f == 5.0  # north-up: the first row is the northernmost
    assert cube.sel(variable="bio1").values[0, 0] == 4.5 and cube.sel(variable="bio1").values[-1, 0] == -4.5


def _uint16_tif(path: Path, nodata=None) -> Path:
    values = np.full((4, 4), 2800, dtype="uint16")
    values[0, :] = 0  # the cropped edge: 0 where the source had no data, declared nowhere
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint16", crs="EPSG:4326",
                       transform=from_origin(0, 4, 1, 1), nodata=nodata) as dst:
        dst.write(values, 1)
        dst.set_band_description(1, "bio1")
    return path


def test_climate_nodata_masks_a_value_in_files_that_declare_none(tmp_path):
    plain = _uint16_tif(tmp_path / "bio_1_crop.tif")
    assert np.isnan(read_climate(plain).values).sum() == 0  # without climate.nodata a 0 is a value
    masked = read_climate(plain, nodata=0).sel(variable="bio1").values
    assert np.isnan(masked[0]).all() and (masked[1:] == 2800).all()
    stored = write_climate_cube(plain, "current", tmp_path / "cube.zarr", nodata=0, chunk=2)  # window by window
    np.testing.assert_array_equal(stored.sel(variable="bio1").values, masked)
    declared = _uint16_tif(tmp_path / "declared.tif", nodata=65535)  # the file's own no-data value wins
    assert (read_climate(declared, nodata=0).sel(variable="bio1").values[0] == 0).all()


def test_the_cube_lists_its_class_layers(tmp_path):
    path = tmp_path / "layers.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=2, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(0, 4, 1, 1)) as dst:
        dst.write(np.ones((2, 4, 4), dtype="uint8"))
        dst.descriptions = ("landcover", "zone_code")  # integer; "landcover" names classes
    stored = write_climate_cube(path, "current", tmp_path / "cube.zarr", categorical=["zone_code"])
    assert open_cube(tmp_path / "cube.zarr").attrs["categorical_variables"] == ["landcover", "zone_code"]
    assert stored.attrs["categorical_variables"] == ["landcover", "zone_code"]
    assert read_climate(path, categorical=[]).attrs["categorical_variables"] == ["landcover"]


def test_climate_nodata_in_a_netcdf_without_a_fill_value_and_a_stored_transform_after_the_flip(tmp_path):
    lat, lon = np.arange(10.5, 20, 1.0), np.arange(0.5, 5, 1.0)  # latitudes ascending
    values = np.full((10, 5), 3.0, dtype="float32")
    values[0] = 0.0  # the southern row: 0 where the source had no data, declared nowhere
    da = xr.DataArray(values, dims=("y", "x"), coords={"y": lat, "x": lon}, name="bio1").rio.write_crs("EPSG:4326")
    da.rio.write_transform(da.rio.transform(), inplace=True)  # a GeoTransform stored in spatial_ref, as rioxarray does
    da.to_dataset().to_netcdf(tmp_path / "asc.nc", encoding={"bio1": {"_FillValue": None}})
    raster = read_raster(tmp_path / "asc.nc", nodata=0)
    assert raster.rio.bounds() == (0.0, 10.0, 5.0, 20.0) and raster.rio.transform().e == -1.0
    assert np.isnan(raster.values[0, -1]).all() and (raster.values[0, :-1] == 3.0).all()
