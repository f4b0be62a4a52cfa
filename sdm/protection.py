"""Is what is threatened protected? The protection gap per cell and the protected share of each threatened
species' predicted range, from the protected-area coverage raster (``maps.protected_areas``, else
``threats.protected_areas``; fraction 0..1 of each cell, no data = unprotected; see :mod:`sdm.threats`)."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from sdm.redlist import CATEGORY_CODE, THREATENED


def protection_gap(threatened_count: xr.DataArray, protected: xr.DataArray) -> xr.DataArray:
    """Threatened-species richness weighted by the unprotected share of each cell: ``threatened_count x (1 -
    protected fraction)`` (NaN where the count is; a cell without coverage data counts as unprotected)."""
    unprotected = 1.0 - protected.fillna(0.0).clip(0.0, 1.0)
    gap = (threatened_count * unprotected.values).astype("float32")
    return gap.assign_attrs(units="number of threatened species x unprotected share of the cell")


def protection_table(features: dict[str, pd.DataFrame], status: pd.DataFrame) -> pd.DataFrame:
    """Threatened species (now or in any run) ranked by the protected share of their predicted range now (least
    protected first), with that share in every run.

    ``features``: run -> per-species features (index ``species``, column ``protected_share_range``); ``status``:
    the long status table. Columns: ``species``, ``status_now``, ``threatened_runs`` (how many runs give a
    threatened status), ``range_km2_now`` and ``protected_share_{run}`` for every run."""
    table = status.assign(run=status["scenario"].astype(str) + "_" + status["dispersal"].astype(str))
    table = table[table["run"].isin(features)]  # runs with features (not the ensembles' summary rows)
    threatened = table[table["status"].isin(THREATENED)]
    species = pd.Index(threatened["species"].unique(), name="species")
    now = table[table["run"] == "current_none"].set_index("species")
    out = pd.DataFrame(index=species)
    out["status_now"] = now["status"].reindex(species)
    out["threatened_runs"] = threatened.groupby("species").size().reindex(species).astype(int)
    out["range_km2_now"] = features.get("current_none", pd.DataFrame()).get(
        "range_km2", pd.Series(dtype=float)).reindex(species)
    for run, frame in features.items():
        if "protected_share_range" not in frame:
            raise ValueError(f"features of {run} have no protected_share_range: set maps.protected_areas or "
                             "threats.protected_areas")
        out[f"protected_share_{run}"] = frame["protected_share_range"].reindex(species)
    order = out["status_now"].map(CATEGORY_CODE).fillna(-1)
    out = out.assign(_order=-order).sort_values(["protected_share_current_none", "_order"], na_position="last")
    return out.drop(columns="_order").reset_index()
