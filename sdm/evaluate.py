"""Evaluation of predicted assemblages and future threat shares (used by benchmarks/skill.py).

Assemblages are compared as sets: for cells holding records, how many of the recorded species the predicted set
contains (recall), at a given mean set size. Methods are only comparable at equal mean set size, since a larger
set always recalls more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sdm.assemblage import _top_k_block
from sdm.codes import NODATA, decode, threshold_codes
from sdm.redlist import THREATENED


def set_recall(presence: np.ndarray, recorded: pd.DataFrame) -> dict:
    """Recall of recorded species by predicted sets, and the mean set size, over the recorded cells.

    ``presence``: bool (species, cells) for the evaluated cells; ``recorded``: columns ``cell`` (0..cells-1) and
    ``species`` (index into the species axis), one row per recorded species x cell.
    """
    hits = presence[recorded["species"].to_numpy(), recorded["cell"].to_numpy()]
    return {"recall": float(hits.mean()) if len(hits) else float("nan"),
            "mean_set_size": float(presence.sum(axis=0).mean()) if presence.shape[1] else float("nan"),
            "cells": int(presence.shape[1]), "records": int(len(recorded))}


def compare_assemblages(codes: np.ndarray, thresholds: np.ndarray, recorded: pd.DataFrame) -> pd.DataFrame:
    """The three assemblage methods at (about) the same mean set size as the per-species thresholds.

    ``codes``: uint8 suitability codes (species, cells) of the evaluated cells. Top-K uses the integer K nearest to
    the threshold method's mean set size (and the next one, to bracket it); average-K uses the single threshold
    that gives the same mean set size on these cells.
    """
    rows = []
    threshold = codes >= threshold_codes(thresholds)[:, None]
    rows.append({"method": "threshold (per-species max-TSS)", **set_recall(threshold, recorded)})
    size = rows[0]["mean_set_size"]
    for k in sorted({max(1, int(np.floor(size))), max(1, int(np.ceil(size)))}):
        top = _top_k_block(codes[:, :, None], k)[:, :, 0] == 1
        rows.append({"method": f"top-K (K={k})", **set_recall(top, recorded)})
    # average-K: one code threshold c with mean set size nearest the threshold method's
    valid = codes != NODATA
    counts = np.bincount(codes[valid].ravel(), minlength=256)[:NODATA]
    at_least = np.cumsum(counts[::-1])[::-1] / max(codes.shape[1], 1)
    code = int(np.argmin(np.abs(at_least - size)))
    rows.append({"method": f"average-K (one threshold {decode(code):.3g})", **set_recall(codes >= code, recorded)})
    return pd.DataFrame(rows)


def threat_shares(status: pd.DataFrame) -> pd.DataFrame:
    """Per scenario x dispersal: species, share threatened (VU/EN/CR) and number with no suitable cell left."""
    grouped = status.groupby(["scenario", "dispersal"], sort=False)
    return pd.DataFrame({
        "species": grouped["species"].nunique(),
        "threatened_share": grouped["status"].agg(lambda s: float(s.isin(THREATENED).mean())),
        "no_suitable_cell": grouped["no_suitable_cell"].sum().astype(int),
    }).reset_index()


def estopinan_shares(table: pd.DataFrame, species: set[str], period: str) -> pd.DataFrame:
    """Estopinan et al.'s threatened shares and predicted extinctions ('EXT') for ``species`` in a period column
    (``present`` or e.g. ``2061_2080``), with and without dispersal."""
    rows = []
    subset = table[table["species"].isin(species)]
    for dispersal, column in (("none", f"detail_nodispersal_{period}"), ("full", f"detail_dispersal_{period}")):
        values = subset[column]
        rows.append({"dispersal": dispersal, "period": period, "species": int(len(values)),
                     "threatened_share": float(values.isin(THREATENED | {"EXT"}).mean()),
                     "no_suitable_cell": int((values == "EXT").sum())})
    return pd.DataFrame(rows)
