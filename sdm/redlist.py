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


def read_redlist(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a Red List table (IUCN ``assessments.csv`` or ``species,labels``).

    Returns ``(redlist, report)``: redlist has ``species`` and ``category`` (LC..CR, or NA when DD/NE/missing);
    extinct species (EX/EW) are excluded and counted; a value that is no Red List category is treated as unassessed,
    logged and listed (row and value) in the report's ``unknown_categories``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Red List file not found: {path}")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(
        path, sep=sep, dtype="string", encoding="utf-8-sig", keep_default_na=False, na_values=[""]
    )
    if table.empty:
        raise ValueError(f"{path}: the Red List file has no rows")
    lower = {c.lower().strip(): c for c in table.columns}
    species_col = next((lower[c] for c in SPECIES_COLUMNS if c in lower), None)
    category_col = next((lower[c] for c in CATEGORY_COLUMNS if c in lower), None)
    if species_col is None or category_col is None:
        role = "species" if species_col is None else "category"
        raise ValueError(f"{path}: no {role} column; expected one of "
                         f"{SPECIES_COLUMNS if species_col is None else CATEGORY_COLUMNS}, found {list(table.columns)}")
    codes, unknown = [], []
    for i, value in enumerate(table[category_col], start=2):  # line 1 is the header
        code = category_code(value)
        if code is None and not (value is None or pd.isna(value) or str(value).strip() == ""):
            unknown.append({"row": i, "value": str(value)})
        codes.append(code)
    if unknown:
        values = sorted({u["value"] for u in unknown})
        log.warning("%s: %d row(s) with an unknown Red List category in column '%s' (%s; first at row %d) are "
                    "treated as unassessed; listed in the Red List report", path, len(unknown), category_col,
                    ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else ""), unknown[0]["row"])
    names = table[species_col].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    # the same canonical 'Genus epithet' as the occurrences, so authors, case and subspecies do not break matching
    redlist = pd.DataFrame({"species": canonical_names(names).fillna(names), "name": names, "raw_category": codes})
    redlist = redlist[redlist["species"].notna() & (redlist["species"] != "")]
    # an assessment of the species itself wins over one of its subspecies or a variant spelling
    infraspecific = redlist["name"].str.contains(r"\b(?:subsp|ssp|var|subvar|f|forma)\.?\s", regex=True)
    redlist = redlist.iloc[np.argsort(infraspecific.fillna(False).to_numpy(), kind="stable")]
    extinct = redlist["raw_category"].isin(EXTINCT)
    duplicated = redlist.duplicated("species", keep="first")
    report = {
        "file": str(path),
        "rows": int(len(table)),
        "extinct_excluded": int(extinct.sum()),
        "duplicates_dropped": int((duplicated & ~extinct).sum()),
        "counts": {k: int(v) for k, v in redlist["raw_category"].fillna("missing").value_counts().items()},
        "unknown_categories": {"column": category_col, "rows": unknown,
                               "note": "not a Red List category: treated as unassessed"},
    }
    redlist = redlist[~extinct & ~duplicated].reset_index(drop=True)
    redlist["category"] = redlist["raw_category"].where(redlist["raw_category"].isin(CATEGORIES)).astype("string")
    report["labelled"] = int(redlist["category"].notna().sum())
    report["unlabelled"] = int(redlist["category"].isna().sum())
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
