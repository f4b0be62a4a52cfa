"""Occurrence files as users download them: GBIF Darwin Core archives and simple downloads, old encodings,
several files at once, canonical names, and hostile rows that must all be accounted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdm.grid import make_grid
from sdm.names import canonical_name, canonical_names
from sdm.occurrences import DROP_REASONS, ingest_occurrences

GRID = make_grid("EPSG:4326", 1.0, (0, 0, 10, 10))
VALID = np.ones((10, 10), dtype=bool)

DWC_HEADER = ["gbifID", "occurrenceID", "basisOfRecord", "occurrenceStatus", "scientificName", "species",
              "decimalLatitude", "decimalLongitude", "coordinateUncertaintyInMeters", "year", "locality",
              "issue"]
DWC_ROWS = [  # data row: expected fate
    ["1", "a", "HUMAN_OBSERVATION", "PRESENT", "Orchis mascula (L.) L.", "Orchis mascula", "1.5", "2.5", "30",
     "2019", "near the mill", ""],  # 1 kept
    ["2", "b", "PRESERVED_SPECIMEN", "PRESENT", "Orchis mascula subsp. speciosa (Mutel) Hegi", "",
     "3.5", "2.5", "", "1950", '"old" quarry', "COUNTRY_COORDINATE_MISMATCH"],  # 2 kept (species from scientificName)
    ["3", "c", "HUMAN_OBSERVATION", "ABSENT", "Orchis mascula (L.) L.", "Orchis mascula", "4.5", "4.5", "10",
     "2020", "", ""],  # 3 absent_record
    ["4", "d", "FOSSIL_SPECIMEN", "PRESENT", "Orchis mascula (L.) L.", "Orchis mascula", "5.5", "4.5", "10",
     "1900", "", ""],  # 4 excluded_basis_of_record
    ["5", "e", "LIVING_SPECIMEN", "PRESENT", "Ophrys apifera Huds.", "Ophrys apifera", "5.5", "6.5", "10",
     "2001", "botanic garden", ""],  # 5 excluded_basis_of_record
    ["6", "f", "HUMAN_OBSERVATION", "PRESENT", "Ophrys apifera Huds.", "Ophrys apifera", "6.5", "7.5", "25000",
     "2001", "", ""],  # 6 uncertainty_too_large
    ["7", "g", "HUMAN_OBSERVATION", "PRESENT", "Ophrys L.", "", "6.5", "7.5", "5", "2001", "", ""],  # 7 not species
    ["8", "h", "HUMAN_OBSERVATION", "PRESENT", "Ophrys apifera Huds.", "Ophrys apifera", "3.3", "3.3", "5", "2001",
     "", ""],  # 8 equal_longitude_latitude
    ["9", "i", "HUMAN_OBSERVATION", "present", "Ophrys apifera Huds.", "Ophrys apifera", "8.5", "1.5", "5",
     "2001", "Sète", ""],  # 9 kept (status case-insensitive; UTF-8 locality)
]


def write_tsv(path, header, rows, encoding="utf-8"):
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def test_dwc_occurrence_txt_is_cleaned_by_darwin_core_fields(tmp_path):
    path = write_tsv(tmp_path / "occurrence.txt", DWC_HEADER, DWC_ROWS)
    occurrences, rejected, report = ingest_occurrences(path, GRID, VALID)
    assert report["records_read"] == 9
    assert report["records_kept"] == 3
    assert {k: v for k, v in report["dropped"].items() if v} == {
        "absent_record": 1, "excluded_basis_of_record": 2, "uncertainty_too_large": 1,
        "not_identified_to_species": 1, "equal_longitude_latitude": 1,
    }
    assert sorted(occurrences["species"]) == ["Ophrys apifera", "Orchis mascula", "Orchis mascula"]
    assert report["columns"]["basis_of_record"] == "basisOfRecord"
    assert report["columns"]["scientific_name"] == "scientificName"
    assert rejected.set_index("line").loc[8, "name"] == "Ophrys L."  # file line 8 (the header is line 1)


def test_gbif_simple_download_named_csv_is_tab_separated(tmp_path):
    path = write_tsv(tmp_path / "0012345-240101.csv", DWC_HEADER, DWC_ROWS)
    _, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["records_kept"] == 3


def test_cleaning_rules_can_be_switched_off(tmp_path):
    path = write_tsv(tmp_path / "occurrence.txt", DWC_HEADER, DWC_ROWS)
    _, _, report = ingest_occurrences(path, GRID, VALID, cleaning={
        "absent": False, "basis_of_record_excluded": [], "max_uncertainty_m": None, "equal_lon_lat": False})
    assert report["records_kept"] == 8  # only the genus-only name is still dropped
    _, _, report = ingest_occurrences(path, GRID, VALID, cleaning={"min_year": 1960})
    assert report["dropped"]["year_out_of_range"] == 1  # 1950 (the 1900 fossil is dropped earlier)


def test_malformed_rows_are_counted_and_a_flood_of_them_stops_the_run(tmp_path):
    rows = [["Aus aus", "1.5", "2.5"], ["Bus bus", "2.5", "3.5", "extra"], ["Cus cus", "4.5", "5.5"]]
    path = tmp_path / "occ.csv"
    path.write_text("species,lat,lon\n" + "\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(ValueError, match=r"occ\.csv: 1 rows with the wrong number of fields \(lines 3\)"):
        ingest_occurrences(path, GRID, VALID)
    occurrences, rejected, report = ingest_occurrences(path, GRID, VALID, cleaning={"malformed_tolerance": 0.5})
    assert report["records_read"] == 3 and report["records_kept"] == 2
    assert report["dropped"]["malformed_row"] == 1
    assert rejected.loc[rejected["reason"] == "malformed_row", "line"].tolist() == [3]


def test_latin1_file_with_blank_lines_reads_names_right(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("species;lat;lon\n\nAus aus;1,5;2\nBus bus;1.5;2.5\n\n".replace("1,5", "1.5").encode("latin-1")
                     + "Cus cus;4.5;5.5;\n".encode("latin-1").replace(b";\n", b"\n") + "Déa éa;6.5;7.5\n".encode("latin-1"))
    occurrences, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["records_read"] == 4
    assert "Déa éa" in set(occurrences["species"])


def test_several_files_are_one_table(tmp_path):
    a = write_tsv(tmp_path / "a.txt", ["species", "decimalLatitude", "decimalLongitude"], [["Aus aus", "1.5", "2.5"]])
    b = tmp_path / "b.csv"
    b.write_text("name,y,x\nAus aus,1.6,2.6\nBus bus,5.5,6.5\n")
    occurrences, _, report = ingest_occurrences([a, b], GRID, VALID)
    assert report["records_read"] == 3
    assert report["dropped"]["duplicate_species_cell"] == 1
    assert occurrences.set_index("species").loc["Aus aus", "n_records"] == 2
    assert report["file"] == [str(a), str(b)]


def test_species_below_min_records_are_kept_and_listed(tmp_path):
    path = tmp_path / "occ.csv"
    path.write_text("species,lat,lon\nAus aus,1.5,2.5\nAus aus,2.5,3.5\nBus bus,5.5,6.5\n")
    occurrences, _, report = ingest_occurrences(path, GRID, VALID, min_records=2)
    assert set(occurrences["species"]) == {"Aus aus", "Bus bus"}
    assert report["species_below_min_records"]["species"] == {"Bus bus": 1}


@pytest.mark.parametrize("name, expected", [
    ("Orchis mascula (L.) L.", "Orchis mascula"),
    ("orchis   mascula", "Orchis mascula"),
    ("ORCHIS MASCULA", "Orchis mascula"),
    ("Orchis mascula subsp. speciosa", "Orchis mascula"),
    ("Epipactis helleborine var. minor Engel", "Epipactis helleborine"),
    ("Orchis", None), ("Orchis sp.", None), ("Orchis L.", None), ("Orchis Rich.", None), ("", None), (None, None),
])
def test_canonical_names(name, expected):
    assert canonical_name(name) == expected


def test_canonical_names_vectorised_keeps_index():
    names = pd.Series(["Aus aus L.", None, "Bus"], index=[10, 11, 12])
    out = canonical_names(names)
    assert out.index.tolist() == [10, 11, 12]
    assert out.iloc[0] == "Aus aus" and out.isna().tolist() == [False, True, True]


HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
            max_size=12),
    st.sampled_from(["", " ", "NA", "null", "1e400", "-0", "5,5", "\ufeff", "0"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(["Aus aus", "bus BUS", "", "Cus", "Dus dus L."]), HOSTILE, HOSTILE),
                     min_size=1, max_size=30))
def test_hostile_rows_are_all_accounted_for(tmp_path, rows):
    path = tmp_path / "hostile.txt"
    body = "\n".join(f"{s}\t{lat}\t{lon}" for s, lat, lon in rows)
    path.write_bytes(("\ufeffspecies\tdecimalLatitude\tdecimalLongitude\n" + body + "\n").encode("utf-8"))
    try:
        occurrences, rejected, report = ingest_occurrences(path, GRID, VALID, cleaning={"malformed_tolerance": 1})
    except ValueError as error:
        assert "no record left after cleaning" in str(error) or "no rows" in str(error)
        return
    assert report["records_kept"] + sum(report["dropped"].values()) == report["records_read"]
    assert set(report["dropped"]) == set(DROP_REASONS)
    assert len(rejected) == sum(report["dropped"].values())
    assert occurrences["longitude"].between(-180, 180).all() and occurrences["latitude"].between(-90, 90).all()


def test_redlist_names_match_occurrences_despite_authors_case_and_subspecies(tmp_path):
    from sdm.redlist import match_report, read_redlist

    path = tmp_path / "assessments.csv"
    path.write_text("scientificName,redlistCategory\n"
                    "Orchis mascula subsp. speciosa,Endangered\n"
                    "Orchis mascula (L.) L.,Least Concern\n"
                    "OPHRYS APIFERA,Vulnerable\n"
                    "Serapias lingua  L.,Near Threatened\n")
    redlist, report = read_redlist(path)
    labels = redlist.set_index("species")["category"]
    assert labels["Orchis mascula"] == "LC"  # the species' own assessment, not its subspecies'
    assert labels["Ophrys apifera"] == "VU"
    assert report["duplicates_dropped"] == 1
    matches = match_report(redlist, pd.Series(["Orchis mascula", "Ophrys apifera", "Himantoglossum hircinum"]))
    assert matches["redlist_without_occurrences"] == ["Serapias lingua"]
    assert matches["occurrences_without_label"] == ["Himantoglossum hircinum"]


def test_lost_species_are_listed_with_the_reason(tmp_path):
    path = tmp_path / "occ.csv"
    path.write_text("species,lat,lon\nAus aus,1.5,2.5\nBus bus,50.5,60.5\nBus bus,0,0\nBus bus,51.5,60.5\n")
    _, _, report = ingest_occurrences(path, GRID, VALID)
    assert report["species_lost"] == {"Bus bus": "outside_grid (2), zero_zero_coordinates (1)"}
