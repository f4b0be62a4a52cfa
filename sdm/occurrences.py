"""Occurrence records: read CSV / TSV / GBIF downloads / Parquet, clean, put on the grid, and account for every row.

Every row read is either kept or dropped with exactly one reason, so that ``kept + sum(dropped) == read``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from sdm.grid import points_to_cells

COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "species": ("species", "scientificname", "scientific_name", "taxon", "taxon_name", "species_name", "name"),
    "longitude": ("decimallongitude", "longitude", "lon", "long", "lng", "x"),
    "latitude": ("decimallatitude", "latitude", "lat", "y"),
}
"""Recognised column names (matched case-insensitively), in order of preference."""

DROP_REASONS: tuple[str, ...] = (
    "missing_species",
    "missing_coordinates",
    "non_numeric_coordinates",
    "coordinates_out_of_range",
    "zero_zero_coordinates",
    "outside_grid",
    "nodata_cell",
    "duplicate_species_cell",
)
"""Why a record is dropped, in the order the checks are applied (a row gets the first reason that applies)."""


def find_columns(names: list[str], path: str | Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map ``species`` / ``longitude`` / ``latitude`` to the file's own column names."""
    overrides = overrides or {}
    lower = {n.lower().strip().lstrip("\ufeff"): n for n in names}
    found = {}
    for role, aliases in COLUMN_ALIASES.items():
        if role in overrides and overrides[role]:
            if overrides[role] not in names:
                raise ValueError(
                    f"{path}: column '{overrides[role]}' (occurrences.columns.{role}) not found; columns are {names}"
                )
            found[role] = overrides[role]
            continue
        match = next((lower[a] for a in aliases if a in lower), None)
        if match is None:
            raise ValueError(
                f"{path}: no {role} column (looked for {', '.join(aliases)}); columns are {names}. "
                f"Set occurrences.columns.{role} in the config."
            )
        found[role] = match
    return found


def sniff_separator(path: Path) -> str:
    """Tab, comma or semicolon, from the header line (GBIF 'CSV' downloads are tab-separated)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_chunks(path: str | Path, chunksize: int = 500_000):
    """Yield DataFrames of the raw table, all columns as strings, a chunk at a time (bounded memory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"occurrence file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the occurrence file is empty")
    if path.suffix.lower() in (".parquet", ".pq"):
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunksize):
            yield batch.to_pandas().astype("string")
        return
    sep = sniff_separator(path)
    # GBIF tab-separated downloads are unquoted: a field that starts with '"' is text, not the start of a quote
    # (with QUOTE_MINIMAL it swallows the following rows or fails with 'EOF inside string').
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    reader = pd.read_csv(
        path, sep=sep, dtype="string", chunksize=chunksize, encoding="utf-8-sig", encoding_errors="replace",
        quoting=quoting, on_bad_lines="warn", keep_default_na=False, na_values=[""],
        skip_blank_lines=True,
    )
    yield from reader


def _classify_chunk(raw: pd.DataFrame, columns: dict[str, str], grid: xr.DataArray, valid: np.ndarray) -> pd.DataFrame:
    """Parse one raw chunk: species, coordinates, grid cell and the first drop reason (or NA) of each row."""
    species = raw[columns["species"]].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    species = species.mask(species == "")  # blank names are missing, not a species called ""
    lon_text = raw[columns["longitude"]].astype("string").str.strip()
    lat_text = raw[columns["latitude"]].astype("string").str.strip()
    lon = pd.to_numeric(lon_text, errors="coerce").astype("float64").to_numpy()
    lat = pd.to_numeric(lat_text, errors="coerce").astype("float64").to_numpy()

    reason = np.full(len(raw), None, dtype=object)

    def mark(condition, name):
        condition = np.asarray(condition, dtype=bool) & (reason == None)  # noqa: E711 (elementwise)
        reason[condition] = name

    mark(species.isna().to_numpy() | (species.fillna("") == "").to_numpy(), "missing_species")
    mark(lon_text.isna().to_numpy() | lat_text.isna().to_numpy(), "missing_coordinates")
    mark(~np.isfinite(lon) | ~np.isfinite(lat), "non_numeric_coordinates")
    with np.errstate(invalid="ignore"):
        mark((np.abs(lon) > 180) | (np.abs(lat) > 90), "coordinates_out_of_range")
    mark((lon == 0) & (lat == 0), "zero_zero_coordinates")

    ok = reason == None  # noqa: E711
    cells = points_to_cells(np.where(ok, lon, np.nan), np.where(ok, lat, np.nan), grid)
    inside = cells["row"].to_numpy() >= 0
    mark(ok & ~inside, "outside_grid")
    rows, cols = cells["row"].to_numpy(), cells["col"].to_numpy()
    on_data = np.zeros(len(raw), dtype=bool)
    on_data[inside] = valid[rows[inside], cols[inside]]
    mark(inside & ~on_data, "nodata_cell")

    return pd.DataFrame({
        "species": species.to_numpy(dtype=object),
        "longitude": lon, "latitude": lat,
        "x": cells["x"].to_numpy(), "y": cells["y"].to_numpy(),
        "row": rows, "col": cols,
        "reason": reason,
    }, index=raw.index)


