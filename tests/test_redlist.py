"""Unit tests of sdm.redlist: category codes and the ingest of IUCN exports and species,labels tables."""

from __future__ import annotations

import pandas as pd
import pytest

from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED, category_code, match_report, read_redlist

ASSESSMENTS = """assessmentId,internalTaxonId,scientificName,redlistCategory,redlistCriteria,yearPublished
1,11,Aus aus,Least Concern,,2020
2,12,Bus bus,Near Threatened,,2019
3,13,Cus cus,Lower Risk/near threatened,,1996
4,14,Dus dus,Vulnerable,B1ab(iii),2021
5,15,Eus eus,Endangered,A2c,2021
6,16,Fus  fus,Critically Endangered,C1,2018
7,17,Gus gus,Data Deficient,,2017
8,18,Hus hus,Extinct,,2010
9,19,Ius ius,Extinct in the Wild,,2010
10,20,Jus jus,Lower Risk/least concern,,1996
11,21,Aus aus,Vulnerable,,2008
"""


def test_category_order_is_the_one_source_of_truth():
    assert CATEGORIES == ("LC", "NT", "VU", "EN", "CR")
    assert [CATEGORY_CODE[c] for c in CATEGORIES] == [0, 1, 2, 3, 4]
    assert THREATENED == {"VU", "EN", "CR"}


@pytest.mark.parametrize(
    "value, code",
    [
        ("LC", "LC"), ("cr", "CR"), (" vu ", "VU"), ("Least Concern", "LC"), ("near  threatened", "NT"),
        ("Lower Risk/conservation dependent", "NT"), ("LR/nt", "NT"), ("LR/lc", "LC"), ("Data Deficient", "DD"),
        ("NE", "NE"), ("Extinct in the Wild", "EW"), ("EX", "EX"), ("", None), (None, None), (float("nan"), None),
        (pd.NA, None), ("Threatened", None), ("LR/xx", None),
    ],
)
def test_category_code(value, code):
    assert category_code(value) == code


def test_iucn_assessments_export(tmp_path):
    path = tmp_path / "assessments.csv"
    path.write_text(ASSESSMENTS, encoding="utf-8-sig")  # IUCN exports may carry a BOM
    redlist, report = read_redlist(path)
    assert list(redlist["species"]) == ["Aus aus", "Bus bus", "Cus cus", "Dus dus", "Eus eus", "Fus fus",
                                        "Gus gus", "Jus jus"]
    categories = dict(zip(redlist["species"], redlist["category"]))
    assert categories["Aus aus"] == "LC"  # the first assessment of a species is kept
    assert categories["Cus cus"] == "NT"
    assert categories["Fus fus"] == "CR"  # whitespace in names normalised
    assert categories["Jus jus"] == "LC"
    assert pd.isna(categories["Gus gus"])  # DD: unlabelled
    assert redlist["category"].dtype == "string"
    assert report["rows"] == 11
    assert report["extinct_excluded"] == 2
    assert report["duplicates_dropped"] == 1
    assert report["labelled"] == 7 and report["unlabelled"] == 1
    assert report["counts"]["EX"] == 1 and report["counts"]["EW"] == 1 and report["counts"]["DD"] == 1


def test_species_labels_codes(tmp_path):
    path = tmp_path / "redlist.csv"
    path.write_text("species,labels\nAus aus,LC\nBus bus,DD\nCus cus,NE\nDus dus,EN\nEus eus,\nFus fus,EX\n")
    redlist, report = read_redlist(path)
    assert redlist["species"].tolist() == ["Aus aus", "Bus bus", "Cus cus", "Dus dus", "Eus eus"]
    assert redlist["category"].tolist()[0] == "LC" and redlist["category"].tolist()[3] == "EN"
    assert redlist["category"].isna().tolist() == [False, True, True, False, True]  # DD, NE and empty -> NA
    assert report["extinct_excluded"] == 1
    assert report["labelled"] == 2 and report["unlabelled"] == 3


def test_tab_separated_and_parquet(tmp_path):
    tsv = tmp_path / "redlist.tsv"
    tsv.write_text("scientificName\tredlistCategory\nAus aus\tEndangered\n")
    assert read_redlist(tsv)[0]["category"].tolist() == ["EN"]
    parquet = tmp_path / "redlist.parquet"
    pd.DataFrame({"species": ["Aus aus", "Bus bus"], "category": ["VU", "Extinct"]}).to_parquet(parquet)
    redlist, report = read_redlist(parquet)
    assert redlist["category"].tolist() == ["VU"] and report["extinct_excluded"] == 1


def test_unknown_category_is_reported_not_fatal(tmp_path, caplog):
    path = tmp_path / "assessments.csv"
    path.write_text("scientificName,redlistCategory\nAus aus,Least Concern\nBus bus,Near Threatened\n"
                    "Cus cus,Probably fine\n")
    with caplog.at_level("WARNING"):
        redlist, report = read_redlist(path)
    # row 4 of the file: line 1 is the header
    assert report["unknown_categories"]["rows"] == [{"row": 4, "value": "Probably fine"}]
    assert redlist.set_index("species")["category"].isna().to_dict() == {"Aus aus": False, "Bus bus": False,
                                                                         "Cus cus": True}
    assert "assessments.csv: 1 row(s) with an unknown Red List category" in caplog.text
    assert "'Probably fine'" in caplog.text


def test_missing_columns_name_the_file(tmp_path):
    no_category = tmp_path / "no_category.csv"
    no_category.write_text("scientificName,criteria\nAus aus,B1\n")
    with pytest.raises(ValueError, match=r"no_category\.csv: no category column"):
        read_redlist(no_category)
    no_species = tmp_path / "no_species.csv"
    no_species.write_text("id,redlistCategory\n1,Least Concern\n")
    with pytest.raises(ValueError, match=r"no_species\.csv: no species column"):
        read_redlist(no_species)
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("species,labels\n")
    with pytest.raises(ValueError, match=r"header_only\.csv"):
        read_redlist(header_only)
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        read_redlist(tmp_path / "absent.csv")


def test_match_report():
    redlist = pd.DataFrame({"species": ["Aus aus", "Bus bus", "Cus cus"],
                            "category": pd.array(["LC", None, "EN"], dtype="string")})
    report = match_report(redlist, pd.Series(["Aus aus", "Bus bus", "Dus dus", "Aus aus"]))
    assert report == {
        "redlist_without_occurrences": ["Cus cus"],
        "occurrences_without_label": ["Bus bus", "Dus dus"],  # DD/NE count as unlabelled
    }
