"""Real-world table files at ingest: every row keeps its file line, zipped GBIF downloads, encodings, decimal commas,
stray quotes, and Red List tables read like the occurrences."""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdm import occurrences as occ
from sdm.grid import make_grid
from sdm.names import canonical_names
from sdm.occurrences import ingest_occurrences
from sdm.redlist import read_redlist

GRID = make_grid("EPSG:4326", 1.0, (0, 0, 10, 10))
VALID = np.ones((10, 10), dtype=bool)
LAX = {"malformed_tolerance": 1.0}


def _reasons(rejected: pd.DataFrame) -> dict[int, str]:
    return dict(zip(rejected["line"].tolist(), rejected["reason"].tolist()))


@pytest.mark.parametrize("chunksize", [1000, 1])
def test_rejected_lines_are_file_lines_after_blank_lines_quoted_breaks_and_malformed_rows(tmp_path, chunksize):
    path = tmp_path / "occ.csv"
    path.write_text(
        "species,lat,lon,remarks\n"           # line 1
        "Aus aus,1.5,2.5,\n"                 # 2: kept
        "\n"                                 # 3: blank
        'Bus bus,1.5,2.5,"a remark\n'         # 4: a quoted field over two lines
        'on two lines"\n'                    # 5
        "Cus cus,0,0,\n"                     # 6: zero_zero
        "Dus dus,1,2,x,extra\n"              # 7: malformed (one field too many)
        "Eus eus,50,60,\n"                   # 8: outside the grid
        "Aus aus,1.6,2.6,\n")                # 9: duplicate of line 2
    _, rejected, report = ingest_occurrences(path, GRID, VALID, chunksize=chunksize, cleaning=LAX)
    assert _reasons(rejected) == {6: "zero_zero_coordinates", 7: "malformed_row", 8: "outside_grid",
                                  9: "duplicate_species_cell"}
    assert report["records_read"] == 6


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_tab_separated_lines_with_any_line_end(tmp_path, newline, monkeypatch):
    monkeypatch.setattr(occ, "_BLOCK_BYTES", 7)  # lines and CRLFs split between blocks
    rows = ["species\tdecimalLatitude\tdecimalLongitude", "Aus aus\t1.5\t2.5", "", "   ", "Bus bus\t0\t0",
            "Cus cus\t1\t2\t3", 'Dus dus"\t50\t60', "Eus eus\t0\t0"]
    path = tmp_path / "occ.txt"
    path.write_bytes(newline.join(rows).encode())  # no line end after the last line
    _, rejected, report = ingest_occurrences(path, GRID, VALID, cleaning=LAX)
    assert _reasons(rejected) == {5: "zero_zero_coordinates", 6: "malformed_row", 7: "outside_grid",
                                  8: "zero_zero_coordinates"}
    assert report["records_read"] == 5


LINE = st.one_of(st.just(""), st.just("  "), st.text(alphabet="ab\t \"", max_size=8))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=12), ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12,
                                                       max_size=12), block=st.integers(1, 9))
def test_unquoted_line_scan_matches_a_plain_split(lines, ends, block, monkeypatch):
    monkeypatch.setattr(occ, "_BLOCK_BYTES", block)
    text = "".join(line + end for line, end in zip(lines, ends))
    expected = [(i + 1, line.count("\t") + 1, len(line) - len(line.rstrip("\t")))
                for i, line in enumerate(re.split(r"\r\n|\n|\r", text)[:len(lines)]) if line.strip(" ")]
    found = [(int(n), int(f), int(t)) for ls, fs, ts in occ._unquoted_records(io.BytesIO(text.encode()), "\t")
             for n, f, t in zip(ls, fs, ts)]
    assert found == expected


def test_a_stray_quote_raises_naming_its_line(tmp_path):
    path = tmp_path / "stray.csv"
    path.write_text('species,lat,lon,habitat\nAus aus,1.5,2.5,"meadow\nBus bus,2.5,3.5,meadow\n'
                    'Cus cus,3.5,4.5,"wood"\n')
    with pytest.raises(ValueError, match=r"stray\.csv: line 2: a quoted field runs over .* stray '\"'"):
        ingest_occurrences(path, GRID, VALID)


def test_a_latin1_byte_deep_in_a_file_is_read_as_latin1(tmp_path):
    rows = "".join(f"Aus aus,{1 + i % 8 + 0.5},2.5\n" for i in range(60_000))  # more than a MiB of ASCII first
    path = tmp_path / "late.csv"
    path.write_bytes(("species,lat,lon\n" + rows).encode() + "Bus façade,5.5,6.5\n".encode("latin-1"))
    occurrences, _, _ = ingest_occurrences(path, GRID, VALID)
    assert sorted(set(occurrences["species"])) == ["Aus aus", "Bus façade"]


