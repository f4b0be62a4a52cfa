"""IUCN Red List categories and the ingest of Red List tables.

The one source of truth for category order: LC < NT < VU < EN < CR.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sdm.names import canonical_names
from sdm.occurrences import read_chunks

log = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("LC", "NT", "VU", "EN", "CR")
"""Assessed categories, least to most threatened. Their index is the ordinal code used in rasters."""

THREATENED: frozenset[str] = frozenset({"VU", "EN", "CR"})
"""Categories counted as threatened (IUCN: VU, EN, CR)."""

CATEGORY_CODE: dict[str, int] = {c: i for i, c in enumerate(CATEGORIES)}

LONG_NAMES: dict[str, str] = {
    "least concern": "LC",
    "near threatened": "NT",
    "lower risk/near threatened": "NT",
    "lower risk/conservation dependent": "NT",
    "lower risk/least concern": "LC",
    "vulnerable": "VU",
    "endangered": "EN",
    "critically endangered": "CR",
    "data deficient": "DD",
    "not evaluated": "NE",
    "extinct": "EX",
    "extinct in the wild": "EW",
}
"""IUCN long names (as in Red List exports) to codes; old 'Lower Risk' categories map to their modern equivalent."""

UNLABELLED = frozenset({"DD", "NE"})
EXTINCT = frozenset({"EX", "EW"})

SPECIES_COLUMNS = ("scientificname", "species", "scientific_name", "taxon", "name")
CATEGORY_COLUMNS = ("redlistcategory", "category", "labels", "label", "status", "iucn", "redlist_category")


def category_code(value) -> str | None:
    """A Red List value (code or long name, any case) as a code (LC..CR, DD, NE, EX, EW); None if empty/unknown."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.upper() in CATEGORIES or text.upper() in UNLABELLED | EXTINCT:
        return text.upper()
    text = re.sub(r"\s+", " ", text.lower())
    if text.startswith("lr/"):  # old codes such as LR/nt, LR/lc, LR/cd
        return {"lr/nt": "NT", "lr/lc": "LC", "lr/cd": "NT"}.get(text)
    return LONG_NAMES.get(text)


def _read_table(path: Path) -> pd.DataFrame:
    """The Red List table as strings with each row's file ``line`` (CSV / TSV of any separator and encoding, zipped
    or not, or Parquet, read as occurrence tables are). A row with more fields than the header raises, naming its
    lines: a Red List row lost would silently unlabel a species."""
    malformed: list[int] = []
    parts = [chunk.assign(line=lines) for chunk, lines in read_chunks(path, malformed=malformed, what="Red List")]
    if malformed:
        raise ValueError(f"{path}: {len(malformed)} row(s) with more fields than the header (lines "
                         f"{', '.join(map(str, malformed[:5]))}{', ...' if len(malformed) > 5 else ''}); quote "
                         f"fields that hold the separator")
    if not parts or not sum(len(p) for p in parts):
        raise ValueError(f"{path}: the Red List file has no rows")
    return pd.concat(parts, ignore_index=True)


def _listed(rows: pd.DataFrame, values: pd.Series) -> list[dict]:
    return [{"row": int(line), "value": str(value)} for line, value in zip(rows["line"], values)]


_INFRASPECIFIC = re.compile(r"\b(?:subsp|ssp|var|subvar|f|forma)\.?\s")
_TRINOMIAL = re.compile(r"^\S+\s+\S+\s+(?!(?:de|van|von|der|den|du|da|del|ex|et|in|la|le)\b)[a-zß-öø-ÿ-]+(?:\s|$)")


