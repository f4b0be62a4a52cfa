"""SDM skill on real data: the joint deep SDM against MaxEnt (elapid) on the same splits (issue 5, part 2).

Three data sets from ``../shared/data`` (see its PROVENANCE.md):

- **myrcia** (kuenm2, WorldClim 10', bio1/bio7/bio12/bio15): both models learn from the 51 training records
  (validation blocks for early stopping and thresholds, no test blocks) and are scored on the 82 independent
  NeoTropTree records against every cell of the calibration area (the raster's valid cells): AUC.
- **mammals** (biomod2, 3 degrees, 5 bioclim variables, 6 species with IUCN-range presence/absence): presence-only
  training records are a sample of each species' true presence cells; background is every land cell. AUC and TSS
  (at the max-TSS threshold of the validation blocks) against the true presence/absence of the test blocks, averaged
  over split seeds.
- **orchids** (IUCNN GBIF records of 889 species, ISIMIP 0.5 degree, 19 bioclim): spatial-block split, every species
  with >= ``sdm.min_records`` occupied cells trained jointly; mean per-species test AUC (records vs test-block
  background) over the species with >= 10 occupied cells and at least one test record. MaxEnt is fitted for those
  species only.

Run ``python benchmarks/skill_sdm.py`` (all three, about 20 minutes on 2 cores; `--maxent-location` adds about 20) or ``--dataset myrcia``.
``sdm_skill_tables()`` returns the tables as a dict for ``benchmarks/skill.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.metrics import roc_auc_score

from sdm.climate import ingest_climate, valid_mask
from sdm.grid import grid_of, points_to_cells
from sdm.occurrences import ingest_occurrences
from sdm.train import SPLITS, max_tss_threshold, train_sdm, tss_at

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SDM_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATASETS = ("myrcia", "mammals", "orchids", "orchids_transfer")

# Deep SDM settings per data set, chosen on tuning splits that never touch the test data (see the README's Skill
# section): small networks for the small data sets; the joint orchid model adds a location encoding (8 harmonics)
# to the climate, and is also run on the climate alone.
DEEP = {
    "myrcia": {"hidden": 64, "blocks": 2, "block_cells": 8, "epochs": 100, "patience": 10},
    "mammals": {"hidden": 64, "blocks": 2, "block_cells": 5, "epochs": 100, "patience": 10},
    "orchids": {"hidden": 128, "blocks": 2, "block_cells": 10, "epochs": 60, "patience": 10, "coordinates": 8},
}
TARGETS = {  # issue 5: the deep SDM's mean AUC minus MaxEnt's must reach this
    "myrcia": -0.01, "mammals": -0.01, "orchids": 0.02,
}
MAXENT = "elapid MaxEnt (linear, quadratic, hinge)"


# --- evaluation ---------------------------------------------------------------------------------------------------

def auc(scores_presence: np.ndarray, scores_background: np.ndarray) -> float:
    """Probability that a presence scores above a background cell (ties count half); NaN when a side is empty."""
    scores_presence, scores_background = np.asarray(scores_presence), np.asarray(scores_background)
    if len(scores_presence) == 0 or len(scores_background) == 0:
        return float("nan")
    y = np.r_[np.ones(len(scores_presence)), np.zeros(len(scores_background))]
    return float(roc_auc_score(y, np.r_[scores_presence, scores_background]))


def independent_test_auc(suitability: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                         background: np.ndarray) -> float:
    """AUC of independent test records against background cells on a (y, x) suitability grid.

    Each record counts once (records sharing a cell repeat its score); ``background`` is a bool (y, x) mask of the
    cells to compare with (typically the calibration area: every cell with data). Records on cells without a score
    (NaN) are left out.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    presence = suitability[rows, cols]
    back = suitability[background & np.isfinite(suitability)]
    return auc(presence[np.isfinite(presence)], back)


