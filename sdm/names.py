"""Species names: one canonical form (``Genus epithet``) so that GBIF, Red List and user tables match.

Authors, infraspecific ranks and extra whitespace are dropped and case is normalised: ``Orchis mascula (L.) L.``,
``orchis  mascula``, ``ORCHIS MASCULA`` and ``Orchis mascula subsp. speciosa`` all become ``Orchis mascula``.
Names not identified to species (``Orchis``, ``Orchis sp.``, ``Orchis L.``) and hybrid formulas (``Orchis mascula
× Orchis militaris``, which name no one species) have no canonical form (NA); a nothospecies keeps its epithet
(``Orchis × hybrida``, ``Orchis ×hybrida`` and ``Orchis x hybrida`` are ``Orchis hybrida``). Names are compared in
Unicode's composed form (NFC), so an accented letter typed as letter plus accent matches the same letter typed as
one character.
"""

from __future__ import annotations

import pandas as pd

_NOT_EPITHETS = {"sp", "spp", "spec", "species", "cf", "aff", "indet", "sect", "subg", "x", "var", "subsp", "ssp", "f",
                 "agg", "gen"}
_UPPER, _LOWER = "A-ZÀ-ÖØ-Þ", "a-zß-öø-ÿ"  # Latin letters incl. accents (names and epithets can carry them)
_STRICT = rf"^\s*(?:×\s*)?([{_UPPER}][{_LOWER}-]+)\s+(?:[x×]\s+|×)?([{_LOWER}][{_LOWER}-]+)(?![^\W\d_])"
_ANY_CASE = (rf"^\s*(?:×\s*)?([{_UPPER}{_LOWER}-]+)\s+(?:[x×]\s+|×)?([{_UPPER}{_LOWER}][{_UPPER}{_LOWER}-]+)"
             r"(?![^\W\d_])")
_HYBRID_FORMULA = r"^\s*\S+\s+(?![x×](?:\s|$))\S+.*\s[x×]\s"  # a cross between two named parents, after the epithet


def canonical_names(names: pd.Series) -> pd.Series:
    """``Genus epithet`` of each name (string dtype), NA where the name is missing or not a species."""
    names = names.astype("string").str.normalize("NFC").str.strip().str.replace(r"\s+", " ", regex=True)
    strict = names.str.extract(_STRICT)
    # all-upper or all-lower names carry no case information: accept any case there, else an author such as
    # "Orchis Rich." would be read as the epithet "rich"
    caseless = (names == names.str.upper()) | (names == names.str.lower())
    relaxed = names.where(caseless).str.extract(_ANY_CASE)
    genus = strict[0].fillna(relaxed[0])
    epithet = strict[1].fillna(relaxed[1])
    canonical = genus.str.capitalize() + " " + epithet.str.lower()
    formula = names.str.contains(_HYBRID_FORMULA, regex=True).fillna(False)
    garbled = names.str.contains("\ufffd", regex=False).fillna(False)  # letters lost to a wrong encoding upstream
    return canonical.mask(epithet.str.lower().isin(_NOT_EPITHETS) | formula | garbled).astype("string")


def canonical_name(name) -> str | None:
    """The canonical form of one name, or None."""
    value = canonical_names(pd.Series([name], dtype="string")).iloc[0]
    return None if pd.isna(value) else str(value)