def read_redlist(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a Red List table (IUCN ``assessments.csv`` or ``species,labels``).

    Returns ``(redlist, report)``: redlist has ``species`` and ``category`` (LC..CR, or NA when DD/NE/missing);
    extinct species (EX/EW) are excluded and counted; a value that is no Red List category is treated as unassessed,
    logged and listed (file line and value) in the report's ``unknown_categories``. Rows without a name, or with a
    name that is no species (a genus alone, a hybrid formula), are counted and listed, as the occurrences drop them.
    One row per species is kept: the species' own assessment before a subspecies' or variety's, then the latest
    (``yearPublished``), then one of an extant category; every row is accounted for in the report.
    """
    path = Path(path)
    table = _read_table(path)
    lower = {c.lower().strip().lstrip("\ufeff"): c for c in table.columns if c != "line"}
    species_col = next((lower[c] for c in SPECIES_COLUMNS if c in lower), None)
    category_col = next((lower[c] for c in CATEGORY_COLUMNS if c in lower), None)
    if species_col is None or category_col is None:
        role = "species" if species_col is None else "category"
        raise ValueError(f"{path}: no {role} column; expected one of "
                         f"{SPECIES_COLUMNS if species_col is None else CATEGORY_COLUMNS}, found "
                         f"{[c for c in table.columns if c != 'line']}")
    codes = table[category_col].map(category_code)
    given = table[category_col].fillna("").str.strip() != ""
    unknown = _listed(table[codes.isna() & given], table.loc[codes.isna() & given, category_col])
    if unknown:
        values = sorted({u["value"] for u in unknown})
        log.warning("%s: %d row(s) with an unknown Red List category in column '%s' (%s; first at line %d) are "
                    "treated as unassessed; listed in the Red List report", path, len(unknown), category_col,
                    ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else ""), unknown[0]["row"])
    names = table[species_col].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    nameless = names.fillna("") == ""
    # the same canonical 'Genus epithet' as the occurrences, so authors, case and subspecies do not break matching
    redlist = pd.DataFrame({"species": canonical_names(names), "name": names, "raw_category": codes,
                            "line": table["line"]})
    not_species = redlist["species"].isna() & ~nameless
    if not_species.any():
        log.warning("%s: %d row(s) whose name is no species (first: %r, line %d) are left out; listed in the Red "
                    "List report", path, int(not_species.sum()), str(names[not_species].iloc[0]),
                    int(table.loc[not_species, "line"].iloc[0]))
    not_species_rows = _listed(redlist[not_species], names[not_species])
    redlist = redlist[redlist["species"].notna()]
    # precedence: the species' own assessment before an infraspecific one, the latest, an extant category
    infraspecific = (redlist["name"].str.contains(_INFRASPECIFIC) | redlist["name"].str.contains(_TRINOMIAL))
    year_col = lower.get("yearpublished")
    year = (pd.to_numeric(table.loc[redlist.index, year_col], errors="coerce") if year_col
            else pd.Series(np.nan, index=redlist.index))
    extinct = redlist["raw_category"].isin(EXTINCT)
    order = pd.DataFrame({"infraspecific": infraspecific.fillna(False).astype(bool), "year": -year.fillna(-np.inf),
                          "extinct": extinct, "position": np.arange(len(redlist))}, index=redlist.index)
    redlist = redlist.loc[order.sort_values(["infraspecific", "year", "extinct", "position"]).index]
    duplicated = redlist.duplicated("species", keep="first")
    kept_extinct = redlist["raw_category"].isin(EXTINCT) & ~duplicated
    report = {
        "file": str(path),
        "rows": int(len(table)),
        "missing_species": int(nameless.sum()),
        "not_species": {"rows": not_species_rows,
                        "note": "no species name (a genus alone, a hybrid formula): left out"},
        "extinct_excluded": int(kept_extinct.sum()),
        "duplicates_dropped": int(duplicated.sum()),
        "counts": {k: int(v) for k, v in redlist["raw_category"].fillna("missing").value_counts().items()},
        "unknown_categories": {"column": category_col, "rows": unknown,
                               "note": "not a Red List category: treated as unassessed"},
    }
    redlist = redlist[~kept_extinct & ~duplicated].sort_index().drop(columns="line").reset_index(drop=True)
    redlist["category"] = redlist["raw_category"].where(redlist["raw_category"].isin(CATEGORIES)).astype("string")
    report["labelled"] = int(redlist["category"].notna().sum())
    report["unlabelled"] = int(redlist["category"].isna().sum())
    accounted = (len(redlist) + report["missing_species"] + len(not_species_rows) + report["extinct_excluded"]
                 + report["duplicates_dropped"])
    if accounted != report["rows"]:  # every row is kept or counted with its reason
        raise AssertionError(f"{path}: Red List rows do not add up: {report}")
    return redlist, report


def match_report(redlist: pd.DataFrame, occurrence_species: pd.Series) -> dict:
    """Names in the Red List without occurrences, and species with occurrences but no label."""
    listed = set(redlist["species"])
    observed = set(occurrence_species.astype(str))
    labelled = set(redlist.loc[redlist["category"].notna(), "species"])
    return {
        "redlist_without_occurrences": sorted(listed - observed),
        "occurrences_without_label": sorted(observed - labelled),
    }