def ingest_occurrences(
    path: str | Path,
    grid: xr.DataArray,
    valid: np.ndarray,
    columns: dict[str, str] | None = None,
    chunksize: int = 500_000,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and clean an occurrence table onto ``grid``.

    ``valid`` is a bool array (y, x): cells with climate data. Returns ``(occurrences, rejected, report)``:
    occurrences has one row per species x cell with columns ``species``, ``longitude``, ``latitude`` (first record,
    WGS84 degrees), ``x``, ``y`` (cell centre, grid CRS), ``row``, ``col`` and ``n_records`` (records merged);
    rejected has ``line`` (1-based data row), ``species``, ``longitude``, ``latitude`` and ``reason``;
    report counts records read, kept and dropped per reason.
    """
    path = Path(path)
    kept_parts, rejected_parts = [], []
    read = 0
    resolved = None
    for raw in read_chunks(path, chunksize):
        if resolved is None:
            resolved = find_columns(list(raw.columns), path, columns)
        parsed = _classify_chunk(raw, resolved, grid, valid)
        parsed["line"] = np.arange(read + 1, read + len(parsed) + 1)
        read += len(parsed)
        bad = parsed["reason"].notna()
        rejected_parts.append(parsed.loc[bad, ["line", "species", "longitude", "latitude", "reason"]])
        kept_parts.append(parsed.loc[~bad].drop(columns="reason"))
    if resolved is None or read == 0:
        raise ValueError(f"{path}: no rows (only a header or nothing)")

    kept = pd.concat(kept_parts, ignore_index=True)
    rejected = pd.concat(rejected_parts, ignore_index=True)

    # Keep one row per species x cell; the others are duplicates, counted in n_records and reported.
    duplicated = kept.duplicated(["species", "row", "col"], keep="first")
    duplicates = kept.loc[duplicated, ["line", "species", "longitude", "latitude"]].assign(
        reason="duplicate_species_cell"
    )
    n_records = kept.groupby(["species", "row", "col"], sort=False).size().rename("n_records")
    occurrences = (
        kept.loc[~duplicated]
        .drop(columns="line")
        .join(n_records, on=["species", "row", "col"])
        .sort_values(["species", "row", "col"], kind="stable")
        .reset_index(drop=True)
    )
    occurrences["row"] = occurrences["row"].astype("int32")
    occurrences["col"] = occurrences["col"].astype("int32")
    occurrences["n_records"] = occurrences["n_records"].astype("int64")
    rejected = pd.concat([rejected, duplicates], ignore_index=True).sort_values("line", kind="stable")
    rejected = rejected.reset_index(drop=True)
    rejected["species"] = rejected["species"].astype("string")
    rejected["reason"] = rejected["reason"].astype("string")  # the same dtype whatever the chunking

    dropped = {reason: int((rejected["reason"] == reason).sum()) for reason in DROP_REASONS}
    species_read = set(pd.concat([kept["species"], rejected["species"].dropna()]).astype(str))
    species_kept = set(occurrences["species"])
    report = {
        "file": str(path),
        "columns": resolved,
        "records_read": int(read),
        "records_kept": int(len(occurrences)),
        "dropped": dropped,
        "species_read": len(species_read),
        "species_kept": len(species_kept),
        "species_lost": sorted(species_read - species_kept),
    }
    if report["records_kept"] + sum(dropped.values()) != read:  # the accounting is the contract; never ship a gap
        raise AssertionError(f"{path}: kept + dropped != read in the ingest report: {report}")
    if occurrences.empty:
        raise ValueError(f"{path}: no record left after cleaning; drops per reason: {json.dumps(dropped)}")
    return occurrences, rejected, report
