"""Unit tests of sdm.occurrences: readers, column aliases, cleaning and the accounting of every row read."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdm.grid import make_grid
from sdm.occurrences import DROP_REASONS, cleaned_records, ingest_occurrences

GRID = make_grid("EPSG:4326", 1.0, (0, 0, 10, 10))
VALID = np.ones((10, 10), dtype=bool)
VALID[0, 0] = False  # the cell (9..10 N, 0..1 E) has no climate data


def _write(path: Path, header: list[str], rows: list[list], sep: str = ",", encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


HEADER = ["species", "decimalLatitude", "decimalLongitude"]
ROWS = [  # data row (the file line is one more: the header is line 1): expected fate
    ["Aus aus", "1.5", "2.5"],  # 1: kept (row 8, col 2)
    ["", "1.5", "2.5"],  # 2: missing_species
    ["Aus aus", "", "2.5"],  # 3: missing_coordinates
    ["Aus aus", "abc", "2.5"],  # 4: non_numeric_coordinates
    ["Aus aus", "95", "2.5"],  # 5: coordinates_out_of_range (lat > 90)
    ["Aus aus", "0", "0"],  # 6: zero_zero_coordinates
    ["Aus aus", "50", "60"],  # 7: outside_grid
    ["Aus aus", "9.5", "0.5"],  # 8: nodata_cell
    ["Aus aus", "1.7", "2.2"],  # 9: duplicate_species_cell (same cell as line 1)
    ["Bus bus", "1.5", "2.5"],  # 10: kept (another species in the same cell)
    ["  Aus   aus ", "1.9", "2.9"],  # 11: duplicate after whitespace normalisation
    ["", "", ""],  # 12: missing_species (the first reason that applies)
    ["Bus bus", "nan", "3"],  # 13: non_numeric_coordinates
    ["Bus bus", "inf", "3"],  # 14: non_numeric_coordinates
    ["Bus bus", "5", "-200"],  # 15: coordinates_out_of_range (lon < -180)
    ["Cus cus", "5.5", "5.6"],  # 16: kept
    ["   ", "5.5", "5.5"],  # 17: missing_species (blank name)
]
EXPECTED_REASONS = {  # file line: reason
    3: "missing_species", 4: "missing_coordinates", 5: "non_numeric_coordinates", 6: "coordinates_out_of_range",
    7: "zero_zero_coordinates", 8: "outside_grid", 9: "nodata_cell", 10: "duplicate_species_cell",
    12: "duplicate_species_cell", 13: "missing_species", 14: "non_numeric_coordinates",
    15: "non_numeric_coordinates", 16: "coordinates_out_of_range", 18: "missing_species",
}


@pytest.fixture
def messy_csv(tmp_path):
    return _write(tmp_path / "occ.csv", HEADER, ROWS)


def test_every_drop_reason_is_counted_exactly(messy_csv):
    occurrences, rejected, report = ingest_occurrences(messy_csv, GRID, VALID)
    assert report["records_read"] == len(ROWS)
    assert report["records_kept"] == 3
    assert report["dropped"] == {reason: 0 for reason in DROP_REASONS} | {
        "missing_species": 3,
        "missing_coordinates": 1,
        "non_numeric_coordinates": 3,
        "coordinates_out_of_range": 2,
        "zero_zero_coordinates": 1,
        "outside_grid": 1,
        "nodata_cell": 1,
        "duplicate_species_cell": 2,
    }
    assert list(report["dropped"]) == list(DROP_REASONS)
    assert report["records_kept"] + sum(report["dropped"].values()) == report["records_read"]
    assert report["columns"] == {"species": "species", "longitude": "decimalLongitude", "latitude": "decimalLatitude"}
    assert report["species_read"] == 3 and report["species_kept"] == 3
    assert report["species_lost"] == {}  # a blank name is missing, not a species ""


def test_rejected_rows_have_their_line_and_reason(messy_csv):
    _, rejected, _ = ingest_occurrences(messy_csv, GRID, VALID)
    assert list(rejected.columns) == ["file", "line", "name", "species", "longitude", "latitude", "reason"]
    assert dict(zip(rejected["line"], rejected["reason"])) == EXPECTED_REASONS
    assert rejected["line"].is_monotonic_increasing
    assert rejected.set_index("line").loc[10, "species"] == "Aus aus"
    assert rejected.set_index("line").loc[12, "species"] == "Aus aus"  # whitespace normalised
    assert pd.isna(rejected.set_index("line").loc[18, "species"])


def test_kept_occurrences_one_row_per_species_cell(messy_csv):
    occurrences, _, _ = ingest_occurrences(messy_csv, GRID, VALID)
    assert list(occurrences.columns) == ["species", "longitude", "latitude", "x", "y", "row", "col", "n_records"]
    assert occurrences["species"].tolist() == ["Aus aus", "Bus bus", "Cus cus"]
    assert occurrences["n_records"].tolist() == [3, 1, 1]  # duplicates are summed into n_records
    first = occurrences.iloc[0]
    assert (first["longitude"], first["latitude"]) == (2.5, 1.5)  # the first record's coordinates
    assert (first["row"], first["col"], first["x"], first["y"]) == (8, 2, 2.5, 1.5)
    assert occurrences["row"].dtype == "int32" and occurrences["n_records"].dtype == "int64"
    assert VALID[occurrences["row"], occurrences["col"]].all()


def test_cleaned_records_hold_every_kept_record(messy_csv):
    occurrences, rejected, report = ingest_occurrences(messy_csv, GRID, VALID)
    records = cleaned_records(occurrences, rejected)
    assert list(records.columns) == ["species", "longitude", "latitude"]
    assert len(records) == occurrences["n_records"].sum() == 5
    assert records["species"].value_counts().to_dict() == {"Aus aus": 3, "Bus bus": 1, "Cus cus": 1}
    with pytest.raises(ValueError, match="n_records sums to 5"):
        cleaned_records(occurrences, rejected[rejected["reason"] != "duplicate_species_cell"])


def test_chunked_reading_gives_the_same_result(tmp_path):
    path = _write(tmp_path / "nine.csv", HEADER, ROWS[:9])  # line 9 duplicates line 1, four chunks later
    one = ingest_occurrences(path, GRID, VALID)
    chunked = ingest_occurrences(path, GRID, VALID, chunksize=2)
    pd.testing.assert_frame_equal(one[0], chunked[0])
    pd.testing.assert_frame_equal(one[1], chunked[1])
    assert one[2] == chunked[2]
    assert chunked[2]["records_read"] == 9
    assert chunked[1]["line"].tolist() == list(range(3, 11))
    assert chunked[2]["dropped"]["duplicate_species_cell"] == 1
    assert chunked[0]["n_records"].tolist() == [2]


@pytest.mark.parametrize(
    "header",
    [
        ["species", "decimallongitude", "decimallatitude"],
        ["name", "lon", "lat"],
        ["taxon", "x", "y"],
        ["Species", "Longitude", "Latitude"],
        ["scientificName", "LNG", "LAT"],
    ],
)
def test_column_aliases(tmp_path, header):
    path = _write(tmp_path / "a.csv", header, [["Aus aus", "3.5", "4.5"], ["Bus bus", "6.5", "7.5"]])
    occurrences, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["columns"] == dict(zip(["species", "longitude", "latitude"], header))
    assert occurrences["longitude"].tolist() == [3.5, 6.5] and occurrences["latitude"].tolist() == [4.5, 7.5]


def test_gbif_tab_separated_file_named_csv(tmp_path):
    header = ["gbifID", "scientificName", "locality", "species", "decimalLatitude", "decimalLongitude"]
    rows = [
        ["1", "Aus aus L., 1758", '"Big" rock, 3 km N', "Aus aus", "1.5", "2.5"],
        ["2", "Bus bus (Smith, 1900)", '"old mill', "Bus bus", "2.5", "3.5"],  # an unmatched quote: plain text
        ["3", "Cus cus", "plain; dry", "Cus cus", "3.5", "4.5"],
    ]
    path = tmp_path / "0012345-240101.csv"
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    occurrences, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["columns"]["species"] == "species"  # preferred over scientificName (which carries authors)
    assert report["records_read"] == 3 and report["records_kept"] == 3
    assert occurrences["species"].tolist() == ["Aus aus", "Bus bus", "Cus cus"]


def test_utf8_bom_header(tmp_path):
    path = _write(tmp_path / "bom.csv", HEADER, [["Aus aus", "1.5", "2.5"]], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    occurrences, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["columns"]["species"] == "species"
    assert occurrences["species"].tolist() == ["Aus aus"]


def test_parquet_input(tmp_path):
    path = tmp_path / "occ.parquet"
    pd.DataFrame({
        "species": ["Aus aus", "Aus aus", None, "Bus bus"],
        "decimalLongitude": [2.5, 2.6, 3.0, np.nan],
        "decimalLatitude": [1.5, 1.6, 3.0, 4.0],
    }).to_parquet(path)
    occurrences, rejected, report = ingest_occurrences(path, GRID, VALID)
    assert report["records_read"] == 4 and report["records_kept"] == 1
    assert occurrences["n_records"].tolist() == [2]
    assert dict(zip(rejected["line"], rejected["reason"])) == {
        2: "duplicate_species_cell", 3: "missing_species", 4: "missing_coordinates"
    }


def test_columns_override(tmp_path):
    path = _write(tmp_path / "o.csv", ["binomial", "east", "north", "lon"], [["Aus aus", "3.5", "4.5", "99"]])
    occurrences, _, report = ingest_occurrences(
        path, GRID, VALID, columns={"species": "binomial", "longitude": "east", "latitude": "north"}
    )
    assert report["columns"] == {"species": "binomial", "longitude": "east", "latitude": "north"}
    assert occurrences[["longitude", "latitude"]].values.tolist() == [[3.5, 4.5]]


def test_missing_column_raises_naming_file_and_column(tmp_path):
    path = _write(tmp_path / "nolat.csv", ["species", "lon", "elevation"], [["Aus aus", "1", "2"]])
    with pytest.raises(ValueError, match=r"nolat\.csv.*latitude"):
        ingest_occurrences(path, GRID, VALID)
    path = _write(tmp_path / "o.csv", ["species", "lon", "lat"], [["Aus aus", "1", "2"]])
    with pytest.raises(ValueError, match=r"o\.csv.*'northing'"):
        ingest_occurrences(path, GRID, VALID, columns={"latitude": "northing"})


def test_empty_and_header_only_files_raise_naming_the_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv"):
        ingest_occurrences(empty, GRID, VALID)
    header_only = _write(tmp_path / "header_only.csv", HEADER, [])
    with pytest.raises(ValueError, match=r"header_only\.csv"):
        ingest_occurrences(header_only, GRID, VALID)
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        ingest_occurrences(tmp_path / "absent.csv", GRID, VALID)


def test_nothing_kept_raises_with_the_drops(tmp_path):
    path = _write(tmp_path / "bad.csv", HEADER, [["Aus aus", "0", "0"], ["", "1", "1"]])
    with pytest.raises(ValueError, match=r"bad\.csv: no record left.*zero_zero_coordinates\": 1"):
        ingest_occurrences(path, GRID, VALID)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1, max_value=11).map(str),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "0", "NA", "1,5", "0x10", "5.5 "]),
    st.text(max_size=6),
)
SPECIES = st.one_of(st.sampled_from(["Aus aus", "Bus bus", " Aus  aus", "", "  "]), st.text(max_size=8))
ROW = st.tuples(SPECIES, NUMBERS, NUMBERS).map(list)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=12), chunksize=st.integers(1, 5))
def test_accounting_always_adds_up(rows, chunksize):
    rows = [[s.replace("\x00", ""), lon.replace("\x00", ""), lat.replace("\x00", "")] for s, lon, lat in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "random.csv", ["species", "longitude", "latitude"], rows)
        try:
            occurrences, rejected, report = ingest_occurrences(path, GRID, VALID, chunksize=chunksize)
        except ValueError as error:
            assert "no record left" in str(error)
            return
    assert report["records_read"] == len(rows)
    assert report["records_kept"] + sum(report["dropped"].values()) == report["records_read"]
    assert len(rejected) == sum(report["dropped"].values())
    assert sorted(rejected["line"]) == sorted(set(rejected["line"]))  # one reason per line
    assert int(occurrences["n_records"].sum()) == report["records_kept"] + report["dropped"]["duplicate_species_cell"]
    assert not occurrences.duplicated(["species", "row", "col"]).any()
    assert np.isfinite(occurrences[["longitude", "latitude"]].to_numpy()).all()
    assert VALID[occurrences["row"], occurrences["col"]].all()
    assert (occurrences["species"].str.strip() != "").all()
    assert all(name.strip() for name in report["species_lost"])