def presence_absence_skill(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """AUC and TSS (at ``threshold``) of scores against true presence (1) / absence (0) of the same cells."""
    truth = np.asarray(truth).astype(bool)
    return {"auc": auc(scores[truth], scores[~truth]), "tss": tss_at(scores[truth], scores[~truth], threshold)}


def split_cells(split: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """bool (y, x) masks of the valid cells in each split (train / validation / test) of a spatial-block map."""
    return {name: (split == code) & valid for name, code in SPLITS.items()}


def grid_scores(info: dict, key: str, shape: tuple[int, int]) -> np.ndarray:
    """(species, y, x) scores from ``train_sdm``'s per-cell ``info[key]`` (cells, species); NaN off the valid cells."""
    cells = info[key]
    out = np.full((cells.shape[1], *shape), np.nan, dtype="float64")
    out[:, info["cell_rows"], info["cell_cols"]] = cells.T
    return out


def _validation_threshold(scores: np.ndarray, records: pd.DataFrame, masks: dict) -> float:
    """Max-TSS threshold of one species' (y, x) scores: its records in validation blocks vs validation cells."""
    in_val = masks["validation"][records["row"], records["col"]]
    return max_tss_threshold(scores[records["row"][in_val], records["col"][in_val]],
                             scores[masks["validation"]])[0]


# --- data ---------------------------------------------------------------------------------------------------------

def load_myrcia() -> tuple[xr.DataArray, pd.DataFrame, pd.DataFrame]:
    """(cube, training occurrences on the grid, independent test records with ``row``/``col``)."""
    base = DATA / "kuenm2_myrcia_cmip6"
    cube = ingest_climate(base / "Current_variables.tif", "current", variables=["bio1", "bio7", "bio12", "bio15"])
    occurrences, _, _ = ingest_occurrences(base / "occurrences_train.csv", grid_of(cube), valid_mask(cube))
    test = pd.read_csv(base / "occurrences_independent_test.csv")
    cells = points_to_cells(test["x"], test["y"], grid_of(cube))
    return cube, occurrences, test.join(cells[["row", "col"]])


def load_mammals() -> tuple[xr.DataArray, xr.DataArray]:
    """(cube (5 bioclim, y, x), truth (species, y, x) uint8 1 presence / 0 absence / 255 no data)."""
    base = DATA / "biomod2_bioclim_mammals"
    cube = ingest_climate(base / "bioclim_current.tif", "current")
    table = pd.read_csv(base / "DataSpecies_presence_absence.csv")
    species = [c for c in table.columns if c not in ("X_WGS84", "Y_WGS84")]
    cells = points_to_cells(table["X_WGS84"], table["Y_WGS84"], grid_of(cube))
    truth = np.full((len(species), cube.sizes["y"], cube.sizes["x"]), 255, dtype="uint8")
    for i, s in enumerate(species):
        truth[i, cells["row"], cells["col"]] = table[s].to_numpy()
    truth[:, ~valid_mask(cube)] = 255
    return cube, xr.DataArray(truth, dims=("species", "y", "x"),
                              coords={"species": species, "y": cube["y"], "x": cube["x"]}, name="truth")


def load_orchids() -> tuple[xr.DataArray, pd.DataFrame]:
    """(cube (19 bioclim, y, x) at 0.5 degrees, occurrences: one row per species x occupied cell)."""
    cube = ingest_climate(DATA / "isimip_bioclim_global_0p5deg" / "bioclim_gswp3-w5e5_obsclim_1995.tif", "current")
    occurrences, _, _ = ingest_occurrences(DATA / "iucnn_orchids" / "training_occ.parquet", grid_of(cube),
                                           valid_mask(cube))
    return cube, occurrences


# --- runs ---------------------------------------------------------------------------------------------------------

def _row(model: str, aucs, tss=None, **extra) -> dict:
    aucs = np.asarray(aucs, dtype="float64")
    row = {"model": model, "mean_auc": round(float(np.nanmean(aucs)), 4) if np.isfinite(aucs).any() else None,
           "n_species": int(np.isfinite(aucs).sum())}
    if tss is not None:
        tss = np.asarray(tss, dtype="float64")
        row["mean_tss"] = round(float(np.nanmean(tss)), 4) if np.isfinite(tss).any() else None
    return {**row, **extra}


def _table(name: str, protocol: str, deep: dict, maxent: dict, seconds: float, more: list | None = None,
           **extra) -> dict:
    """The first row (the deep SDM) is the one checked against the target; ``more`` rows are for comparison."""
    difference = None
    if deep["mean_auc"] is not None and maxent["mean_auc"] is not None:
        difference = round(deep["mean_auc"] - maxent["mean_auc"], 4)
    return {"dataset": name, "protocol": protocol, "rows": [deep, maxent, *(more or [])],
            "auc_difference": difference,
            "target": f"deep SDM AUC - MaxEnt AUC >= {TARGETS[name]:+.2f}",
            "target_met": difference is not None and difference >= TARGETS[name] - 1e-9,
            "seconds": round(seconds, 1), **extra}


def run_myrcia(seeds: int = 5, threads: int | None = None, progress: bool = False, **deep) -> dict:
    """Deep SDM and MaxEnt on the 51 records; AUC of the 82 independent records vs the calibration area.

    For each seed the records' cells are split into training and validation blocks (no test blocks): the deep SDM
    stops early on the validation blocks, and then both models are refitted on every record (the deep SDM for the
    epochs that early stopping chose), as kuenm2 calibrates on all 51. Both are also scored as fitted on the
    training blocks alone (``split_only``). The means over seeds are reported.
    """
    started = time.perf_counter()
    cube, occurrences, test = load_myrcia()
    params = {**DEEP["myrcia"], **deep}
    shape = (cube.sizes["y"], cube.sizes["x"])
    background = valid_mask(cube)
    test = test[test["row"] >= 0]

    def independent(info, deep_key="scores"):
        """AUC of the independent records for the deep SDM's ``deep_key`` scores and MaxEnt's, as ``scores`` and
        ``baseline_scores``."""
        return {key: independent_test_auc(grid_scores(info, source, shape)[0], test["row"], test["col"], background)
                for key, source in (("scores", deep_key), ("baseline_scores", "baseline_scores"))}

    split_only, refit, epochs = [], [], []
    for seed in range(seeds):
        _, info = train_sdm(cube, occurrences, seed=seed, baseline="maxent", fractions=(0.8, 0.2, 0.0),
                            threads=threads, progress=progress, device="cpu", **params)
        # the evaluation fit: like MaxEnt here, trained on the training blocks only ("scores" is the refit on the
        # training and validation blocks)
        split_only.append(independent(info, "evaluation_scores"))
        held = info["metrics"]["records"]
        epochs.append(info["metrics"]["best_epoch"] + 1)
        # no validation blocks: every epoch counts as the best, so training runs exactly the chosen epochs
        _, info = train_sdm(cube, occurrences, seed=seed, baseline="maxent", fractions=(1.0, 0.0, 0.0),
                            threads=threads, progress=progress, device="cpu", **{**params, "epochs": epochs[-1]})
        refit.append(independent(info))
    split_only, refit = pd.DataFrame(split_only), pd.DataFrame(refit)
    protocol = (f"{len(occurrences)} occupied cells of the 51 records; deep SDM epochs chosen on validation blocks "
                f"of {params['block_cells']} cells ({held['train']} training + {held['validation']} validation "
                f"cells), then both refitted on all; {len(test)} independent records vs {int(background.sum())} "
                f"calibration-area cells; mean over {seeds} seeds")
    return _table("myrcia", protocol,
                  _row("deep SDM", [refit["scores"].mean()], epochs=epochs,
                       per_seed=refit["scores"].round(4).tolist()),
                  _row(MAXENT, [refit["baseline_scores"].mean()],
                       per_seed=refit["baseline_scores"].round(4).tolist()),
                  time.perf_counter() - started,
                  split_only={"deep_sdm": round(float(split_only["scores"].mean()), 4),
                              "maxent": round(float(split_only["baseline_scores"].mean()), 4),
                              "note": "both fitted on the training blocks only (about 80 % of the cells)"})


MYRCIA_CANDIDATES = {
    "residual MLP (64 wide, 2 blocks; the data set's setting)": {},
    "additive, 8 units per input": {"additive": 8},
    "additive, 16 units per input": {"additive": 16},
    "additive, 32 units per input": {"additive": 32},
    "residual MLP, target-group share 0 (uniform background)": {"target_group": 0.0},
}
"""Architectures :func:`select_myrcia` compares on inner blocks of the training records."""


def select_myrcia(seeds: int = 10, threads: int | None = None) -> dict:
    """Choose the Myrcia network on the training records only: for each seed the 42 record cells' blocks are split
    60 / 20 / 20 % into training, validation (early stopping) and inner test blocks, each candidate of
    :data:`MYRCIA_CANDIDATES` (on :data:`DEEP` ``["myrcia"]``) and MaxEnt are fitted on the training blocks, and the
    AUC of the inner test blocks' records against their cells is averaged over seeds. The independent test records
    are not read. Returns ``{candidate: mean AUC}`` with ``per_seed`` lists."""
    cube, occurrences, _ = load_myrcia()
    scores = {name: [] for name in [*MYRCIA_CANDIDATES, MAXENT]}
    for seed in range(seeds):
        for i, (name, params) in enumerate(MYRCIA_CANDIDATES.items()):
            _, info = train_sdm(cube, occurrences, seed=seed, baseline="maxent" if i == 0 else "none",
                                fractions=(0.6, 0.2, 0.2), threads=threads, progress=False, device="cpu",
                                **{**DEEP["myrcia"], **params})
            test = info["metrics"]["test"]
            scores[name].append(test["deep_sdm"]["mean_auc"])
            if i == 0:
                scores[MAXENT].append(test["baseline"]["mean_auc"])
    return {name: {"mean_auc": round(float(np.nanmean(v)), 4), "per_seed": [round(float(x), 4) for x in v]}
            for name, v in scores.items()}


def mammal_records(truth: xr.DataArray, fraction: float, seed: int, minimum: int = 5) -> pd.DataFrame:
    """Presence-only records: a random ``fraction`` (at least ``minimum``) of each species' true presence cells."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in truth["species"].values:
        rows, cols = np.nonzero(truth.sel(species=s).values == 1)
        n = min(len(rows), max(minimum, int(round(fraction * len(rows)))))
        pick = rng.choice(len(rows), size=n, replace=False)
        parts.append(pd.DataFrame({"species": str(s), "row": rows[pick], "col": cols[pick]}))
    return pd.concat(parts, ignore_index=True)


def run_mammals(repeats: int = 3, fraction: float = 0.5, threads: int | None = None, progress: bool = False,
                **deep) -> dict:
    """Presence-only training on sampled true presences; AUC / TSS against the truth of the test blocks."""
    started = time.perf_counter()
    cube, truth = load_mammals()
    shape = (cube.sizes["y"], cube.sizes["x"])
    valid = valid_mask(cube)
    params = {**DEEP["mammals"], **deep}
    per = {"deep": [], "maxent": []}
    for seed in range(repeats):
        records = mammal_records(truth, fraction, seed)
        _, info = train_sdm(cube, records, seed=seed, baseline="maxent", threads=threads, progress=progress,
                            device="cpu", **params)
        masks = split_cells(info["split"], valid)
        # the evaluation fit: like MaxEnt, trained on the training blocks only (the stored model's "scores" come
        # from the refit on every record, whose presences in the test blocks are the truth scored here)
        for key, name in (("evaluation_scores", "deep"), ("baseline_scores", "maxent")):
            scores = grid_scores(info, key, shape)
            for i, s in enumerate(info["species"]):
                true = truth.sel(species=s).values
                test = masks["test"] & (true != 255)
                skill = {"auc": np.nan, "tss": np.nan}
                if 0 < true[test].sum() < test.sum() and np.isfinite(scores[i][test]).all():
                    threshold = _validation_threshold(scores[i], records[records["species"] == s], masks)
                    skill = presence_absence_skill(scores[i][test], true[test], threshold)
                per[name].append({"seed": seed, "species": s, **skill})
    tables = {k: pd.DataFrame(v) for k, v in per.items()}
    # a species-split pair counts only when both models could be evaluated on it
    both = tables["deep"]["auc"].notna() & tables["maxent"]["auc"].notna()
    by_species = {k: t[both].groupby("species")[["auc", "tss"]].mean() for k, t in tables.items()}
    protocol = (f"{int(fraction * 100)} % of the true presence cells as presence-only records, every land cell as "
                f"background; AUC / TSS vs true presence/absence in test blocks of {params['block_cells']} cells; "
                f"mean over species of the mean over {repeats} split seeds")
    per_species = {s: {"deep_auc": round(float(by_species["deep"].loc[s, "auc"]), 4),
                       "maxent_auc": round(float(by_species["maxent"].loc[s, "auc"]), 4),
                       "deep_tss": round(float(by_species["deep"].loc[s, "tss"]), 4),
                       "maxent_tss": round(float(by_species["maxent"].loc[s, "tss"]), 4)}
                   for s in by_species["deep"].index}
    return _table("mammals", protocol, _row("deep SDM", by_species["deep"]["auc"], by_species["deep"]["tss"]),
                  _row(MAXENT, by_species["maxent"]["auc"], by_species["maxent"]["tss"]),
                  time.perf_counter() - started, per_species=per_species)


def run_orchids(seed: int = 0, min_records: int = 5, min_eval_records: int = 10, climate_only: bool = True,
                maxent_location: bool = False, threads: int | None = None, progress: bool = False,
                **deep) -> dict:
    """Joint deep SDM on all orchids with >= ``min_records`` cells; per-species test AUC vs MaxEnt.

    The deep SDM uses the climate and a location encoding; MaxEnt the climate (as kuenm2 / ENMeval users run it).
    With ``climate_only`` the deep SDM is also trained on the climate alone, on the same split, for comparison;
    with ``maxent_location`` MaxEnt is also fitted on the deep SDM's inputs (climate + location; about 20 minutes).
    """
    started = time.perf_counter()
    cube, occurrences = load_orchids()
    sites = occurrences.groupby("species").size()
    species = sorted(sites.index[sites >= min_records])
    evaluated = sorted(sites.index[sites >= min_eval_records])
    params = {**DEEP["orchids"], **deep}

    def per_species(test, key):
        return np.array([np.nan if test[key]["per_species"][s]["auc"] is None else test[key]["per_species"][s]["auc"]
                         for s in evaluated])

    _, info = train_sdm(cube, occurrences, species=species, seed=seed, baseline="maxent",
                        baseline_species=evaluated, threads=threads, progress=progress, device="cpu", **params)
    test = info["metrics"]["test"]
    aucs = {"deep": per_species(test, "deep_sdm"), "maxent": per_species(test, "baseline")}
    both = np.isfinite(aucs["deep"]) & np.isfinite(aucs["maxent"])
    more = []
    if climate_only and params.get("coordinates"):
        _, climate = train_sdm(cube, occurrences, species=species, seed=seed, baseline="none", threads=threads,
                               progress=progress, device="cpu", **{**params, "coordinates": 0})
        assert np.array_equal(climate["split"], info["split"])  # the same blocks
        more.append(_row("deep SDM (joint, climate only)", per_species(climate["metrics"]["test"], "deep_sdm")[both],
                         epochs=climate["metrics"]["epochs_run"],
                         train_seconds=climate["metrics"]["train_seconds"]))
    if maxent_location and params.get("coordinates"):
        more.append(_row(MAXENT + ", climate + location",
                         _maxent_with_location(cube, occurrences, species, info, params["coordinates"],
                                               np.isin(species, evaluated), seed)[np.isin(species, evaluated)][both]))
    location = f"climate + location ({params['coordinates']} harmonics)" if params.get("coordinates") else "climate"
    protocol = (f"{len(species)} species with >= {min_records} occupied 0.5-degree cells trained jointly; test AUC "
                f"(records vs test-block cells, blocks of {params['block_cells']} cells) over the species with >= "
                f"{min_eval_records} cells and a test record")
    return _table("orchids", protocol,
                  _row(f"deep SDM (joint, {location})", aucs["deep"][both], epochs=info["metrics"]["epochs_run"],
                       train_seconds=info["metrics"]["train_seconds"]),
                  _row(MAXENT + ", climate", aucs["maxent"][both], fit_seconds=test["baseline"]["fit_seconds"]),
                  time.perf_counter() - started, more=more)


def _maxent_with_location(cube, occurrences, species, info, harmonics, fit, seed) -> np.ndarray:
    """Test AUC per species of MaxEnt fitted on climate + location layers on ``info``'s split."""
    from sdm.model import coordinate_layers
    from sdm.train import auc_per_species, fit_baseline, training_table

    cube = xr.concat([cube, coordinate_layers(cube, harmonics).where(np.isfinite(cube).all("variable"))],
                     dim="variable", join="override", combine_attrs="drop_conflicts")
    training = training_table(cube, occurrences, species)
    presences = training.presences
    cell_split = info["split"][training.cell_rows, training.cell_cols]
    pair_split = cell_split[presences[:, 0]]
    test = [presences[(pair_split == SPLITS["test"]) & (presences[:, 1] == s), 0] for s in range(len(species))]
    fit = fit & np.array([len(t) > 0 for t in test])
    _, scores = fit_baseline(training.values, presences[pair_split == SPLITS["train"]], len(species),
                             np.flatnonzero(cell_split == SPLITS["train"]), "maxent", seed, fit=fit, progress=False)
    aucs = auc_per_species(np.nan_to_num(scores, nan=0.0), test, np.flatnonzero(cell_split == SPLITS["test"]))
    aucs[~fit] = np.nan
    return aucs


def schema_defaults(section: str = "sdm") -> dict:
    """The config schema's defaults of one section: what a config that names no setting runs with."""
    import yaml

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return {k: v["default"] for k, v in schema["properties"][section]["properties"].items() if "default" in v}


def withheld_blocks(occurrences: pd.DataFrame, cube: xr.DataArray, degrees: float, share: float,
                    seed: int) -> np.ndarray:
    """bool per occurrence row: its cell lies in one of the ``share`` of ``degrees``-degree blocks (among those
    holding records) drawn at random (seeded) to be withheld."""
    lon = cube["x"].values[occurrences["col"].to_numpy()]
    lat = cube["y"].values[occurrences["row"].to_numpy()]
    block = np.floor(lon / degrees).astype(int) * 1000 + np.floor(lat / degrees).astype(int)
    blocks = np.unique(block)
    chosen = np.random.default_rng(seed).choice(blocks, size=int(round(share * len(blocks))), replace=False)
    return np.isin(block, chosen)


def run_orchid_transfer(seed: int = 11, share: float = 0.2, degrees: float = 5.0, threads: int | None = None,
                        progress: bool = False, maxent: bool = True, **overrides) -> dict:
    """Transfer to places never seen: withhold every orchid record in ``share`` of the ``degrees``-degree blocks
    holding records, run the pipeline's training (schema defaults: a config naming only the records and the present
    climate) and prediction on the rest, and score the **stored** current predictions (uint8 codes, decoded) at the
    withheld records against every land cell; elapid MaxEnt fitted per species on the same retained records.

    Scored: species trained (>= ``min_records`` retained cells) with at least one withheld record cell. Reports mean
    and median AUC and the share of species below 0.8.
    """
    import tempfile

    from sdm.predict import open_predictions, predict_scenario
    from sdm.train import fit_baseline, run_training, training_table

    started = time.perf_counter()
    cube, occurrences = load_orchids()
    params = {**schema_defaults(), "baseline": "none", "device": "cpu", **overrides}
    withheld = withheld_blocks(occurrences, cube, degrees, share, seed)
    retained, held = occurrences[~withheld], occurrences[withheld]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        metrics = run_training(cube, retained, params, model_path=tmp / "model.pt", split_path=tmp / "split.tif",
                               threads=threads)
        predict_scenario(cube, tmp / "model.pt", tmp / "current.zarr", scenario="current", threads=threads,
                         device="cpu", progress=progress)
        stored = open_predictions(tmp / "current.zarr")["suitability"].load()
    species = [str(s) for s in stored["species"].values]
    valid = valid_mask(cube)
    scored = [s for s in species if (held["species"] == s).any()]
    deep_auc = {}
    for s in scored:
        grid = stored.sel(species=s).values
        cells = held[held["species"] == s]
        deep_auc[s] = independent_test_auc(grid, cells["row"].to_numpy(), cells["col"].to_numpy(), valid)
    maxent_auc = {}
    if maxent:
        training = training_table(cube, retained, scored)  # every valid cell (0.5 degree grid): all background
        _, scores = fit_baseline(training.values, training.presences, len(scored), np.arange(len(training.values)),
                                 "maxent", seed, progress=progress)
        for i, s in enumerate(scored):
            grid = np.full(valid.shape, np.nan)
            grid[training.cell_rows, training.cell_cols] = scores[:, i]
            cells = held[held["species"] == s]
            maxent_auc[s] = independent_test_auc(grid, cells["row"].to_numpy(), cells["col"].to_numpy(), valid)
    # the same species for both: those each method could score (a species without an AUC is counted, not dropped
    # from one side only)
    both = [s for s in scored if np.isfinite(deep_auc[s]) and (not maxent or np.isfinite(maxent_auc[s]))]
    rows = [_transfer_row("deep SDM, stored predictions (pipeline defaults)", {s: deep_auc[s] for s in both})]
    if maxent:
        rows.append(_transfer_row(MAXENT + ", same retained records", {s: maxent_auc[s] for s in both}))
    unscored = f"; {len(scored) - len(both)} left out, without an AUC from one method" if len(both) < len(scored) else ""
    protocol = (f"orchids: every record in {share:.0%} of the {degrees:g}-degree blocks holding records withheld "
                f"(seed {seed}; {int(withheld.sum())} of {len(occurrences)} species-cells); {len(scored)} species "
                f"trained with a withheld record{unscored}; AUC of withheld record cells vs every land cell")
    table = {"dataset": "orchids_transfer", "protocol": protocol, "rows": rows,
             "seconds": round(time.perf_counter() - started, 1), "deep_epochs": metrics["epochs_run"],
             "per_species": {s: {"deep_auc": round(deep_auc[s], 4),
                                 **({"maxent_auc": round(maxent_auc[s], 4)} if maxent else {})} for s in scored}}
    if maxent:
        table["auc_difference"] = round(rows[0]["mean_auc"] - rows[1]["mean_auc"], 4)
        table["target"] = 0.02
        table["target_met"] = table["auc_difference"] >= 0.02 and rows[0]["below_0.8"] < rows[1]["below_0.8"]
    return table


def _transfer_row(model: str, aucs: dict) -> dict:
    """Mean, median and species below 0.8 of per-species AUCs. Every species must have one: a method that could not
    score a species the other scored would be compared on other species (``run_orchid_transfer`` pairs them)."""
    unscored = sorted(s for s, v in aucs.items() if not np.isfinite(v))
    if unscored:
        raise ValueError(f"{model}: no AUC for {len(unscored)} species ({', '.join(unscored[:5])}); compare both "
                         f"methods on the species both scored")
    values = np.array(list(aucs.values()), dtype=float)
    return {"model": model, "mean_auc": round(float(values.mean()), 4), "median_auc": round(float(np.median(values)), 4),
            "below_0.8": int((values < 0.8).sum()), "share_below_0.8": round(float((values < 0.8).mean()), 4),
            "n_species": int(len(values)), "mean_tss": None}


def distance_to_records_km(grid: xr.DataArray, valid: np.ndarray, occurrences: pd.DataFrame) -> np.ndarray:
    """(y, x) great-circle distance (km) from each valid cell's centre to the nearest cell holding a record of any
    species (NaN off the valid cells); haversine nearest neighbours (``sklearn.neighbors.BallTree``)."""
    from sklearn.neighbors import BallTree

    from sdm.grid import cells_to_lonlat

    xx, yy = np.meshgrid(grid["x"].values, grid["y"].values)
    lon, lat = cells_to_lonlat(xx[valid], yy[valid], grid)
    cells = occurrences[["row", "col"]].drop_duplicates()
    r_lon, r_lat = cells_to_lonlat(grid["x"].values[cells["col"]], grid["y"].values[cells["row"]], grid)
    tree = BallTree(np.radians(np.c_[r_lat, r_lon]), metric="haversine")
    distance, _ = tree.query(np.radians(np.c_[lat, lon]), k=1)
    out = np.full(valid.shape, np.nan)
    out[valid] = distance[:, 0] * 6371.0088
    return out


def richness_by_distance(presence: np.ndarray, distance_km: np.ndarray, near_km: float = 250,
                         far_km: float = 1000) -> dict:
    """Mean predicted richness (presence: bool (species, y, x)) of valid cells within ``near_km`` of a record and
    beyond ``far_km``, and their ratio (issue 11's target: far <= 10 % of near)."""
    richness = presence.sum(axis=0).astype("float64")
    near, far = distance_km <= near_km, distance_km > far_km
    out = {"near_cells": int(near.sum()), "far_cells": int(far.sum()),
           "near_richness": round(float(richness[near].mean()), 3), "far_richness": round(float(richness[far].mean()), 3)}
    out["far_over_near"] = round(out["far_richness"] / out["near_richness"], 4) if out["near_richness"] else None
    return out


def run_orchid_richness(results: Path = ROOT / "results", maxent_species: int = 100, seed: int = 0,
                        progress: bool = False) -> dict:
    """Richness far from any record vs near records on a finished orchid run (``results``: its results folder):
    the deep SDM's stored current presence (the run's assemblage), and, on a random ``maxent_species`` of the
    trained species, the same deep presence beside elapid MaxEnt (per species, every land cell as background, a
    max-TSS threshold on its records vs the background; fitting all 989 would take hours here), and MaxEnt's
    presence kept to the run's accessible areas when the run has them (``maxent_subset_accessible``)."""
    from sdm.accessible import AccessibleArea, restrict_presence
    from sdm.climate import open_cube
    from sdm.model import load_checkpoint
    from sdm.predict import open_predictions
    from sdm.train import fit_baseline, max_tss_threshold, training_table

    results = Path(results)
    cube = open_cube(results / "cubes" / "current.zarr").load()
    occurrences = pd.read_parquet(results / "occurrences.parquet")
    stored = open_predictions(results / "predictions" / "current.zarr")
    presence = stored["presence"].values
    valid = valid_mask(cube)
    distance = distance_to_records_km(cube, valid, occurrences)
    table = {"dataset": "orchids_richness", "deep_all_species": richness_by_distance(presence, distance),
             "species": int(presence.shape[0])}
    _, checkpoint = load_checkpoint(results / "sdm" / "model.pt")
    trained = [str(s) for s in stored["species"].values]
    subset = sorted(np.random.default_rng(seed).choice(trained, size=min(maxent_species, len(trained)),
                                                       replace=False).tolist())
    index = [trained.index(s) for s in subset]
    table["deep_subset"] = richness_by_distance(presence[index], distance)
    training = training_table(cube, occurrences, subset)  # not `table`: that holds this function's results
    presences, n_rows = training.presences, len(training.values)
    _, scores = fit_baseline(training.values, presences, len(subset), np.arange(n_rows), "maxent", seed,
                             progress=progress)
    maxent_presence = np.zeros((len(subset), *valid.shape), dtype=bool)
    background = np.random.default_rng(seed).choice(n_rows, size=min(10000, n_rows), replace=False)
    for i in range(len(subset)):
        cells = presences[presences[:, 1] == i, 0]
        if len(cells) == 0 or np.isnan(scores[:, i]).all():
            continue
        threshold, _ = max_tss_threshold(scores[cells, i], scores[background, i])
        maxent_presence[i, training.cell_rows, training.cell_cols] = scores[:, i] >= threshold
    table["maxent_subset"] = richness_by_distance(maxent_presence, distance)
    area = AccessibleArea.from_checkpoint(checkpoint)
    if area is not None:  # the same accessible area as the deep SDM's presence: same species, same cells
        table["accessible_area_km"] = round(area.distance_km, 1)
        sub_area = AccessibleArea.from_checkpoint({"species": subset, "accessible": _subset_entry(checkpoint, index)})
        codes = xr.DataArray(maxent_presence.astype("uint8"), dims=("species", "y", "x"),
                             coords={"species": subset, "y": cube["y"], "x": cube["x"]}).rio.write_crs(cube.rio.crs)
        table["maxent_subset_accessible"] = richness_by_distance(restrict_presence(codes, sub_area).values == 1,
                                                                 distance)
    table["subset_species"] = len(subset)
    return table


def _subset_entry(checkpoint: dict, index: list[int]) -> dict:
    """The checkpoint's accessible-area entry for the species at ``index`` (renumbered 0..len(index)-1)."""
    entry = checkpoint["accessible"]
    species_index = np.asarray(entry["species_index"])
    keep = np.isin(species_index, index)
    renumber = {old: new for new, old in enumerate(index)}
    return {**entry, "lonlat": np.asarray(entry["lonlat"])[keep],
            "species_index": np.array([renumber[i] for i in species_index[keep]])}


RUNS = {"myrcia": run_myrcia, "mammals": run_mammals, "orchids": run_orchids,
        "orchids_transfer": run_orchid_transfer}


def sdm_skill_tables(datasets=DATASETS, threads: int | None = None, progress: bool = False) -> dict:
    """One table per data set: the deep SDM and MaxEnt rows (mean AUC, TSS where there is truth, n species), the
    AUC difference and whether issue 5's target is met."""
    return {name: RUNS[name](threads=threads, progress=progress) for name in datasets}


def format_table(table: dict) -> str:
    transfer = all("median_auc" in row for row in table["rows"])  # the transfer split also reports these
    extra = f" {'median AUC':>11} {'below 0.8':>10}" if transfer else ""
    lines = [f"## {table['dataset']}: {table['protocol']}",
             f"{'model':<52} {'mean AUC':>9} {'mean TSS':>9} {'species':>8}{extra}"]
    for row in table["rows"]:
        tss = row.get("mean_tss")
        line = (f"{row['model']:<52} {row['mean_auc'] if row['mean_auc'] is not None else 'n/a':>9} "
                f"{tss if tss is not None else '-':>9} {row['n_species']:>8}")
        if transfer:
            line += f" {row['median_auc']:>11} {row['below_0.8']:>10}"
        lines.append(line)
    if "split_only" in table:
        lines.append(f"fitted on the training blocks only: deep SDM {table['split_only']['deep_sdm']}, "
                     f"MaxEnt {table['split_only']['maxent']}")
    if "per_species" in table:
        lines.append("per species (deep / MaxEnt AUC): " + ", ".join(
            f"{s} {v['deep_auc']:.3f} / {v['maxent_auc']:.3f}" for s, v in table["per_species"].items()))
    lines.append(f"AUC difference {table['auc_difference']:+.4f} (target {table['target']}): "
                 f"{'met' if table['target_met'] else 'MISSED'}; {table['seconds']:.0f} s")
    return "\n".join(lines)


ORCHID_CANDIDATES = {
    "defaults (MaxEnt loss, target-group share 0.8)": {},
    "target-group share 0": {"target_group": 0.0},
    "target-group share 0.5": {"target_group": 0.5},
    "logistic loss, target-group share 0": {"loss": "logistic", "target_group": 0.0},
    "256 wide, 4 blocks": {"hidden": 256, "blocks": 4},
    "input noise 0.1": {"input_noise": 0.1},
    "ensemble of 3, target-group share 0": {"target_group": 0.0, "members": 3},
}
"""Settings :func:`select_orchids` compares on inner blocks (climate only, on :data:`DEEP` ``["orchids"]``)."""


def select_orchids(seeds=(1, 2), threads: int | None = None, outer: bool = True) -> dict:
    """Choose the orchids' climate-only deep SDM on training data only, then score the choice on the test blocks.

    The test blocks of :func:`run_orchids`'s split (seed 0) are removed from the cube and the records; the rest is
    split again in blocks (``seeds``) into training, validation and inner test blocks, and every candidate of
    :data:`ORCHID_CANDIDATES` is scored by the mean AUC of the inner test blocks' records against their cells (the
    species with >= 10 remaining cells and an inner test record). With ``outer``, the best candidate is then fitted
    on run_orchids' split beside MaxEnt (about 16 minutes) and both are scored on the test blocks: a nested figure.
    """
    cube, occurrences = load_orchids()
    params = {**DEEP["orchids"], "coordinates": 0}
    sites = occurrences.groupby("species").size()
    species = sorted(sites.index[sites >= 5])
    _, info = train_sdm(cube, occurrences, species=species, seed=0, baseline="none", threads=threads,
                        progress=False, device="cpu", refit=False, keep_scores=False, accessible_km=None,
                        **{**params, "epochs": 1})
    test_cells = info["split"] == SPLITS["test"]
    inner_cube = cube.where(~test_cells[None])
    inner = occurrences[~test_cells[occurrences["row"].to_numpy(), occurrences["col"].to_numpy()]]
    inner_sites = inner.groupby("species").size()
    inner_species = sorted(inner_sites.index[inner_sites >= 5])
    inner_evaluated = sorted(inner_sites.index[inner_sites >= 10])
    scores = {}
    for name, extra in ORCHID_CANDIDATES.items():
        per_seed = []
        for seed in seeds:
            _, fit = train_sdm(inner_cube, inner, species=inner_species, seed=seed, baseline="none",
                               threads=threads, progress=False, device="cpu", refit=False, accessible_km=None,
                               **{**params, **extra})
            per = fit["metrics"]["test"]["deep_sdm"]["per_species"]
            per_seed.append(float(np.nanmean([np.nan if per[s]["auc"] is None else per[s]["auc"]
                                              for s in inner_evaluated])))
        scores[name] = {"inner_mean_auc": round(float(np.mean(per_seed)), 4),
                        "per_seed": [round(x, 4) for x in per_seed]}
        print(name, scores[name], flush=True)
    best = max(scores, key=lambda name: scores[name]["inner_mean_auc"])
    result = {"inner": scores, "chosen": best}
    if outer:
        result["outer"] = run_orchids(climate_only=False, threads=threads,
                                      **{"coordinates": 0, **ORCHID_CANDIDATES[best]})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, action="append",
                        help="run only this data set (repeatable); default: all four")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the tables to this JSON file")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--maxent-location", action="store_true",
                        help="orchids: also fit MaxEnt on climate + location (adds about 20 minutes)")
    parser.add_argument("--select-myrcia", action="store_true",
                        help="choose the Myrcia network on inner blocks of its training records (10 seeds), then exit")
    parser.add_argument("--select-orchids", action="store_true",
                        help="choose the orchids' climate-only settings on inner blocks, score the choice on the test "
                             "blocks beside MaxEnt (about 30 minutes), then exit")
    parser.add_argument("--richness", type=Path, metavar="RESULTS",
                        help="richness far from records vs near on a finished run's results folder (deep + MaxEnt on "
                             "100 species), then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.richness:
        print(json.dumps(run_orchid_richness(args.richness, progress=args.progress), indent=2))
        return 0
    if args.select_myrcia:
        print(json.dumps(select_myrcia(threads=args.threads), indent=2))
        return 0
    if args.select_orchids:
        result = select_orchids(threads=args.threads)
        print(json.dumps(result["inner"], indent=2), "\nchosen:", result["chosen"])
        print(format_table(result["outer"]))
        return 0
    tables = {}
    for name in args.dataset or DATASETS:
        extra = {"maxent_location": True} if name == "orchids" and args.maxent_location else {}
        tables[name] = RUNS[name](threads=args.threads, progress=args.progress, **extra)
        print(format_table(tables[name]), flush=True)
        print()
    if args.json:
        args.json.write_text(json.dumps(tables, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
