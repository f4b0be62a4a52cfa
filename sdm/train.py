"""Training the joint deep SDM on presence-only records with background points, spatial-block validation, metrics.

Loss: presence-background logistic loss shared by all species. Each step draws presence records species-balanced
(so that rare species are not drowned out by common ones) and background cells at random over the training blocks;
every species' output is pushed down at background cells and up at its own records. Early stopping watches the mean
per-species AUC on validation blocks; final metrics are computed on test blocks that took no part in training or
early stopping.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from sdm.model import ResidualMLP, coordinate_layers, resolve_device, standardise

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "validation": 1, "test": 2}
EVAL_CELLS = 200_000
"""Background cells per split scored for validation and test metrics, at most (see :func:`train_sdm`)."""
ROWS_PER_PASS = 1_000_000
"""Grid cells standardised or scored by the baseline at a time (no float64 copy of a km grid)."""
MIN_STEPS_PER_EPOCH = 20
"""Steps between validation checks, at least: with one step per epoch (51 records, batches of 512) early stopping
would judge the model after every step and stop long before it has learnt (measured on Myrcia and the mammals)."""


def spatial_blocks(shape: tuple[int, int], block_cells: int, seed: int,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   records: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Split the grid into square blocks of ``block_cells`` cells and assign each to train / validation / test.

    Returns int8 (y, x) with the codes of :data:`SPLITS`. Whole blocks are held out so that evaluation measures
    transfer to unseen places, not interpolation between neighbouring records. Blocks are taken in random order
    into validation, then test, until each holds its fraction of the (valid) cells and, when ``records`` (y, x
    counts) is given, of the records too: sparse, clustered records would otherwise leave a split without any.
    """
    ny, nx = -(-shape[0] // block_cells), -(-shape[1] // block_cells)
    n_blocks = ny * nx
    if n_blocks < 3:
        raise ValueError(f"sdm.block_cells={block_cells} leaves {n_blocks} blocks on a {shape} grid; need >= 3")
    rows = np.arange(shape[0]) // block_cells
    cols = np.arange(shape[1]) // block_cells
    block_of = rows[:, None] * nx + cols[None, :]
    cells = np.ones(shape) if valid is None else valid.astype("float64")
    shares = [np.bincount(block_of.ravel(), weights=cells.ravel(), minlength=n_blocks)]
    if records is not None and records.sum() > 0:
        shares.append(np.bincount(block_of.ravel(), weights=records.ravel(), minlength=n_blocks))
    shares = [s / s.sum() for s in shares if s.sum() > 0] or [np.full(n_blocks, 1 / n_blocks)]
    order = np.random.default_rng(seed).permutation(n_blocks)
    block_split = np.zeros(n_blocks, dtype="int8")
    taken = np.zeros(len(shares))
    position = 0
    for code, fraction in ((SPLITS["validation"], fractions[1]), (SPLITS["test"], fractions[2])):
        taken[:] = 0
        while position < n_blocks - 1 and (taken < fraction).any():
            block = order[position]
            block_split[block] = code
            taken += [s[block] for s in shares]
            position += 1
    return block_split[block_of]


def auc_per_species(scores: np.ndarray, presence_cells: list[np.ndarray], background: np.ndarray) -> np.ndarray:
    """AUC of each species' scores at its presence cells against background cells (NaN without presences).

    ``scores`` is (cells, species); ``presence_cells[s]`` and ``background`` are row indices into it. Ties count
    half (the Mann-Whitney statistic, as ``sklearn.metrics.roc_auc_score``); one sort per species.
    """
    aucs = np.full(len(presence_cells), np.nan)
    if len(background) == 0:
        return aucs
    for s, cells in enumerate(presence_cells):
        if len(cells) == 0:
            continue
        back = np.sort(scores[background, s])
        pres = scores[cells, s]
        below = np.searchsorted(back, pres, side="left")
        ties = np.searchsorted(back, pres, side="right") - below
        aucs[s] = (below.sum() + 0.5 * ties.sum()) / (len(pres) * len(back))
    return aucs


def max_tss_threshold(scores_presence: np.ndarray, scores_background: np.ndarray) -> tuple[float, float]:
    """Threshold maximising TSS = sensitivity + specificity - 1, and that TSS."""
    if len(scores_presence) == 0 or len(scores_background) == 0:
        return float("nan"), float("nan")
    candidates = np.unique(np.r_[scores_presence, scores_background])
    pres = np.sort(scores_presence)
    back = np.sort(scores_background)
    sensitivity = 1 - np.searchsorted(pres, candidates, side="left") / len(pres)
    specificity = np.searchsorted(back, candidates, side="left") / len(back)
    tss = sensitivity + specificity - 1
    best = int(np.argmax(tss))
    return float(candidates[best]), float(tss[best])


def training_table(cube: xr.DataArray, occurrences: pd.DataFrame, species: list[str]):
    """Valid-cell climate matrix and each species' presence cells as indices into it.

    Returns ``(values (cells, variables) float32, cell_rows, cell_cols, presences)`` where ``presences`` is a
    (records, 2) int array of (cell index, species index).
    """
    data = np.asarray(cube.transpose("variable", "y", "x").values, dtype="float32")
    valid = np.isfinite(data).all(axis=0)
    cell_rows, cell_cols = np.nonzero(valid)
    index = np.full(valid.shape, -1, dtype="int64")
    index[cell_rows, cell_cols] = np.arange(len(cell_rows))
    values = np.ascontiguousarray(data[:, cell_rows, cell_cols].T)
    del data
    species_index = {s: i for i, s in enumerate(species)}
    occ = occurrences[occurrences["species"].isin(species_index)]
    cells = index[occ["row"].to_numpy(), occ["col"].to_numpy()]
    keep = cells >= 0
    presences = np.c_[cells[keep], occ["species"].map(species_index).to_numpy()[keep]].astype("int64")
    return values, cell_rows, cell_cols, presences


def _scores(model: ResidualMLP, x: torch.Tensor, batch: int = 65536) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            out.append(torch.sigmoid(model(x[start:start + batch])).float().cpu().numpy())
    model.train(was_training)  # restore the caller's mode: train_sdm returns its model in eval mode
    return np.concatenate(out) if out else np.zeros((0, model.hparams["n_species"]), dtype="float32")


def fit_baseline(values: np.ndarray, presences: np.ndarray, n_species: int, train_cells: np.ndarray,
                 method: str, seed: int, n_background: int = 10000,
                 fit: np.ndarray | None = None, progress: bool = True,
                 predict_rows: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """Per-species classical SDMs fitted on the same training records; returns (name, scores (cells, species)).

    ``fit`` (bool per species, default all) selects the species to fit; the others' scores stay NaN.
    ``predict_rows`` (default: all) are the rows of ``values`` scored, in that order.

    ``maxent``: elapid's MaxEnt (linear, quadratic, hinge features); ``logistic``: a scikit-learn logistic
    regression on linear + quadratic terms with class-balanced weights (fast, for many species).
    """
    rng = np.random.default_rng(seed)
    background = rng.choice(train_cells, size=min(n_background, len(train_cells)), replace=False)
    rows = np.arange(len(values)) if predict_rows is None else np.asarray(predict_rows)
    scores = np.full((len(rows), n_species), np.nan, dtype="float32")
    fit = np.ones(n_species, dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    if method == "maxent":
        import elapid
        for s in tqdm(np.flatnonzero(fit), desc="baseline maxent", leave=False, disable=not progress):
            cells = presences[presences[:, 1] == s, 0]
            cells = cells[np.isin(cells, train_cells)]
            if len(cells) < 2:
                continue
            x = np.r_[values[cells], values[background]]
            y = np.r_[np.ones(len(cells)), np.zeros(len(background))]
            model = elapid.MaxentModel(feature_types=["linear", "quadratic", "hinge"], use_lambdas="best",
                                       n_cpus=1)
            model.fit(x, y)
            scores[:, s] = model.predict(values[rows])
        return "elapid MaxEnt (linear, quadratic, hinge)", scores
    if method == "logistic":
        mean = values[train_cells].mean(0, dtype="float64")
        std = values[train_cells].std(0, dtype="float64") + 1e-9

        def design(index):
            z = (values[index] - mean) / std
            return np.c_[z, z**2]

        for s in np.flatnonzero(fit):
            cells = presences[presences[:, 1] == s, 0]
            cells = cells[np.isin(cells, train_cells)]
            if len(cells) < 2:
                continue
            x = np.r_[design(cells), design(background)]
            y = np.r_[np.ones(len(cells)), np.zeros(len(background))]
            clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=500)
            clf.fit(x, y)
            for start in range(0, len(rows), ROWS_PER_PASS):
                part = rows[start:start + ROWS_PER_PASS]
                scores[start:start + len(part), s] = clf.decision_function(design(part))
        return "logistic regression (linear + quadratic)", scores
    raise ValueError(f"sdm.baseline must be 'maxent', 'logistic' or 'none', got '{method}'")


def train_sdm(cube: xr.DataArray, occurrences: pd.DataFrame, *, species: list[str] | None = None,
              hidden: int = 256, blocks: int = 4, dropout: float = 0.1, epochs: int = 100, batch_size: int = 512,
              background_per_batch: int = 2048, learning_rate: float = 1e-3, weight_decay: float = 1e-5,
              patience: int = 10, block_cells: int = 20, seed: int = 0, device: str = "auto",
              baseline: str = "maxent", threads: int | None = None, progress: bool = True,
              fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), baseline_species: list[str] | None = None,
              quadratic: bool = False, members: int = 1, sampling_exponent: float = 0.0,
              target_group: float = 0.0, steps_per_epoch: int | None = None, coordinates: int = 0,
              eval_cells: int | None = EVAL_CELLS, input_noise: float = 0.0):
    """Train the joint SDM. Returns ``(model, info)``.

    ``info`` has ``species``, ``variables``, ``mean``, ``std``, ``thresholds`` (per species, max-TSS on
    validation blocks), ``split`` (int8 y, x; codes of :data:`SPLITS`) and ``metrics`` (held-out AUC / TSS of the
    deep SDM and of the baseline, per species and mean).

    ``fractions`` are the train / validation / test shares of the spatial blocks (a test share of 0 trains on
    everything but the validation blocks, for evaluation on independent data). The baseline is fitted for
    ``baseline_species`` (default: all) that have test records, or for all of them when there is no test split;
    its scores (cells, species; NaN where not fitted) are ``info["baseline_scores"]``.

    Model and sampling options: ``quadratic`` adds squared inputs, ``members`` trains a deep ensemble (see
    :class:`~sdm.model.ResidualMLP`); a species is drawn for a presence with probability proportional to its
    training records to the power ``sampling_exponent`` (0: every species as often, 1: every record as often);
    ``target_group`` is the share of background cells drawn from cells holding records of any species (observer-bias
    correction) instead of uniformly over the training blocks; ``steps_per_epoch`` defaults to one pass over the
    training records (at least :data:`MIN_STEPS_PER_EPOCH`, at most 200 steps). ``coordinates`` > 0 appends that
    many harmonics of a location encoding (:func:`~sdm.model.coordinate_layers`) to the climate inputs of the deep
    SDM (not of the baseline, which keeps the climate alone); the checkpoint then lists them among its variables and
    prediction supplies them with :func:`~sdm.model.with_coordinate_layers`.

    ``input_noise``: standard deviation of Gaussian noise added to the standardised inputs of every training batch
    (a smoothness prior on the response curves, for species with few records).

    ``eval_cells``: background cells per split scored for validation, thresholds and test metrics, at most; a
    larger split is sampled (seeded), records always scored. Memory then stays bounded on kilometre grids (scoring
    every cell of a 1.3e7-cell grid for 300 species would take 16 GB each epoch). ``info["scores"]`` holds the
    deep SDM's scores at the scored cells ``info["cell_rows"], info["cell_cols"]`` (every valid cell when no split
    was sampled). None: no sampling.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    np.random.seed(seed)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    climate_variables = [str(v) for v in cube["variable"].values]
    if coordinates:
        cube = xr.concat([cube, coordinate_layers(cube, coordinates).where(np.isfinite(cube).all("variable"))],
                         dim="variable", join="override", combine_attrs="drop_conflicts")
    variables = [str(v) for v in cube["variable"].values]
    if species is None:
        species = sorted(occurrences["species"].unique())
    if not species:
        raise ValueError("no species to train the SDM on (all were excluded by occurrence cleaning)")
    values, cell_rows, cell_cols, presences = training_table(cube, occurrences, species)
    record_counts = np.zeros((cube.sizes["y"], cube.sizes["x"]))
    np.add.at(record_counts, (cell_rows[presences[:, 0]], cell_cols[presences[:, 0]]), 1)
    valid = np.zeros_like(record_counts, dtype=bool)
    valid[cell_rows, cell_cols] = True
    split_map = spatial_blocks((cube.sizes["y"], cube.sizes["x"]), block_cells, seed, fractions=fractions,
                               records=record_counts, valid=valid)
    cell_split = split_map[cell_rows, cell_cols]
    split_cells = {name: np.flatnonzero(cell_split == code) for name, code in SPLITS.items()}
    if len(split_cells["train"]) == 0:
        raise ValueError("no training cells: the grid has no valid cell in the training blocks")

    mean = values[split_cells["train"]].mean(axis=0, dtype="float64")
    std = values[split_cells["train"]].std(axis=0, dtype="float64")
    std[std == 0] = 1.0
    x_all = torch.empty((len(values), len(variables)), dtype=torch.float32)
    for start in range(0, len(values), ROWS_PER_PASS):
        stop = start + ROWS_PER_PASS
        x_all[start:stop] = torch.from_numpy(standardise(values[start:stop], mean, std))
    x_all = x_all.to(dev)

    presence_split = cell_split[presences[:, 0]]
    train_pairs = presences[presence_split == SPLITS["train"]]
    if len(train_pairs) == 0:
        raise ValueError("no presence record falls in the training blocks; use smaller sdm.block_cells")
    n_species = len(species)
    by_species = [train_pairs[train_pairs[:, 1] == s, 0] for s in range(n_species)]
    counts = np.array([len(c) for c in by_species])
    offsets = np.r_[0, np.cumsum(counts)[:-1]]
    pooled = np.concatenate(by_species)  # each species' training cells, contiguous, for vectorised sampling
    trainable = counts > 0

    def presence_cells(code):
        pairs = presences[presence_split == code]
        return [pairs[pairs[:, 1] == s, 0] for s in range(n_species)]

    val_presences, test_presences = presence_cells(SPLITS["validation"]), presence_cells(SPLITS["test"])

    model = ResidualMLP(len(variables), n_species, hidden=hidden, blocks=blocks, dropout=dropout,
                        quadratic=quadratic, members=members).to(dev)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = np.random.default_rng(seed)
    train_cells = split_cells["train"]
    trainable_species = np.flatnonzero(trainable)
    species_weights = counts[trainable_species].astype("float64") ** sampling_exponent
    species_weights /= species_weights.sum()
    # target-group background: the training cells where any species was recorded, i.e. where observers went
    record_cells = np.unique(train_pairs[:, 0])
    n_target = int(round(target_group * background_per_batch)) if len(record_cells) else 0
    if steps_per_epoch is None:
        steps_per_epoch = min(200, max(MIN_STEPS_PER_EPOCH, int(np.ceil(len(train_pairs) / batch_size))))
    trainable_mask = torch.from_numpy(trainable).to(dev)
    # background cells scored for evaluation: every cell of a split, or a sample of at most eval_cells
    sample_rng = np.random.default_rng(seed + 7919)
    evaluated = {name: cells if eval_cells is None or len(cells) <= eval_cells else
                 np.sort(sample_rng.choice(cells, size=eval_cells, replace=False))
                 for name, cells in split_cells.items()}
    val_cells = evaluated["validation"]
    val_rows = np.union1d(val_cells, np.concatenate(val_presences))  # validation background + records
    val_local = [np.searchsorted(val_rows, c) for c in val_presences]  # records as rows of the validation scores
    val_background = np.searchsorted(val_rows, val_cells)
    x_val = x_all[torch.from_numpy(val_rows).to(dev)]

    best = {"auc": -np.inf, "epoch": -1, "state": None}
    history = []
    bar = tqdm(range(epochs), desc="train_sdm", disable=not progress, mininterval=2)
    for epoch in bar:
        model.train()
        total = 0.0
        for _ in range(steps_per_epoch):
            s = generator.choice(trainable_species, size=batch_size, p=species_weights)
            cells = pooled[offsets[s] + (generator.random(batch_size) * counts[s]).astype("int64")]
            bg = np.r_[generator.choice(train_cells, size=background_per_batch - n_target),
                       generator.choice(record_cells, size=n_target)] if n_target else \
                generator.choice(train_cells, size=background_per_batch)
            x = x_all[torch.from_numpy(np.r_[cells, bg]).to(dev)]
            if input_noise:
                x = x + input_noise * torch.randn_like(x)
            logits = model.member_logits(x)  # (members, batch, species)
            logits_pos, logits_bg = logits[:, :batch_size], logits[:, batch_size:]
            index = torch.from_numpy(s).to(dev)[None, :, None].expand(logits.shape[0], -1, 1)
            pos = logits_pos.gather(2, index).squeeze(2)
            # each member's loss, summed: the members learn independently from the same batches
            loss = (torch.nn.functional.softplus(-pos).mean(dim=1)
                    + torch.nn.functional.softplus(logits_bg).mean(dim=1)[:, trainable_mask].mean(dim=1)).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) / logits.shape[0]
        if len(val_cells):
            val_auc = float(np.nanmean(auc_per_species(_scores(model, x_val), val_local, val_background)))
        else:
            val_auc = float("nan")
        history.append({"epoch": epoch, "loss": total / steps_per_epoch, "validation_auc": val_auc})
        bar.set_postfix(loss=f"{total / steps_per_epoch:.4f}", val_auc=f"{val_auc:.3f}")
        if np.isnan(val_auc) or val_auc > best["auc"] + 1e-4:
            best = {"auc": val_auc, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif epoch - best["epoch"] >= patience:
            log.info("early stopping at epoch %d (best validation AUC %.4f at epoch %d)", epoch, best["auc"],
                     best["epoch"])
            break
    model.load_state_dict(best["state"])
    model.eval()
    del x_val
    scored = np.unique(np.r_[evaluated["train"], evaluated["validation"], evaluated["test"], presences[:, 0]])
    scores = _scores(model, x_all[torch.from_numpy(scored).to(dev)])
    del x_all

    def rows_of(cells):  # cell indices -> rows of ``scores``
        return np.searchsorted(scored, cells)

    by_species_rows = [rows_of(c) for c in by_species]
    val_presences, test_presences = [rows_of(c) for c in val_presences], [rows_of(c) for c in test_presences]
    val_bg, train_bg, test_bg = (rows_of(evaluated[name]) for name in ("validation", "train", "test"))
    thresholds = np.full(n_species, 0.5)
    for s in range(n_species):
        cells = val_presences[s] if len(val_presences[s]) else by_species_rows[s]
        background = val_bg if len(val_presences[s]) else train_bg
        if len(cells):
            thresholds[s], _ = max_tss_threshold(scores[cells, s], scores[background, s])

    deep_auc = auc_per_species(scores, test_presences, test_bg)
    deep_tss = np.array([
        tss_at(scores[test_presences[s], s], scores[test_bg, s], thresholds[s]) for s in range(n_species)
    ])
    metrics = {
        "device": str(dev),
        "n_species": n_species,
        "n_cells": int(len(values)),
        "records": {name: int((presence_split == code).sum()) for name, code in SPLITS.items()},
        "cells": {name: int(len(c)) for name, c in split_cells.items()},
        "evaluation_cells": {name: int(len(c)) for name, c in evaluated.items()},
        "block_cells": block_cells,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "validation_auc": best["auc"],
        "train_seconds": round(time.perf_counter() - started, 2),
        "history": history,
        "test": {"deep_sdm": summarise(species, deep_auc, deep_tss, test_presences)},
    }
    base_scores = None
    if baseline != "none":
        t0 = time.perf_counter()
        fit = np.ones(n_species, dtype=bool) if baseline_species is None else np.isin(species, baseline_species)
        if len(test_bg):  # only species that can be evaluated: MaxEnt takes about 1 s per species
            fit &= np.array([len(p) > 0 for p in test_presences])
        name, base_scores = fit_baseline(values[:, :len(climate_variables)],
                                         presences[presence_split == SPLITS["train"]], n_species, train_cells,
                                         baseline, seed, fit=fit, progress=progress, predict_rows=scored)
        base_auc = auc_per_species(np.nan_to_num(base_scores, nan=0.0), test_presences, test_bg)
        base_auc[np.isnan(base_scores).all(axis=0)] = np.nan
        base_tss = []
        for s in range(n_species):
            if np.isnan(base_scores[:, s]).all():
                base_tss.append(np.nan)
                continue
            thr, _ = max_tss_threshold(base_scores[val_presences[s], s], base_scores[val_bg, s])
            base_tss.append(tss_at(base_scores[test_presences[s], s], base_scores[test_bg, s], thr))
        metrics["test"]["baseline"] = summarise(species, base_auc, np.array(base_tss), test_presences)
        metrics["test"]["baseline"]["name"] = name
        metrics["test"]["baseline"]["fit_seconds"] = round(time.perf_counter() - t0, 2)
    info = {"species": list(species), "variables": variables, "mean": mean, "std": std, "thresholds": thresholds,
            "split": split_map, "metrics": metrics, "scores": scores, "cell_rows": cell_rows[scored],
            "cell_cols": cell_cols[scored], "baseline_scores": base_scores}
    return model, info


def tss_at(scores_presence: np.ndarray, scores_background: np.ndarray, threshold: float) -> float:
    """TSS (sensitivity + specificity - 1) of a threshold; NaN without presences or threshold."""
    if len(scores_presence) == 0 or len(scores_background) == 0 or not np.isfinite(threshold):
        return float("nan")
    return float((scores_presence >= threshold).mean() + (scores_background < threshold).mean() - 1)


def summarise(species: list[str], auc: np.ndarray, tss: np.ndarray, presences: list[np.ndarray]) -> dict:
    """Mean and per-species held-out AUC / TSS (species without held-out records are left out of the means)."""
    per_species = {
        s: {"auc": None if np.isnan(a) else round(float(a), 4), "tss": None if np.isnan(t) else round(float(t), 4),
            "test_records": int(len(p))}
        for s, a, t, p in zip(species, auc, tss, presences)
    }
    return {
        "mean_auc": None if np.all(np.isnan(auc)) else round(float(np.nanmean(auc)), 4),
        "mean_tss": None if np.all(np.isnan(tss)) else round(float(np.nanmean(tss)), 4),
        "species_evaluated": int(np.sum(~np.isnan(auc))),
        "per_species": per_species,
    }


OPTIONAL_PARAMS = ("weight_decay", "coordinates", "members", "quadratic", "sampling_exponent", "target_group",
                   "steps_per_epoch", "eval_cells", "input_noise")
"""train_sdm options that a config's ``sdm`` section may set (older configs and schemas lack them)."""


def run_training(cube: xr.DataArray, occurrences: pd.DataFrame, params: dict, *, model_path, split_path,
                 threads: int | None = None) -> dict:
    """Train with the config's ``sdm`` params, write the checkpoint and the split GeoTIFF; return metrics.

    Species with fewer than ``min_records`` occupied cells are not trained on and are listed in the metrics.
    The keys of :data:`OPTIONAL_PARAMS` are passed on when the params hold them (train_sdm's defaults otherwise).
    """
    from sdm.model import save_checkpoint

    sites = occurrences.groupby("species").size()
    species = sorted(sites.index[sites >= params["min_records"]])
    excluded = {s: int(n) for s, n in sites[sites < params["min_records"]].items()}
    if not species:
        raise ValueError(f"no species has >= sdm.min_records={params['min_records']} occupied cells; "
                         f"largest has {int(sites.max()) if len(sites) else 0}")
    model, info = train_sdm(
        cube, occurrences, species=species, hidden=params["hidden"], blocks=params["blocks"],
        dropout=params["dropout"], epochs=params["epochs"], batch_size=params["batch_size"],
        background_per_batch=params["background_per_batch"], learning_rate=params["learning_rate"],
        patience=params["patience"], block_cells=params["block_cells"], seed=params["seed"],
        device=params["device"], baseline=params["baseline"], threads=threads,
        **{key: params[key] for key in OPTIONAL_PARAMS if params.get(key) is not None},
    )
    save_checkpoint(model_path, model, species=info["species"], variables=info["variables"], mean=info["mean"],
                    std=info["std"], thresholds=info["thresholds"], config=params)
    split = xr.DataArray(info["split"].astype("uint8"), dims=("y", "x"), coords={"y": cube["y"], "x": cube["x"]},
                         name="split", attrs={"long_name": "spatial CV split", "codes": "0 train, 1 validation, 2 test"})
    split.rio.write_crs(cube.rio.crs).rio.to_raster(split_path, compress="deflate")
    metrics = info["metrics"]
    metrics["excluded_species"] = {"reason": f"fewer than {params['min_records']} occupied cells",
                                   "species": excluded}
    metrics["thresholds"] = dict(zip(info["species"], np.round(info["thresholds"], 4).tolist()))
    return metrics
