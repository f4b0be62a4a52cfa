"""IUCN Red List categories and the ingest of Red List tables.

The one source of truth for category order: LC < NT < VU < EN < CR.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = ("LC", "NT", "VU", "EN", "CR")
"""Assessed categories, least to most threatened. Their index is the ordinal code used in rasters."""

THREATENED: frozenset[str] = frozenset({"VU", "EN", "CR"})
"""Categories counted as threatened (IUCN: VU, EN, CR)."""

CATEGORY_CODE: dict[str, int] = {c: i for i, c in enumerate(CATEGORIES)}
