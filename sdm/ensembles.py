"""Climate-model ensembles: scenarios grouped in the config (``climate.ensembles: {name: [scenario, ...]}``, for
example the GCMs of one SSP and period), summarised as biomod2's committee averaging does for models: the median
of the members and how many of them agree.

For each ensemble and dispersal assumption (run ``{ensemble}_{dispersal}``):

- every indicator layer of a future run is the cell-wise **median of the members' layers** (for the category code
  of the most threatened species, the higher of the two middle codes when the number of members is even);
- ``threatened_rise_agreement`` (with a Red List): the share of members in which the cell's threatened-species
  count rises; ``richness_loss_agreement``: the share in which its richness falls (0..1, NaN without data);
- in ``status.csv``, one row per species with the members' median category as ``status`` and
  ``threatened_agreement``, the share of members in which the species is threatened (VU, EN, CR).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from sdm.indicators import CATEGORICAL_LAYERS, layer_names, read_layer, write_indicators
from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED

AGREEMENT = {
    "threatened_rise_agreement": ("threatened_count_change", 1),
    "richness_loss_agreement": ("richness_change", -1),
}
"""Agreement layer -> (the change layer it counts, the sign of change counted)."""
AGREEMENT_UNITS = {
    "threatened_rise_agreement": "share of climate models (0-1) in which the number of threatened species rises",
    "richness_loss_agreement": "share of climate models (0-1) in which species richness falls",
}


def check_ensembles(ensembles: dict | None, scenarios: list[str]) -> None:
    """Raise ``ValueError`` naming the key at fault: every member a configured scenario, no member twice, and an
    ensemble name that is neither ``current`` nor a scenario's name (runs are named after both)."""
    for name, members in (ensembles or {}).items():
        where = f"climate.ensembles.{name}"
        if name == "current" or name in scenarios:
            raise ValueError(f"{where}: the name is taken by a scenario; name the ensemble differently")
        unknown = [m for m in members if m not in scenarios]
        if unknown:
            raise ValueError(f"{where}: {unknown} not in climate.scenarios ({sorted(scenarios)})")
        if len(set(members)) != len(members):
            raise ValueError(f"{where}: a member is listed twice: {members}")


def ensemble_runs(ensembles: dict | None, dispersal: list[str]) -> list[str]:
    """``{ensemble}_{dispersal}`` for every ensemble and dispersal assumption."""
    return [f"{name}_{d}" for name in (ensembles or {}) for d in dispersal]


def member_runs(run: str, ensembles: dict) -> list[str]:
    """The member runs (``{scenario}_{dispersal}``) of an ensemble run."""
    name, dispersal = run.rsplit("_", 1)
    return [f"{member}_{dispersal}" for member in ensembles[name]]


def ensemble_layer_names(with_status: bool) -> list[str]:
    """The GeoTIFF layers of an ensemble run: a future run's layers plus the agreement layer(s)."""
    agreement = list(AGREEMENT) if with_status else ["richness_loss_agreement"]
    return layer_names(True, with_status) + agreement


def _median(stack: np.ndarray, categorical: bool, empty: np.ndarray | None = None) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where every member is); categorical: the higher middle value.

    ``empty`` (bool, like ``stack``): members whose NaN means an empty assemblage (no species to rank: data, but no
    most threatened category or threatened share), not no data. Where a strict majority of the members with data
    are empty, so is the ensemble (NaN): otherwise the few members holding species would decide the cell."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (no data) stay NaN
        if categorical:
            median = np.nanquantile(stack, 0.5, axis=0, method="higher").astype("float32")
        else:
            median = np.nanmedian(stack, axis=0).astype("float32")
    if empty is not None:
        with_data = np.isfinite(stack) | empty
        median[2 * empty.sum(axis=0) > with_data.sum(axis=0)] = np.nan
    return median


def _agreement(stack: np.ndarray, sign: int) -> np.ndarray:
    """Share of members whose change has ``sign`` (over the members with data; NaN where none has)."""
    counted = np.isfinite(stack)
    n = counted.sum(axis=0)
    hits = (np.sign(np.where(counted, stack, 0.0)) == sign).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / n, np.nan).astype("float32")


def ensemble_indicators(members: dict[str, Path], out_dir: str | Path, with_status: bool) -> list[Path]:
    """Median and agreement layers of an ensemble run from its members' indicator folders (``{member run:
    folder of its GeoTIFFs}``), written as GeoTIFFs + ``indicators.zarr`` in ``out_dir``. All members must be on
    one grid."""
    layers: dict[str, xr.DataArray] = {}
    template = None
    # where a member has data (a richness) but a layer has none, its assemblage is empty there (see _median)
    has_data = np.stack([np.isfinite(read_layer(Path(folder) / "richness.tif").values) for folder in members.values()])
    for name in layer_names(True, with_status):
        arrays = [read_layer(Path(folder) / f"{name}.tif") for folder in members.values()]
        template = arrays[0] if template is None else template
        for run, array in zip(members, arrays):
            if array.shape != template.shape or not np.allclose(array["x"], template["x"]) \
                    or not np.allclose(array["y"], template["y"]):
                raise ValueError(f"ensemble member {run}: {name}.tif is not on the grid of the other members")
        stack = np.stack([a.values for a in arrays])
        layers[name] = template.copy(data=_median(stack, name in CATEGORICAL_LAYERS,
                                                  empty=has_data & np.isnan(stack))).assign_attrs(
            units=arrays[0].attrs.get("units", ""), long_name=f"median of {len(arrays)} climate models: {name}")
    for name in (AGREEMENT if with_status else ["richness_loss_agreement"]):
        change, sign = AGREEMENT[name]
        stack = np.stack([read_layer(Path(folder) / f"{change}.tif").values for folder in members.values()])
        layers[name] = template.copy(data=_agreement(stack, sign)).assign_attrs(units=AGREEMENT_UNITS[name])
    dataset = xr.Dataset(layers).drop_vars([c for c in ("spatial_ref", "band") if c in template.coords])
    return write_indicators(dataset, out_dir, template.rio.crs)


def ensemble_status(table: pd.DataFrame, ensembles: dict | None) -> pd.DataFrame:
    """Rows of the long status table (``sdm.status``) for every ensemble and dispersal: ``status`` = the members'
    median category (the higher middle one for an even number), ``threatened_agreement`` = share of members in
    which the species is threatened, ``range_km2`` / ``range_loss`` = the members' medians, ``members``."""
    rows = []
    for name, members in (ensembles or {}).items():
        part = table[table["scenario"].isin(members)]
        for dispersal, group in part.groupby("dispersal", sort=False):
            codes = group["status"].map(CATEGORY_CODE)
            summary = group.assign(code=codes, threatened=group["status"].isin(THREATENED)).groupby(
                "species", sort=False).agg(
                code=("code", lambda c: np.nanquantile(c, 0.5, method="higher") if c.notna().any() else np.nan),
                threatened_agreement=("threatened", "mean"),
                range_km2=("range_km2", "median"), range_loss=("range_loss", "median"),
                members=("scenario", "size"))
            summary["status"] = summary["code"].map(lambda c: CATEGORIES[int(c)] if c == c else None)
            rows.append(summary.drop(columns="code").reset_index().assign(scenario=name, dispersal=dispersal))
    if not rows:
        return table.iloc[0:0]
    out = pd.concat(rows, ignore_index=True)
    first = ["species", "scenario", "dispersal", "status", "threatened_agreement", "range_km2", "range_loss", "members"]
    return out[first]
