"""Bad input files: each gives one clear line naming the file (or is read correctly), nothing half-written."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from sdm.climate import ingest_climate, read_raster
from sdm.grid import make_grid
from sdm.occurrences import DROP_REASONS, ingest_occurrences

GRID = make_grid("EPSG:4326", 1.0, (0.0, 0.0, 10.0, 10.0))
VALID = np.ones((10, 10), dtype=bool)
CSV = ("gbifID\tspecies\tdecimalLongitude\tdecimalLatitude\tbasisOfRecord\n"
       "1\tAus aus\t1.5\t2.5\tHUMAN_OBSERVATION\n"
       "2\tBus bus\t3.5\t4.5\tPRESERVED_SPECIMEN\n"
       "3\tCus cus\t5.5\t6.5\tHUMAN_OBSERVATION\n"
       "4\tAus aus\t7.5\t8.5\tHUMAN_OBSERVATION\n")


def _raster(path, crs="EPSG:4326"):
    profile = dict(driver="GTiff", width=10, height=10, count=1, dtype="float32",
                   transform=from_origin(0, 10, 1, 1))
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.arange(100, dtype="float32").reshape(1, 10, 10))
    return path


def test_an_empty_occurrence_file(tmp_path):
    path = tmp_path / "occurrence.txt"
    path.write_text("")
    with pytest.raises(ValueError, match=r"occurrence\.txt: the occurrence file is empty"):
        ingest_occurrences(path, GRID, VALID)
    header_only = tmp_path / "header.txt"
    header_only.write_text(CSV.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"header\.txt: no rows"):
        ingest_occurrences(header_only, GRID, VALID)


def test_a_latin1_gbif_export_is_read(tmp_path):
    path = tmp_path / "occurrence.txt"
    text = CSV.replace("Cus cus", "Cus müller").replace("Bus bus", "Bus façade")
    path.write_bytes(text.encode("latin-1"))
    occurrences, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["records_read"] == 4
    assert "Bus façade" in set(occurrences["species"]) or "Bus fa\u00e7ade" in set(occurrences["species"])


def test_a_corrupt_or_truncated_geotiff(tmp_path):
    good = _raster(tmp_path / "bio1.tif")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"truncated\.tif: cannot read the raster"):
        read_raster(truncated)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a GeoTIFF at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.tif: cannot read the raster"):
        ingest_climate(garbage, "current")


def test_a_raster_without_crs(tmp_path):
    path = _raster(tmp_path / "nocrs.tif", crs=None)
    with pytest.raises(ValueError, match=r"nocrs\.tif: raster has no CRS"):
        read_raster(path)


def test_a_future_scenario_missing_a_variable(tmp_path):
    path = _raster(tmp_path / "bio1.tif")
    with pytest.raises(ValueError, match=r"scenario 'ssp585'.*missing variable\(s\) \['bio7'\]"):
        ingest_climate(path, "ssp585", variables=["bio7"])


def test_grid_bounds_outside_every_raster(tmp_path):
    path = _raster(tmp_path / "bio1.tif")
    far = make_grid("EPSG:4326", 1.0, (100.0, 50.0, 110.0, 60.0))
    with pytest.raises(ValueError, match=r"scenario 'current'.*does not overlap the grid"):
        ingest_climate(path, "current", far)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(CSV.encode()) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_byte_corruptions_give_a_clear_error_or_an_exact_account(tmp_path, edits):
    data = bytearray(CSV.encode())
    for position, value in edits:
        data[position] = value
    path = tmp_path / "corrupt.txt"
    path.write_bytes(bytes(data))
    try:
        occurrences, rejected, report = ingest_occurrences(path, GRID, VALID)
    except (ValueError, FileNotFoundError) as error:
        assert "corrupt.txt" in str(error).splitlines()[0]  # names the file, first line
        return
    dropped = sum(report["dropped"][reason] for reason in DROP_REASONS)
    assert report["records_kept"] + dropped == report["records_read"]
    assert len(occurrences) == report["records_kept"]