def test_decimal_commas_in_a_semicolon_file(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("species;lat;lon\nAus aus;1,5;2,5\nBus bus;-0,5;3\n")
    occurrences, rejected, _ = ingest_occurrences(path, GRID, VALID)
    assert occurrences[["species", "latitude", "longitude"]].values.tolist() == [["Aus aus", 1.5, 2.5]]
    assert _reasons(rejected) == {3: "outside_grid"}  # -0.5 read as a number, south of the grid


def test_the_first_row_with_an_extra_field_does_not_shift_the_columns(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_text("species,lat,lon\nAus aus,1.5,2.5,x\nBus bus,3.5,4.5\n")
    occurrences, rejected, _ = ingest_occurrences(path, GRID, VALID, cleaning=LAX)
    assert occurrences[["species", "latitude", "longitude"]].values.tolist() == [["Bus bus", 3.5, 4.5]]
    assert _reasons(rejected) == {2: "malformed_row"}


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_separator_at_the_end_of_every_line_is_no_extra_field(tmp_path, sep):
    path = tmp_path / "trailing.txt"
    path.write_text(f"species{sep}lat{sep}lon\nAus aus{sep}1.5{sep}2.5{sep}\nBus bus{sep}3.5{sep}4.5{sep}\n"
                    f"Cus cus{sep}5.5{sep}6.5{sep}x\nDus dus{sep}7.5{sep}8.5\n")
    occurrences, rejected, _ = ingest_occurrences(path, GRID, VALID, cleaning=LAX)
    assert occurrences["species"].tolist() == ["Aus aus", "Bus bus", "Dus dus"]
    assert _reasons(rejected) == {4: "malformed_row"}  # its fourth field holds something


def test_a_file_listed_twice_raises(tmp_path):
    path = tmp_path / "occ.csv"
    path.write_text("species,lat,lon\nAus aus,1.5,2.5\n")
    with pytest.raises(ValueError, match=r"occ\.csv: listed twice"):
        ingest_occurrences([path, tmp_path / "." / "occ.csv"], GRID, VALID)


GBIF_TSV = "gbifID\tspecies\tdecimalLatitude\tdecimalLongitude\tlocality\n1\tAus aus\t1.5\t2.5\tSète\n" \
           "2\tBus bus\t3.5\t4.5\tx\n"


def test_a_zipped_gbif_simple_download_and_a_darwin_core_archive(tmp_path):
    simple = tmp_path / "0001-simple.zip"
    with zipfile.ZipFile(simple, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("0001.csv", GBIF_TSV)
    occurrences, _, _ = ingest_occurrences(simple, GRID, VALID)
    assert occurrences["species"].tolist() == ["Aus aus", "Bus bus"]
    archive = tmp_path / "dwca.zip"
    meta = ('<archive xmlns="http://rs.tdwg.org/dwc/text/"><core rowType="http://rs.tdwg.org/dwc/terms/Occurrence">'
            '<files><location>occurrence.txt</location></files></core></archive>')
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("meta.xml", meta)
        z.writestr("occurrence.txt", GBIF_TSV)
        z.writestr("verbatim.txt", "not the core\n")
    occurrences, _, _ = ingest_occurrences(archive, GRID, VALID)
    assert occurrences["species"].tolist() == ["Aus aus", "Bus bus"]


def test_unreadable_files_name_the_file(tmp_path):
    several = tmp_path / "several.zip"
    with zipfile.ZipFile(several, "w") as z:
        z.writestr("a.csv", GBIF_TSV)
        z.writestr("b.csv", GBIF_TSV)
    with pytest.raises(ValueError, match=r"several\.zip: the zip holds 2 files \(a\.csv, b\.csv\)"):
        ingest_occurrences(several, GRID, VALID)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not a zip")
    with pytest.raises(ValueError, match=r"broken\.zip: not a readable zip"):
        ingest_occurrences(broken, GRID, VALID)
    parquet = tmp_path / "occ.parquet"
    parquet.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"occ\.parquet: cannot read the Parquet file"):
        ingest_occurrences(parquet, GRID, VALID)


@pytest.mark.parametrize("name, canonical", [
    ("Orchis mascula × Orchis militaris", None), ("Orchis mascula x militaris", None),
    ("Orchis × hybrida", "Orchis hybrida"), ("Orchis ×hybrida", "Orchis hybrida"), ("Orchis x hybrida", "Orchis hybrida"),
    ("Orchis xanthina", "Orchis xanthina"), ("Orchis spec.", None), ("Orchis species", None),
    (unicodedata.normalize("NFD", "Isoëtes lacustris"), "Isoëtes lacustris"), ("Bus fa\ufffdade", None),
])
def test_names_hybrid_formulas_decomposed_accents_and_lost_letters(name, canonical):
    value = canonical_names(pd.Series([name])).iloc[0]
    assert (None if pd.isna(value) else value) == canonical


def test_redlist_rows_keep_their_file_lines_and_every_row_is_accounted_for(tmp_path, caplog):
    path = tmp_path / "assessments.csv"
    path.write_text(
        "scientificName,redlistCategory,rationale\n"   # 1
        'Aus aus,Least Concern,"Widespread;\n'          # 2
        'common"\n'                                     # 3
        ",Endangered,\n"                               # 4: no name
        "Orchis,Vulnerable,\n"                         # 5: a genus alone
        "Bus bus,Probably fine,\n")                    # 6: no Red List category
    redlist, report = read_redlist(path)
    assert redlist["species"].tolist() == ["Aus aus", "Bus bus"]
    assert report["unknown_categories"]["rows"] == [{"row": 6, "value": "Probably fine"}]
    assert report["missing_species"] == 1
    assert report["not_species"]["rows"] == [{"row": 5, "value": "Orchis"}]
    assert "no species" in caplog.text


def test_redlist_precedence_does_not_depend_on_row_order(tmp_path):
    rows = ["Aus aus,EX", "Aus aus,LC", "Panthera leo persica,EN", "Panthera leo,VU"]
    for order in (rows, rows[::-1]):
        path = tmp_path / "rl.csv"
        path.write_text("species,labels\n" + "\n".join(order) + "\n")
        redlist, report = read_redlist(path)
        assert dict(zip(redlist["species"], redlist["category"])) == {"Aus aus": "LC", "Panthera leo": "VU"}
        assert report["extinct_excluded"] == 0 and report["duplicates_dropped"] == 2


def test_redlist_keeps_the_latest_assessment(tmp_path):
    path = tmp_path / "assessments.csv"
    path.write_text("scientificName,redlistCategory,yearPublished\nAus aus,Vulnerable,2008\nAus aus,Endangered,2021\n")
    assert read_redlist(path)[0]["category"].tolist() == ["EN"]


def test_redlist_semicolons_latin1_and_bad_rows(tmp_path):
    path = tmp_path / "rl_semi.csv"
    path.write_bytes("species;labels\nBus façade;VU\n".encode("latin-1"))
    redlist, _ = read_redlist(path)
    assert dict(zip(redlist["species"], redlist["category"])) == {"Bus façade": "VU"}
    bad = tmp_path / "rl_bad.csv"
    bad.write_text("species,labels\nAus aus,LC\nBus bus,VU,extra\n")
    with pytest.raises(ValueError, match=r"rl_bad\.csv: 1 row\(s\) with more fields than the header \(lines 3\)"):
        read_redlist(bad)


def test_a_long_quoted_paragraph_with_many_commas_is_no_stray_quote(tmp_path):
    countries = ", ".join(f"Country {i}" for i in range(30))  # an IUCN range text: more commas than columns
    path = tmp_path / "assessments.csv"
    path.write_text('scientificName,redlistCategory,range\n'
                    f'Aus aus,Endangered,"Found in:\n{countries}.\nElsewhere: none"\n'
                    f'Bus bus,Vulnerable,"{"x" * 200_000}"\n')  # a field beyond csv's default limit of 131,072
    redlist, _ = read_redlist(path)
    assert dict(zip(redlist["species"], redlist["category"])) == {"Aus aus": "EN", "Bus bus": "VU"}


def test_white_space_lines_and_quoted_empty_fields_are_counted_as_pandas_reads_them(tmp_path):
    path = tmp_path / "occ.csv"
    path.write_text('species,lat,lon\nAus aus,1.5,2.5\n\t\n""\nBus bus,0,0\n')  # a tab-only line is blank
    _, rejected, report = ingest_occurrences(path, GRID, VALID)
    assert _reasons(rejected) == {4: "missing_species", 5: "zero_zero_coordinates"}  # "" is a row without a name
    assert report["records_read"] == 3


def test_a_utf8_character_cut_at_the_end_and_a_gzipped_table(tmp_path):
    import gzip

    cut = tmp_path / "cut.csv"
    cut.write_bytes("species,lat,lon\nAus aus,1.5,2.5\nBus b".encode() + "é".encode()[:1])
    occurrences, _, _ = ingest_occurrences(cut, GRID, VALID)  # read as Latin-1, not an error
    assert occurrences["species"].tolist() == ["Aus aus"]
    packed = tmp_path / "occ.csv.gz"
    packed.write_bytes(gzip.compress(b"species,lat,lon\nAus aus,1.5,2.5\n\nBus bus,0,0\n"))
    _, rejected, _ = ingest_occurrences(packed, GRID, VALID)
    assert _reasons(rejected) == {4: "zero_zero_coordinates"}
