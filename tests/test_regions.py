"""Unit tests of sdm.regions.region_summary on hand-made layers: categorical layers get a mode, not a mean."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from shapely.geometry import box

from sdm.indicators import write_layer
from sdm.regions import region_summary


def _layer(values) -> xr.DataArray:
    """A 1 km equal-area (EPSG:3035) layer, north up."""
    values = np.asarray(values, dtype="float32")
    ny, nx = values.shape
    return xr.DataArray(values, dims=("y", "x"), coords={"y": 3_000_000 - 1000 * np.arange(ny) - 500.0,
                                                           "x": 4_000_000 + 1000 * np.arange(nx) + 500.0}
                        ).rio.write_crs("EPSG:3035")


def test_a_categorical_layer_is_summarised_by_the_category_of_the_largest_area(tmp_path):
    # one region over 4 x 2 cells: 5 cells LC (0), 2 CR (4), 1 no data; the mean code 1.14 (NT) means nothing
    codes = [[0, 0], [0, 0], [0, 4], [4, np.nan]]
    richness = [[1, 2], [3, 4], [5, 6], [7, np.nan]]
    paths = {name: write_layer(_layer(values), tmp_path / f"{name}.tif", name)
             for name, values in (("most_threatened", codes), ("richness", richness))}
    region = gpd.GeoDataFrame({"region": ["R"]}, geometry=[box(4_000_000, 2_996_000, 4_002_000, 3_000_000)],
                              crs="EPSG:3035")
    table = region_summary({name: {"current_none": path} for name, path in paths.items()}, region)
    row = table.set_index("indicator")
    assert row.loc["most_threatened", "mode"] == 0.0  # LC covers 5 km2, CR 2 km2
    assert np.isnan(row.loc["most_threatened", "mean"])
    assert row.loc["most_threatened", "max"] == 4.0 and row.loc["most_threatened", "area_km2"] == pytest.approx(7.0)
    assert row.loc["richness", "mean"] == pytest.approx(28 / 7) and np.isnan(row.loc["richness", "mode"])


def test_a_tie_in_area_goes_to_the_higher_category(tmp_path):
    path = write_layer(_layer([[1, 3], [np.nan, np.nan]]), tmp_path / "most_threatened.tif", "most_threatened")
    regions = gpd.GeoDataFrame({"region": ["Both", "East", "Outside"]}, crs="EPSG:3035", geometry=[
        box(4_000_000, 2_998_000, 4_002_000, 3_000_000), box(4_001_000, 2_998_000, 4_002_000, 3_000_000),
        box(4_010_000, 2_998_000, 4_011_000, 3_000_000)])
    row = region_summary({"most_threatened": {"r": path}}, regions).set_index("region")
    assert row.loc["Both", "mode"] == 3.0 and row.loc["East", "mode"] == 3.0
    assert np.isnan(row.loc["Outside", "mode"])
