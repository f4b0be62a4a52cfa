"""Training the joint deep SDM: one trainer behind two front doors.

The trainer (:func:`fit_joint`) works on a table: rows of covariates, (row, species) presence pairs, background rows
and a split of the rows into train / validation (/ test). It fits on the training rows with early stopping on the
validation rows (mean per-species AUC), then refits on every row for the chosen number of epochs. Its two front
doors are :func:`train_sdm` (the Snakemake rule: the table is the valid cells of a climate cube, split in spatial
blocks, with held-out test metrics beside a classical baseline) and :class:`sdm.DeepSDM` (a scikit-learn-style
estimator over tables of covariates at points).

Losses (``loss``), computed on batches of species-balanced presence draws and background rows:

- ``maxent`` (the default): MaxEnt's likelihood with learned features (the inhomogeneous Poisson process of
  DeepMaxent, Ryckewaert et al. 2024): for a presence of species s at x, ``-f_s(x) + log mean_b exp f_s(b)`` over
  every row b of the batch (background and presence rows, as MaxEnt's background includes the presences), i.e. a
  softmax over sites per species. Its logits are then shifted per species to
  MaxEnt's logistic output (``sigmoid(H_s + f_s - log sum_b exp f_s(b))`` with H_s the entropy of the fitted
  distribution over the background), so that probabilities are comparable across species for thresholds.
- ``logistic``: presence-background logistic loss (every species pushed up at its records, down at background).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm.auto import tqdm

from sdm.codes import encode
from sdm.evaluate import compare_assemblages
from sdm.model import ResidualMLP, resolve_device, standardise

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "validation": 1, "test": 2}
EVAL_CELLS = 200_000
"""Background cells per split scored for test metrics and thresholds, at most (see :func:`train_sdm`)."""
VALIDATION_BACKGROUND = 10_000
"""Background rows scored at each early-stopping check, at most: the validation AUC only ranks epochs, and 10,000
rows add a standard error under 0.003 to it while keeping the check cheap for hundreds of species."""
BACKGROUND_CELLS = 2_000_000
"""Background cells of the cube front door's table, at most: on a grid with more valid cells, a seeded uniform
sample of them (plus every record cell, which is background only when sampled); up to it, every valid cell, as
MaxEnt-style background. Training memory then depends on this and the records, not on the grid
(:func:`training_table`)."""
ROWS_PER_PASS = 1_000_000
"""Rows standardised or scored at a time (no float64 copy of a km grid)."""
MIN_STEPS_PER_EPOCH = 20
"""Steps between validation checks, at least: with one step per epoch (51 records, batches of 512) early stopping
would judge the model after every step and stop long before it has learnt (measured on Myrcia and the mammals)."""
LOSSES = ("maxent", "logistic")


@dataclass(frozen=True)
class NetworkParams:
    """Hyper-parameters of the joint network and its training (the config's ``sdm`` section, DeepSDM's init)."""

    hidden: int = 128
    blocks: int = 2
    dropout: float = 0.1
    epochs: int = 100
    patience: int = 10
    batch_size: int = 512
    background_per_batch: int = 2048
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    loss: str = "maxent"
    members: int = 1
    quadratic: bool = False
    additive: int = 0
    input_noise: float = 0.0
    sampling_exponent: float = 0.0
    target_group: float = 0.8
    steps_per_epoch: int | None = None
    seed: int = 0

    @classmethod
    def from_mapping(cls, params: dict) -> NetworkParams:
        """The fields of ``params`` that name a hyper-parameter (None leaves the default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names and v is not None})

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"sdm.loss must be one of {LOSSES}, got '{self.loss}'")


# --- splits ---------------------------------------------------------------------------------------------------------
def spatial_blocks(shape: tuple[int, int], block_cells: int, seed: int,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   records: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Split the grid into square blocks of ``block_cells`` cells and assign each to train / validation / test.

    Returns int8 (y, x) with the codes of :data:`SPLITS`. Whole blocks are held out so that evaluation measures
    transfer to unseen places, not interpolation between neighbouring records. Blocks are taken in random order
    into validation, then test, until each holds its fraction of the (valid) cells and, when ``records`` (y, x
    counts) is given, of the records too: sparse, clustered records would otherwise leave a split without any.
    """
    ny, nx = _block_grid(shape, block_cells)
    rows = np.arange(shape[0]) // block_cells
    cols = np.arange(shape[1]) // block_cells
    block_of = rows[:, None] * nx + cols[None, :]
    cells = np.ones(shape) if valid is None else valid.astype("float64")
    cell_counts = np.bincount(block_of.ravel(), weights=cells.ravel(), minlength=ny * nx)
    record_counts = None
    if records is not None:
        record_counts = np.bincount(block_of.ravel(), weights=records.ravel(), minlength=ny * nx)
    return _assign_blocks(cell_counts, record_counts, seed, fractions)[block_of]


def _block_grid(shape: tuple[int, int], block_cells: int) -> tuple[int, int]:
    """Blocks along y and x of :func:`spatial_blocks`; raises with fewer than 3."""
    ny, nx = -(-shape[0] // block_cells), -(-shape[1] // block_cells)
    if ny * nx < 3:
        raise ValueError(f"sdm.block_cells={block_cells} leaves {ny * nx} blocks on a {shape} grid; need >= 3")
    return ny, nx


def _assign_blocks(cell_counts: np.ndarray, record_counts: np.ndarray | None, seed: int,
                   fractions: tuple[float, float, float]) -> np.ndarray:
    """int8 code of :data:`SPLITS` per block from its (valid) cells and records (see :func:`spatial_blocks`)."""
    n_blocks = len(cell_counts)
    shares = [cell_counts]
    if record_counts is not None and record_counts.sum() > 0:
        shares.append(record_counts)
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
    return block_split


def split_rows(groups: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Codes of :data:`SPLITS` per row from group labels (e.g. spatial block ids): whole groups go to validation,
    then test, in random order until each holds its fraction of the rows; the rest trains."""
    labels, group_of = np.unique(np.asarray(groups), return_inverse=True)
    share = np.bincount(group_of, minlength=len(labels)) / len(group_of)
    order = np.random.default_rng(seed).permutation(len(labels))
    group_split = np.zeros(len(labels), dtype="int8")
    position = 0
    for code, fraction in ((SPLITS["validation"], fractions[1]), (SPLITS["test"], fractions[2])):
        taken = 0.0
        while position < len(labels) - 1 and taken < fraction:
            group_split[order[position]] = code
            taken += share[order[position]]
            position += 1
    return group_split[group_of]


# --- metrics (scikit-learn) -------------------------------------------------------------------------------------------

def auc_per_species(scores: np.ndarray, presence_rows: list[np.ndarray], background: np.ndarray) -> np.ndarray:
    """AUC (``sklearn.metrics.roc_auc_score``) of each species' scores at its presence rows against the background
    rows; NaN for a species without presences. ``scores`` is (rows, species)."""
    aucs = np.full(len(presence_rows), np.nan)
    if len(background) == 0:
        return aucs
    labels = {}
    for s, rows in enumerate(presence_rows):
        if len(rows) == 0:
            continue
        if len(rows) not in labels:
            labels[len(rows)] = np.r_[np.ones(len(rows)), np.zeros(len(background))]
        aucs[s] = roc_auc_score(labels[len(rows)], np.r_[scores[rows, s], scores[background, s]])
    return aucs


def max_tss_threshold(scores_presence: np.ndarray, scores_background: np.ndarray) -> tuple[float, float]:
    """Threshold maximising TSS = sensitivity + specificity - 1 (``sklearn.metrics.roc_curve``), and that TSS.

    Cells with a score >= the threshold are predicted present."""
    if len(scores_presence) == 0 or len(scores_background) == 0:
        return float("nan"), float("nan")
    labels = np.r_[np.ones(len(scores_presence)), np.zeros(len(scores_background))]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[scores_presence, scores_background], drop_intermediate=False)
    tss = tpr - fpr
    best = int(np.argmax(tss[1:])) + 1  # the first point is roc_curve's "nothing present" (threshold inf)
    return float(thresholds[best]), float(tss[best])


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
        "median_auc": None if np.all(np.isnan(auc)) else round(float(np.nanmedian(auc)), 4),
        "mean_tss": None if np.all(np.isnan(tss)) else round(float(np.nanmean(tss)), 4),
        "species_evaluated": int(np.sum(~np.isnan(auc))),
        "per_species": per_species,
    }


# --- the fit loop -------------------------------------------------------------------------------------------------

def _batch_loss(logits: torch.Tensor, species: torch.Tensor, n_presence: int, trainable: torch.Tensor,
                loss: str) -> torch.Tensor:
    """Loss of one batch, summed over ensemble members. ``logits`` (members, rows, species): the first
    ``n_presence`` rows are presence draws of ``species`` (one per row), the others background rows."""
    logits_bg = logits[:, n_presence:]
    index = species[None, :, None].expand(logits.shape[0], -1, 1)
    pos = logits[:, :n_presence].gather(2, index).squeeze(2)  # (members, presences)
    if loss == "maxent":
        # Poisson-process likelihood: -f_s(x) + log mean exp f_s over every site of the batch, presence rows included
        # (as MaxEnt adds presences to its background): without them a network can raise f_s at its records and
        # lower it at background sites without bound (the loss fell below -10,000 on the orchids while validation AUC
        # collapsed). With them each term is >= -log(batch rows).
        normaliser = torch.logsumexp(logits, dim=1) - np.log(logits.shape[1])  # (members, species)
        return (normaliser.gather(1, species[None].expand(logits.shape[0], -1)) - pos).mean(dim=1).sum()
    return (torch.nn.functional.softplus(-pos).mean(dim=1)
            + torch.nn.functional.softplus(logits_bg).mean(dim=1)[:, trainable].mean(dim=1)).sum()


def scores_of(model: ResidualMLP, x: torch.Tensor, batch: int = 65536, species: slice | None = None) -> np.ndarray:
    """Probabilities (rows, species) of the model on standardised rows ``x`` (float32 numpy, on the host);
    ``species`` (a slice) computes only those columns (the shared layers run in full, the heads of those species
    only)."""
    was_training = model.training
    model.eval()
    nets = model.networks()
    n_out = len(range(model.hparams["n_species"])[species or slice(None)])
    out = np.empty((len(x), n_out), dtype="float32")
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            rows = x[start:start + batch]
            if species is None:
                logits = model(rows)
            else:  # the mean of the members' logits, as ResidualMLP.forward
                logits = torch.stack([torch.nn.functional.linear(net.encoder(rows), net.head.weight[species],
                                                                 net.head.bias[species]) for net in nets]).mean(0)
            out[start:start + len(rows)] = torch.sigmoid(logits).float().cpu().numpy()
    model.train(was_training)
    return out


SCORE_BYTES = 256 * 2**20
"""Bytes of one (scored cells, species) block of scores at most: held-out metrics and thresholds are computed for a
block of species at a time, so training memory does not grow with the number of species (612,000 scored cells x
989 species x 4 bytes would be 2.4 GB per score matrix)."""


def species_blocks(n_species: int, n_rows: int, budget: int | None = None) -> list[slice]:
    """Consecutive slices of the species whose float32 scores at ``n_rows`` rows fit in ``budget`` bytes (default
    :data:`SCORE_BYTES`)."""
    step = max(1, (SCORE_BYTES if budget is None else budget) // (4 * max(n_rows, 1)))
    return [slice(start, min(start + step, n_species)) for start in range(0, n_species, step)]


def _logits(model: ResidualMLP, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[start:start + batch]) for start in range(0, len(x), batch)])


def calibrate_maxent(model: ResidualMLP, x_background: torch.Tensor) -> None:
    """Shift a ``maxent``-trained model's logits to MaxEnt's logistic output over ``x_background`` rows: per species,
    ``H_s - log sum_b exp f_s(b)`` with H_s the entropy of the fitted distribution exp f_s / sum over the background
    (Phillips & Dudik 2008). Ranks within a species do not change; across species the probabilities become
    comparable (a species' typical presence site scores about 0.5)."""
    logits = _logits(model, x_background).double()
    log_p = logits - torch.logsumexp(logits, dim=0)
    entropy = -(log_p.exp() * log_p).sum(dim=0)
    model.shift_logits((entropy - torch.logsumexp(logits, dim=0)).float())


def _standardised(values: np.ndarray, mean: np.ndarray, std: np.ndarray, device: torch.device) -> torch.Tensor:
    out = torch.empty((len(values), values.shape[1]), dtype=torch.float32)
    for start in range(0, len(values), ROWS_PER_PASS):
        out[start:start + ROWS_PER_PASS] = torch.from_numpy(standardise(values[start:start + ROWS_PER_PASS], mean,
                                                                        std))
    return out.to(device)


def statistics(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (float64, per column; 1 where constant) of ``values`` over ``rows``."""
    mean = np.zeros(values.shape[1])
    square = np.zeros(values.shape[1])
    for start in range(0, len(rows), ROWS_PER_PASS):
        part = values[rows[start:start + ROWS_PER_PASS]].astype("float64")
        mean += part.sum(axis=0)
        square += (part ** 2).sum(axis=0)
    mean /= max(len(rows), 1)
    std = np.sqrt(np.maximum(square / max(len(rows), 1) - mean ** 2, 0))
    std[std < 1e-12] = 1.0
    return mean, std


@dataclass
class Validation:
    """Rows scored at each early-stopping check: each species' presence rows, and background rows."""

    presences: list[np.ndarray]
    background: np.ndarray


def fit_network(x: torch.Tensor, presences: np.ndarray, background: np.ndarray, n_species: int,
                params: NetworkParams, *, validation: Validation | None = None, epochs: int | None = None,
                steps_per_epoch: int | None = None, progress: bool = True, desc: str = "train_sdm") -> dict:
    """Fit a :class:`~sdm.model.ResidualMLP` on standardised rows ``x`` (rows, features; on the training device).

    ``presences``: (n, 2) int64 (row, species) training records; ``background``: training background rows. With
    ``validation``, stops early when the mean validation AUC has not risen for ``params.patience`` epochs and keeps
    the best epoch's weights; without, runs exactly ``epochs`` (default ``params.epochs``). Inputs are clamped to
    the range of the training rows. Returns ``{"model", "history", "best_epoch", "best_auc", "steps_per_epoch"}``.
    Deterministic under ``params.seed`` on the CPU.
    """
    torch.manual_seed(params.seed)
    device = x.device
    generator = np.random.default_rng(params.seed)
    by_species = [presences[presences[:, 1] == s, 0] for s in range(n_species)]
    counts = np.array([len(c) for c in by_species])
    if counts.sum() == 0:
        raise ValueError("no presence record among the training rows; use smaller sdm.block_cells")
    offsets = np.r_[0, np.cumsum(counts)[:-1]]
    pooled = np.concatenate(by_species)  # each species' rows, contiguous, for vectorised sampling
    trainable_species = np.flatnonzero(counts > 0)
    species_weights = counts[trainable_species].astype("float64") ** params.sampling_exponent
    species_weights /= species_weights.sum()
    record_rows = np.unique(presences[:, 0])  # target-group background: where observers recorded anything
    n_target = int(round(params.target_group * params.background_per_batch))
    if steps_per_epoch is None:
        steps_per_epoch = params.steps_per_epoch or min(
            200, max(MIN_STEPS_PER_EPOCH, int(np.ceil(len(presences) / params.batch_size))))

    model = ResidualMLP(x.shape[1], n_species, hidden=params.hidden, blocks=params.blocks, dropout=params.dropout,
                        quadratic=params.quadratic, members=params.members, additive=params.additive).to(device)
    seen = torch.from_numpy(np.union1d(background, record_rows)).to(device)
    model.set_input_bounds(x[seen].min(dim=0).values, x[seen].max(dim=0).values)
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    trainable = torch.from_numpy(counts > 0).to(device)
    if validation is not None:
        val_species = np.concatenate([np.full(len(rows), s) for s, rows in enumerate(validation.presences)])
        x_val_presence = x[torch.from_numpy(np.concatenate(validation.presences)).to(device)]
        x_val_background = x[torch.from_numpy(validation.background).to(device)]

    best = {"auc": -np.inf, "epoch": -1, "state": None}
    history = []
    n_epochs = params.epochs if epochs is None else epochs
    bar = tqdm(range(n_epochs), desc=desc, disable=not progress, mininterval=2)
    for epoch in bar:
        model.train()
        total = 0.0
        for _ in range(steps_per_epoch):
            s = generator.choice(trainable_species, size=params.batch_size, p=species_weights)
            rows = pooled[offsets[s] + (generator.random(params.batch_size) * counts[s]).astype("int64")]
            n_uniform = params.background_per_batch - n_target
            bg = np.r_[generator.choice(background, size=n_uniform), generator.choice(record_rows, size=n_target)]
            batch = x[torch.from_numpy(np.r_[rows, bg]).to(device)]
            if params.input_noise:
                batch = batch + params.input_noise * torch.randn_like(batch)
            loss = _batch_loss(model.member_logits(batch), torch.from_numpy(s).to(device), params.batch_size,
                               trainable, params.loss)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) / params.members
        record = {"epoch": epoch, "loss": total / steps_per_epoch}
        if validation is not None:
            record["validation_auc"] = _validation_auc(model, x_val_presence, val_species, x_val_background)
            bar.set_postfix(loss=f"{record['loss']:.4f}", val_auc=f"{record['validation_auc']:.3f}")
        history.append(record)
        if validation is None:
            continue
        if np.isnan(record["validation_auc"]) or record["validation_auc"] > best["auc"] + 1e-4:
            best = {"auc": record["validation_auc"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif epoch - best["epoch"] >= params.patience:
            log.info("early stopping at epoch %d (best validation AUC %.4f at epoch %d)", epoch, best["auc"],
                     best["epoch"])
            break
    if validation is not None:
        model.load_state_dict(best["state"])
    else:
        best = {"auc": float("nan"), "epoch": n_epochs - 1}
    model.eval()
    if params.loss == "maxent":
        calibrate_maxent(model, x[torch.from_numpy(np.sort(generator.choice(
            background, size=min(len(background), VALIDATION_BACKGROUND * 5), replace=False))).to(device)])
    return {"model": model, "history": history, "best_epoch": best["epoch"], "best_auc": best["auc"],
            "steps_per_epoch": steps_per_epoch}


def _validation_auc(model: ResidualMLP, x_presence: torch.Tensor, presence_species: np.ndarray,
                    x_background: torch.Tensor) -> float:
    """Mean over species with validation records of the AUC of their records against the validation background
    (logits rank as probabilities do). ``x_presence``: every validation record's row, ``presence_species`` its
    species; one forward pass for all of them."""
    if len(x_background) == 0 or len(x_presence) == 0:
        return float("nan")
    model.eval()
    background = _logits(model, x_background).float().cpu().numpy()
    presence = _logits(model, x_presence).float().cpu().numpy()
    aucs = []
    for s in np.unique(presence_species):
        own = presence[presence_species == s, s]
        labels = np.r_[np.ones(len(own)), np.zeros(len(background))]
        aucs.append(roc_auc_score(labels, np.r_[own, background[:, s]]))
    return float(np.mean(aucs))


@dataclass
class JointFit:
    """What :func:`fit_joint` hands back: the evaluation fit (training rows only) and the stored fit (every row)."""

    evaluation: ResidualMLP
    evaluation_mean: np.ndarray
    evaluation_std: np.ndarray
    model: ResidualMLP
    mean: np.ndarray
    std: np.ndarray
    history: list
    best_epoch: int
    validation_auc: float
    refit_epochs: int | None
    steps_per_epoch: int


def fit_joint(values: np.ndarray, presences: np.ndarray, background: np.ndarray, row_split: np.ndarray,
              n_species: int, params: NetworkParams, *, device: torch.device, refit: bool = True,
              progress: bool = True) -> JointFit:
    """The trainer behind both front doors.

    ``values``: (rows, features) float32 covariates (raw units); ``presences``: (n, 2) int64 (row, species);
    ``background``: background rows; ``row_split``: int8 code of :data:`SPLITS` per row. Fits on the training rows
    (standardised with their statistics) with early stopping on the validation rows; then, with ``refit``, fits again
    on the records and background of every split (test included), with the same hyper-parameters, epoch count and
    steps per epoch, standardised with the statistics of all rows: the stored model learns from every record.
    """
    train = row_split == SPLITS["train"]
    in_train = train[presences[:, 0]]
    train_background = background[train[background]]
    if len(train_background) == 0:
        raise ValueError("no background row in the training split")
    mean, std = statistics(values, np.union1d(train_background, presences[in_train, 0]))
    x = _standardised(values, mean, std, device)
    validation = None
    val_rows = row_split == SPLITS["validation"]
    val_background = background[val_rows[background]]
    if len(val_background):
        val_pairs = presences[val_rows[presences[:, 0]]]
        rng = np.random.default_rng(params.seed + 7919)
        if len(val_background) > VALIDATION_BACKGROUND:
            val_background = np.sort(rng.choice(val_background, VALIDATION_BACKGROUND, replace=False))
        validation = Validation([val_pairs[val_pairs[:, 1] == s, 0] for s in range(n_species)], val_background)
    evaluation = fit_network(x, presences[in_train], train_background, n_species, params, validation=validation,
                             progress=progress)
    del x
    fitted = JointFit(evaluation=evaluation["model"], evaluation_mean=mean, evaluation_std=std,
                      model=evaluation["model"], mean=mean, std=std, history=evaluation["history"],
                      best_epoch=evaluation["best_epoch"], validation_auc=evaluation["best_auc"], refit_epochs=None,
                      steps_per_epoch=evaluation["steps_per_epoch"])
    if not refit:
        return fitted
    fitted.refit_epochs = max(evaluation["best_epoch"], 0) + 1
    fitted.mean, fitted.std = statistics(values, np.union1d(background, presences[:, 0]))
    x = _standardised(values, fitted.mean, fitted.std, device)
    final = fit_network(x, presences, background, n_species, params, epochs=fitted.refit_epochs,
                        steps_per_epoch=evaluation["steps_per_epoch"], progress=progress, desc="refit on all records")
    fitted.model = final["model"]
    return fitted


def transfer_thresholds(thresholds: np.ndarray, evaluation_scores: np.ndarray, final_scores: np.ndarray) -> np.ndarray:
    """Per-species thresholds of the evaluation fit carried to the refit model at the same number of cells above it:
    with k the cells (rows of the scores, (cells, species)) whose evaluation score is >= the evaluation threshold,
    the refit's threshold is its k-th largest score over the same cells, so that k cells score at or above it (more
    only where other cells tie with that k-th score: tied cells are not told apart). k = 0 gives a threshold just
    above the refit's largest score. A NaN threshold stays NaN."""
    out = np.array(thresholds, dtype="float64")
    for s, threshold in enumerate(thresholds):
        if not np.isfinite(threshold) or len(evaluation_scores) == 0:
            continue
        final = final_scores[:, s]
        k = int(np.count_nonzero(evaluation_scores[:, s] >= threshold))
        out[s] = (float(np.nextafter(final.max(), np.inf)) if k == 0 else
                  float(np.partition(final, len(final) - k)[len(final) - k]))
    return out


# --- the classical baseline -----------------------------------------------------------------------------------------

def fit_baseline(values: np.ndarray, presences: np.ndarray, n_species: int, background_cells: np.ndarray,
                 method: str, seed: int, n_background: int = 10000,
                 fit: np.ndarray | None = None, progress: bool = True,
                 predict_rows: np.ndarray | None = None, first_species: int = 0) -> tuple[str, np.ndarray]:
    """Per-species classical SDMs fitted on the same training records; returns (name, scores (cells, species)).

    ``presences`` (records, 2): the training records as (row of ``values``, species), every one of them used;
    ``background_cells``: the rows the background (at most ``n_background``) is drawn from, which need not hold
    the record rows (a sampled background rarely does).

    ``fit`` (bool per species, default all) selects the species to fit; the others' scores stay NaN.
    ``predict_rows`` (default: all) are the rows of ``values`` scored, in that order. ``first_species``: the
    number of species ``0`` in the log (species are fitted a block at a time).

    ``maxent``: elapid's MaxEnt (linear, quadratic, hinge features); ``logistic``: a scikit-learn logistic
    regression on linear + quadratic terms with class-balanced weights (fast, for many species).
    """
    rng = np.random.default_rng(seed)
    background = rng.choice(background_cells, size=min(n_background, len(background_cells)), replace=False)
    rows = np.arange(len(values)) if predict_rows is None else np.asarray(predict_rows)
    scores = np.full((len(rows), n_species), np.nan, dtype="float32")
    fit = np.ones(n_species, dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    if method == "maxent":
        import elapid
        for s in tqdm(np.flatnonzero(fit), desc="baseline maxent", leave=False, disable=not progress):
            cells = presences[presences[:, 1] == s, 0]
            if len(cells) < 2:
                continue
            x = np.r_[values[cells], values[background]]
            y = np.r_[np.ones(len(cells)), np.zeros(len(background))]
            model = elapid.MaxentModel(feature_types=["linear", "quadratic", "hinge"], use_lambdas="best",
                                       n_cpus=1)
            try:
                model.fit(x, y)
            except IndexError:
                # glmnet's cross-validated lambda choice fails when a species has very few records: fit that
                # species with elapid's single-penalty scikit-learn path instead, and say so
                log.warning("baseline maxent: glmnet's lambda selection failed for species %d (%d records); "
                            "using elapid's scikit-learn fit", first_species + s, len(cells))
                model = elapid.MaxentModel(feature_types=["linear", "quadratic", "hinge"], n_cpus=1,
                                           use_sklearn=True)
                model.fit(x, y)
            scores[:, s] = model.predict(values[rows])
        return "elapid MaxEnt (linear, quadratic, hinge)", scores
    if method == "logistic":
        mean = values[background_cells].mean(0, dtype="float64")
        std = values[background_cells].std(0, dtype="float64") + 1e-9

        def design(index):
            z = (values[index] - mean) / std
            return np.c_[z, z**2]

        for s in np.flatnonzero(fit):
            cells = presences[presences[:, 1] == s, 0]
            if len(cells) < 2:
                continue
            x = np.r_[design(cells), design(background)]
            y = np.r_[np.ones(len(cells)), np.zeros(len(background))]
            # 500 iterations left a few orchid species unconverged (ConvergenceWarning in the log)
            clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
            clf.fit(x, y)
            for start in range(0, len(rows), ROWS_PER_PASS):
                part = rows[start:start + ROWS_PER_PASS]
                scores[start:start + len(part), s] = clf.decision_function(design(part))
        return "logistic regression (linear + quadratic)", scores
    raise ValueError(f"sdm.baseline must be 'maxent', 'logistic' or 'none', got '{method}'")


# --- the cube front door --------------------------------------------------------------------------------------------

@dataclass
class TrainingTable:
    """The cube front door's rows: the cells of the table, their covariates, the records and the background.

    ``values`` (rows, variables) float32 in raw units, rows ordered as the cells on the grid (row-major);
    ``cell_rows``, ``cell_cols`` their grid cells; ``presences`` (records, 2) int64 (row, species index);
    ``background`` the background rows (every row, or the sampled ones); ``valid`` bool (y, x), the grid's cells
    where every variable has data (1 byte per cell: what stays grid-sized); ``variables`` the columns' names."""

    values: np.ndarray
    cell_rows: np.ndarray
    cell_cols: np.ndarray
    presences: np.ndarray
    background: np.ndarray
    valid: np.ndarray
    variables: list[str]

    @property
    def sampled(self) -> bool:
        """Whether the background is a sample of the valid cells (else it is every one of them)."""
        return len(self.background) < len(self.values) or len(self.values) < int(self.valid.sum())


def training_table(cube: xr.DataArray, occurrences: pd.DataFrame, species: list[str], *, coordinates: int = 0,
                   background_cells: int | None = BACKGROUND_CELLS, seed: int = 0) -> TrainingTable:
    """The table the cube front door trains on, read from a lazy (Dask, e.g. :func:`sdm.climate.open_cube`) or a
    loaded cube alike, to the same values.

    Rows are the valid cells (every variable has data) when there are at most ``background_cells`` of them (None:
    no limit), all background; otherwise the record cells and a seeded uniform sample of ``background_cells``
    valid cells (``seed``), the sample being the background. Covariates are read chunk by chunk (only chunks that
    hold a row), so memory follows the rows, not the grid: the valid mask (1 byte per cell) is the only grid-sized
    array. ``coordinates`` > 0 appends that many harmonics of a location encoding
    (:func:`~sdm.model.coordinate_values`).
    """
    from sdm.climate import valid_mask

    cube = cube.transpose("variable", "y", "x")
    valid = valid_mask(cube)
    species_index = {s: i for i, s in enumerate(species)}
    occ = occurrences[occurrences["species"].isin(species_index)]
    rows, cols = occ["row"].to_numpy(), occ["col"].to_numpy()
    keep = valid[rows, cols]
    width = valid.shape[1]
    record_cells = rows[keep].astype("int64") * width + cols[keep]  # flat (row-major) cell index
    n_valid = int(valid.sum())
    if background_cells is None or n_valid <= background_cells:
        cell_rows, cell_cols = np.nonzero(valid)
        cells = cell_rows.astype("int64") * width + cell_cols
        background = np.arange(len(cells))
    else:
        sample = sample_valid(valid, background_cells, seed)
        cells = np.union1d(sample, record_cells)
        cell_rows, cell_cols = np.divmod(cells, width)
        background = np.searchsorted(cells, sample)
        log.info("background: %d of the grid's %d valid cells (seeded uniform sample) and %d record cells",
                 len(sample), n_valid, len(np.unique(record_cells)))
    presences = np.c_[np.searchsorted(cells, record_cells),
                      occ["species"].map(species_index).to_numpy()[keep]].astype("int64")
    values = cells_of(cube, cell_rows, cell_cols)
    variables = [str(v) for v in cube["variable"].values]
    if coordinates:
        from sdm.model import coordinate_values

        location, names = coordinate_values(cube["x"].values[cell_cols], cube["y"].values[cell_rows], cube,
                                            coordinates)
        values, variables = np.concatenate([values, location], axis=1), variables + names
    return TrainingTable(values, cell_rows, cell_cols, presences, background, valid, variables)


def sample_valid(valid: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Flat (row-major) indices of ``n`` valid cells drawn uniformly without replacement (seeded), sorted; found
    row by row from the per-row counts, without listing every valid cell."""
    per_row = valid.sum(axis=1, dtype="int64")
    ends = np.cumsum(per_row)
    picks = _distinct_draws(int(ends[-1]), n, np.random.default_rng(seed + 104729))
    rows = np.searchsorted(ends, picks, side="right")
    out = np.empty(n, dtype="int64")
    bounds = np.r_[0, np.flatnonzero(np.diff(rows)) + 1, n]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        row = rows[start]
        first = ends[row] - per_row[row]
        out[start:stop] = row * valid.shape[1] + np.flatnonzero(valid[row])[picks[start:stop] - first]
    return out


def _distinct_draws(population: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct integers of ``range(population)`` drawn uniformly (seeded ``rng``), sorted, in O(n) memory.

    numpy's ``choice(population, n, replace=False)`` permutes the whole population when n > population / 50: 1.9 GB
    of int64 for the 2.4e8 land cells of the global 30 arc-second grid. Here: draws with replacement until ``n``
    distinct ones are found, then a uniform subset of exactly ``n`` of them (every n-subset is equally likely)."""
    if n > population:
        raise ValueError(f"cannot draw {n} distinct cells of {population}")
    if 2 * n > population:  # the permutation is then at most twice the answer
        return np.sort(rng.choice(population, size=n, replace=False))
    found = np.unique(rng.integers(0, population, size=n))
    while len(found) < n:
        found = np.union1d(found, rng.integers(0, population, size=n - len(found) + n // 100 + 16))
    if len(found) > n:
        found = np.sort(rng.choice(found, size=n, replace=False))
    return found


def cells_of(cube: xr.DataArray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(cells, variables) float32 covariates of a (``variable``, ``y``, ``x``) cube at grid cells ``rows``,
    ``cols``. A Dask-backed cube is read chunk by chunk, only the chunks holding a cell, a few at a time (Dask's
    threads), so memory is the answer plus a few chunks."""
    data = cube.data
    if not hasattr(data, "blocks"):  # in memory
        return np.ascontiguousarray(np.asarray(data, dtype="float32")[:, rows, cols].T)
    import dask

    row_ends, col_ends = np.cumsum(data.chunks[1]), np.cumsum(data.chunks[2])
    block = (np.searchsorted(row_ends, rows, side="right") * len(col_ends)
             + np.searchsorted(col_ends, cols, side="right"))
    order = np.argsort(block, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block[order]) != 0])
    groups = np.split(order, starts[1:])
    out = np.empty((len(rows), data.shape[0]), dtype="float32")
    batch = max(1, dask.config.get("num_workers", None) or os.cpu_count() or 1)
    for first in range(0, len(groups), batch):
        part = groups[first:first + batch]
        ids = [divmod(int(block[g[0]]), len(col_ends)) for g in part]
        chunks = dask.compute(*[data.blocks[:, i, j] for i, j in ids])
        for g, (i, j), values in zip(part, ids, chunks):
            r0, c0 = (row_ends[i] - data.chunks[1][i]), (col_ends[j] - data.chunks[2][j])
            out[g] = np.asarray(values, dtype="float32")[:, rows[g] - r0, cols[g] - c0].T
    return out


def _block_split(table: TrainingTable, block_cells: int, seed: int, fractions):
    """Spatial blocks over the grid (valid cells and records shared out, see :func:`spatial_blocks`, from block
    counts: no grid-sized count array): the int8 (y, x) map and the split code of each row of the table."""
    ny, nx = _block_grid(table.valid.shape, block_cells)
    starts_y, starts_x = np.arange(0, ny) * block_cells, np.arange(0, nx) * block_cells
    cell_counts = np.add.reduceat(np.add.reduceat(table.valid, starts_y, axis=0, dtype="int32"), starts_x, axis=1)
    row_block = (table.cell_rows // block_cells) * nx + table.cell_cols // block_cells
    record_counts = np.bincount(row_block[table.presences[:, 0]], minlength=ny * nx).astype("float64")
    block_split = _assign_blocks(cell_counts.ravel().astype("float64"), record_counts, seed, fractions)
    split_map = np.repeat(np.repeat(block_split.reshape(ny, nx), block_cells, axis=0), block_cells, axis=1)
    return split_map[:table.valid.shape[0], :table.valid.shape[1]], block_split[row_block]


def _sample_cells(split_cells: dict, eval_cells: int | None, seed: int) -> dict:
    rng = np.random.default_rng(seed + 7919)
    return {name: cells if eval_cells is None or len(cells) <= eval_cells else
            np.sort(rng.choice(cells, size=eval_cells, replace=False)) for name, cells in split_cells.items()}


NO_TRAINING_RECORD = "no training-block record"
"""Rule of :func:`choose_thresholds` for a species the evaluation fit never trained (its scores are noise)."""
REFIT_ALL_RECORDS = "refit model, all records (no training-block record)"
"""Threshold rule of a species without training-block records: max-TSS of the refit model's scores at all its records
against all background (the refit learnt it; the evaluation fit did not)."""
NEVER_PRESENT = ("1.0, present at most where the stored code is the top one (no model learnt it: no training-block "
                 "record and no refit, or no record)")


def choose_thresholds(scores: np.ndarray, validation: list[np.ndarray], validation_background: np.ndarray,
                      training: list[np.ndarray], training_background: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per-species max-TSS thresholds on the validation blocks; a species without validation records uses its
    training records against training background. A species without training records gets NaN and the rule
    :data:`NO_TRAINING_RECORD`: the fit that made ``scores`` never trained its output. Returns the thresholds and
    the rule each species used."""
    thresholds = np.full(scores.shape[1], np.nan)
    rules = []
    for s in range(scores.shape[1]):
        if not len(training[s]):
            rules.append(NO_TRAINING_RECORD)
        elif len(validation[s]) and len(validation_background):
            thresholds[s] = max_tss_threshold(scores[validation[s], s], scores[validation_background, s])[0]
            rules.append("validation blocks")
        else:
            thresholds[s] = max_tss_threshold(scores[training[s], s], scores[training_background, s])[0]
            rules.append("training records (no validation record)")
    return thresholds, rules


def untrained_thresholds(final_scores: np.ndarray | None, records: list[np.ndarray],
                         background: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Thresholds of the stored model for species without training-block records, and the rule of each.

    With a refit (``final_scores``: its scores (rows, species) of those species), the training-records rule of
    :func:`choose_thresholds` applied to the refit, whose training records are all records: max-TSS of its scores at
    each species' ``records`` (rows, all splits) against ``background`` (rows, all splits), :data:`REFIT_ALL_RECORDS`.
    Without a refit, or without any record, no model learnt the species: 1.0, present only at the top stored code
    (:data:`NEVER_PRESENT`; :func:`sdm.codes.threshold_codes`)."""
    thresholds, rules = np.ones(len(records)), [NEVER_PRESENT] * len(records)
    if final_scores is not None:
        for s, rows in enumerate(records):
            if len(rows):
                thresholds[s] = max_tss_threshold(final_scores[rows, s], final_scores[background, s])[0]
                rules[s] = REFIT_ALL_RECORDS
    return thresholds, rules


def train_sdm(cube: xr.DataArray, occurrences: pd.DataFrame, *, species: list[str] | None = None,
              block_cells: int = 20, device: str = "auto", baseline: str = "maxent", threads: int | None = None,
              progress: bool = True, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
              baseline_species: list[str] | None = None, coordinates: int = 0, eval_cells: int | None = EVAL_CELLS,
              refit: bool = True, accessible_km: float | str | None = "auto",
              background_cells: int | None = BACKGROUND_CELLS, keep_scores: bool = True,
              categorical: list[str] | None = None, **network):
    """Train the joint SDM on a climate cube's valid cells. Returns ``(model, info)``.

    ``network``: hyper-parameters of :class:`NetworkParams` (loss, hidden, epochs, seed, ...). The cells are split
    in spatial blocks (``block_cells`` cells a side) into train / validation / test at ``fractions``; the model is
    fitted on the training blocks with early stopping on the validation blocks and scored on the test blocks beside
    the ``baseline`` (``maxent``, ``logistic`` or ``none``, fitted on the same training records for the
    ``baseline_species`` (default all) that have test records). With ``refit`` (the default) the returned model is
    then refitted on every record (:func:`fit_joint`); ``info["metrics"]`` keeps the held-out figures of the
    evaluation fit and says so.

    ``info`` has ``species``, ``variables``, ``mean``, ``std`` (of the returned model), ``thresholds`` (per species,
    max-TSS on validation blocks, carried to the refit model by :func:`transfer_thresholds`), ``split`` (int8 y, x),
    ``metrics``, ``scores`` (the returned model's probabilities at the scored cells ``cell_rows, cell_cols``: every
    valid cell, or a sample of at most ``eval_cells`` background cells per split plus every record cell; a km grid
    would otherwise need 16 GB per pass for 300 species), ``evaluation_scores`` (the evaluation fit's) and
    ``baseline_scores`` (NaN where not fitted, None without baseline). Without ``keep_scores`` the two deep score
    matrices are None: metrics and thresholds are then computed a block of species at a time
    (:func:`species_blocks`) and memory does not grow with the number of species (the workflow's rule).

    ``coordinates`` > 0 appends that many harmonics of a location encoding (:func:`~sdm.model.coordinate_values`) to
    the deep SDM's inputs (not the baseline's); prediction supplies them from the checkpoint's variable names.

    ``cube`` may be lazy (:func:`sdm.climate.open_cube`): the table is read from it chunk by chunk
    (:func:`training_table`), and with more than ``background_cells`` valid cells the background is a seeded
    sample of them, so memory follows the records and ``background_cells``, not the grid; up to it every valid cell
    is background. ``info["metrics"]["background"]`` says which.

    ``accessible_km``: the distance around a species' records beyond which prediction sets its presence to absent
    (:mod:`sdm.accessible`): ``"auto"`` chooses it on the training and validation blocks
    (:func:`sdm.accessible.dispersal_distance_km`), a number fixes it, None turns it off. ``info["accessible"]`` is
    the checkpoint's entry (None when off).

    ``categorical``: the variables that hold classes (the config's ``climate.categorical``); ``info["categories"]``
    lists the classes each showed in the table's rows, for MESS (:func:`training_classes`).
    """
    started = time.perf_counter()
    params = NetworkParams.from_mapping(network)
    if set(network) - {f.name for f in fields(NetworkParams)}:
        raise TypeError(f"unknown sdm parameters: {sorted(set(network) - {f.name for f in fields(NetworkParams)})}")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    n_climate = cube.sizes["variable"]
    species = sorted(occurrences["species"].unique()) if species is None else list(species)
    if not species:
        raise ValueError("no species to train the SDM on (all were excluded by occurrence cleaning)")
    table = training_table(cube, occurrences, species, coordinates=coordinates, background_cells=background_cells,
                           seed=params.seed)
    values, cell_rows, cell_cols, presences = table.values, table.cell_rows, table.cell_cols, table.presences
    variables = table.variables
    split_map, cell_split = _block_split(table, block_cells, params.seed, fractions)
    # background cells per split: every valid cell of the split, or the sampled ones
    split_cells = {name: table.background[cell_split[table.background] == code] for name, code in SPLITS.items()}
    if len(split_cells["train"]) == 0:
        raise ValueError("no training cells: the grid has no valid cell in the training blocks")
    pair_split = cell_split[presences[:, 0]]  # the split of each (cell, species) record
    if not (pair_split == SPLITS["train"]).any():
        raise ValueError("no presence record falls in the training blocks; use smaller sdm.block_cells")
    # every cell is background: the test blocks' cells are only used by the refit
    fitted = fit_joint(values, presences, table.background, cell_split, len(species), params, device=dev,
                       refit=refit, progress=progress)

    evaluated = _sample_cells(split_cells, eval_cells, params.seed)
    scored = np.unique(np.r_[evaluated["train"], evaluated["validation"], evaluated["test"], presences[:, 0]])

    def rows_of(cells):  # cell indices -> rows of the scores
        return np.searchsorted(scored, cells)

    def records(code):
        pairs = presences[pair_split == code]
        return [rows_of(pairs[pairs[:, 1] == s, 0]) for s in range(len(species))]

    train_records, val_records, test_records = (records(SPLITS[name]) for name in ("train", "validation", "test"))
    train_bg, val_bg, test_bg = (rows_of(evaluated[name]) for name in ("train", "validation", "test"))
    trained = np.array([len(rows) > 0 for rows in train_records])  # the outputs the evaluation fit learnt
    test_pairs = _assemblage_pairs(presences[(pair_split == SPLITS["test"]) & trained[presences[:, 1]]],
                                   params.seed, max(1, ASSEMBLAGE_SCORES // len(species)))
    test_cells = np.unique(test_pairs[:, 0])
    held_out = _held_out(fitted, _standardised(values[scored], fitted.evaluation_mean, fitted.evaluation_std, dev),
                         _standardised(values[scored], fitted.mean, fitted.std, dev) if refit else None,
                         (train_records, val_records, test_records), (train_bg, val_bg, test_bg), keep_scores,
                         assemblage_rows=rows_of(test_cells))
    (thresholds, threshold_rules, deep_auc, deep_tss, final_thresholds, evaluation_scores, scores,
     test_cell_scores) = held_out
    metrics = {
        "device": str(dev),
        "n_species": len(species),
        "n_cells": int(len(values)),
        "background": {"cells": int(len(table.background)), "valid_cells": int(table.valid.sum()),
                       "rule": (f"a seeded uniform sample of the valid cells (background_cells="
                                f"{background_cells})" if table.sampled else "every valid cell")},
        "loss": params.loss,
        "records": {name: int((pair_split == code).sum()) for name, code in SPLITS.items()},
        "cells": {name: int(len(c)) for name, c in split_cells.items()},
        "evaluation_cells": {name: int(len(c)) for name, c in evaluated.items()},
        "block_cells": block_cells,
        "epochs_run": len(fitted.history),
        "best_epoch": fitted.best_epoch,
        "validation_auc": _json_number(fitted.validation_auc),
        "history": [{key: _json_number(value) for key, value in epoch.items()} for epoch in fitted.history],
        "held_out": ("test figures are those of the evaluation fit (training blocks only, early stopping on the "
                     "validation blocks); " + (f"the stored model was then refitted on every record and cell for "
                                               f"{fitted.refit_epochs} epochs of {fitted.steps_per_epoch} steps"
                                               if refit else "the stored model is that evaluation fit")),
        "refit_epochs": fitted.refit_epochs,
        "threshold_rules": _rule_table(species, threshold_rules),
        "test": {"deep_sdm": summarise(species, deep_auc, deep_tss, test_records),
                 "assemblages": held_out_assemblages(test_cell_scores[:, trained], thresholds[trained],
                                                     _renumbered(test_pairs, trained), test_cells),
                 "untrained_species": {
                     "species": [name for name, t in zip(species, trained) if not t],
                     "rule": ("no training-block record: the evaluation fit never trained their output, so they "
                              "have no held-out AUC / TSS (left out of the means, deep SDM and baseline alike) and "
                              "are left out of the assemblage comparison; their stored threshold is chosen on the "
                              "stored model (threshold_rules)")}},
    }
    base_scores = None
    if baseline != "none":
        t0 = time.perf_counter()
        fit = np.ones(len(species), dtype=bool) if baseline_species is None else np.isin(species, baseline_species)
        if len(test_bg):  # only species that can be evaluated: MaxEnt takes about 1 s per species
            fit &= np.array([len(p) > 0 for p in test_records])
        # a block of species at a time, as the deep SDM's metrics: the baseline's (scored rows, species) float32
        # scores whole were 0.78 GB for the 1/4 global band's 319 species and grew with the species
        train_pairs = presences[pair_split == SPLITS["train"]]
        base_auc, base_tss = np.full(len(species), np.nan), np.full(len(species), np.nan)
        fitted_species, kept = np.zeros(len(species), dtype=bool), []
        for block in species_blocks(len(species), len(scored)):
            pairs = train_pairs[(train_pairs[:, 1] >= block.start) & (train_pairs[:, 1] < block.stop)]
            name, block_scores = fit_baseline(values[:, :n_climate], pairs - [0, block.start],
                                              block.stop - block.start, split_cells["train"], baseline, params.seed,
                                              fit=fit[block], progress=progress, predict_rows=scored,
                                              first_species=block.start)
            fitted_block = ~np.isnan(block_scores).all(axis=0)
            fitted_species[block] = fitted_block
            # species not fitted (NaN scores) get no presence rows, hence NaN
            base_auc[block] = auc_per_species(block_scores, [rows if fitted else rows[:0] for rows, fitted in
                                                             zip(test_records[block], fitted_block)], test_bg)
            base_tss[block] = _baseline_tss(block_scores, fitted_block, (train_records[block], val_records[block],
                                                                         test_records[block]),
                                            (train_bg, val_bg, test_bg))
            if keep_scores:
                kept.append(block_scores)
        base_scores = np.concatenate(kept, axis=1) if keep_scores else None
        metrics["test"]["baseline"] = summarise(species, base_auc, base_tss, test_records)
        metrics["test"]["baseline"]["name"] = name
        metrics["test"]["baseline"]["fit_seconds"] = round(time.perf_counter() - t0, 2)
        same = fitted_species & ~np.isnan(deep_auc)
        same_tss = ~np.isnan(deep_tss) & ~np.isnan(base_tss)
        metrics["test"]["same_species"] = {
            "species": int(same.sum()),
            "deep_sdm_mean_auc": round(float(deep_auc[same].mean()), 4) if same.any() else None,
            "baseline_mean_auc": round(float(base_auc[same].mean()), 4) if same.any() else None,
            "species_tss": int(same_tss.sum()),
            "deep_sdm_mean_tss": round(float(deep_tss[same_tss].mean()), 4) if same_tss.any() else None,
            "baseline_mean_tss": round(float(base_tss[same_tss].mean()), 4) if same_tss.any() else None,
        }
    accessible, metrics["accessible_area"] = _accessible_area(cube, cell_rows, cell_cols, presences, cell_split,
                                                              accessible_km)
    metrics["train_seconds"] = round(time.perf_counter() - started, 2)
    info = {"species": list(species), "variables": variables, "mean": fitted.mean, "std": fitted.std,
            "thresholds": final_thresholds, "split": split_map, "metrics": metrics, "scores": scores,
            "evaluation_scores": evaluation_scores, "cell_rows": cell_rows[scored], "cell_cols": cell_cols[scored],
            "baseline_scores": base_scores, "accessible": accessible,
            "reference": reference_quantiles(values[table.background] if table.sampled else values),
            "categories": training_classes(values, variables, categorical)}
    return fitted.model, info


def _json_number(value):
    """``value``, or None for a float NaN / inf, which JSON cannot hold (``json.dump`` writes an invalid ``NaN``)."""
    return None if isinstance(value, (float, np.floating)) and not np.isfinite(value) else value


def _renumbered(pairs: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(cell, species) ``pairs`` of kept species (bool ``kept`` per species) with each species numbered among the
    kept ones."""
    return np.c_[pairs[:, 0], (np.cumsum(kept) - 1)[pairs[:, 1]]]


def _baseline_tss(scores: np.ndarray, fitted: np.ndarray, records: tuple, background: tuple) -> np.ndarray:
    """Held-out TSS of the baseline's fitted species (NaN for the others) at thresholds chosen by the deep SDM's rule
    (:func:`choose_thresholds`: validation blocks, else training records), so that both TSS cover the same species.
    ``scores`` (rows, species); ``records`` / ``background``: (train, validation, test) rows, as in
    :func:`_held_out`."""
    (train, val, test), (train_bg, val_bg, test_bg) = records, background
    tss = np.full(scores.shape[1], np.nan)
    chosen = np.flatnonzero(fitted)
    thresholds, _ = choose_thresholds(scores[:, chosen], [val[s] for s in chosen], val_bg,
                                      [train[s] for s in chosen], train_bg)
    for s, threshold in zip(chosen, thresholds):
        tss[s] = tss_at(scores[test[s], s], scores[test_bg, s], threshold)
    return tss


ASSEMBLAGE_SCORES = 50_000_000
"""The held-out assemblage comparison keeps the evaluation fit's scores of every species at the test-block cells
holding records: at most this many (200 MB of float32), so a seeded sample of the cells when species x cells is more."""


def _assemblage_pairs(test_pairs: np.ndarray, seed: int, max_cells: int) -> np.ndarray:
    """The (cell, species) record pairs of the test blocks, restricted to a seeded sample of ``max_cells`` of their
    cells when there are more (memory: the evaluation fit's scores at those cells are kept for every species)."""
    cells = np.unique(test_pairs[:, 0])
    if len(cells) <= max_cells:
        return test_pairs
    keep = np.random.default_rng(seed).choice(cells, max_cells, replace=False)
    return test_pairs[np.isin(test_pairs[:, 0], keep)]


def held_out_assemblages(scores: np.ndarray, thresholds: np.ndarray, pairs: np.ndarray, cells: np.ndarray) -> dict:
    """Assemblages as sets on the test blocks, from the evaluation fit (which never saw them): recall of the
    recorded species and mean set size of per-species thresholds, top-K and average-K at the same mean set size
    (:func:`sdm.evaluate.compare_assemblages`), on the stored (uint8 code) scale.

    ``scores``: the evaluation fit's probabilities (len(cells), species) at ``cells`` (sorted cell indices);
    ``thresholds``: its per-species thresholds; ``pairs``: (cell, species) records in those cells."""
    out = {"rule": "evaluation fit (training blocks only) at the test-block cells holding records; the refitted "
                   "model's stored predictions have seen these records", "cells": int(len(cells)),
           "records": int(len(pairs)), "methods": []}
    if len(cells) == 0:
        return out
    recorded = pd.DataFrame({"cell": np.searchsorted(cells, pairs[:, 0]), "species": pairs[:, 1]})
    table = compare_assemblages(encode(scores.T), thresholds, recorded)
    out["methods"] = [{"method": row.method, "recall": round(float(row.recall), 4),
                       "mean_set_size": round(float(row.mean_set_size), 2)} for row in table.itertuples()]
    return out


def _held_out(fitted: JointFit, x_evaluation: torch.Tensor, x_final: torch.Tensor | None, records: tuple,
              background: tuple, keep_scores: bool, assemblage_rows: np.ndarray | None = None):
    """Thresholds (max-TSS on the validation blocks), held-out AUC and TSS of the evaluation fit, and the thresholds
    carried to the refit model (``x_final``: the scored rows standardised for it; None without refit), computed a
    block of species at a time. A species without training-block records has no evaluation threshold (NaN), no
    held-out AUC or TSS (the evaluation fit never trained its output) and a stored threshold chosen on the stored
    model (:func:`untrained_thresholds`). Returns ``(thresholds, rules, auc, tss, final_thresholds, evaluation_scores,
    scores, assemblage_scores)``, the two score matrices (rows, species) only with ``keep_scores`` (else None);
    ``assemblage_scores`` are the evaluation fit's scores (len(assemblage_rows), species) at ``assemblage_rows``
    (None without them), kept whatever ``keep_scores``."""
    train_records, val_records, test_records = records
    train_bg, val_bg, test_bg = background
    n_species = len(val_records)
    thresholds, final_thresholds = np.full(n_species, np.nan), np.full(n_species, np.nan)
    auc, tss, rules, kept_evaluation, kept_final = np.full(n_species, np.nan), np.full(n_species, np.nan), [], [], []
    at_rows = []
    for block in species_blocks(n_species, len(x_evaluation)):
        evaluation = scores_of(fitted.evaluation, x_evaluation, species=block)
        if assemblage_rows is not None:
            at_rows.append(evaluation[assemblage_rows])
        thresholds[block], block_rules = choose_thresholds(evaluation, val_records[block], val_bg,
                                                           train_records[block], train_bg)
        untrained = np.flatnonzero([len(rows) == 0 for rows in train_records[block]])
        # held-out figures only for the outputs the evaluation fit trained (the others' thresholds are NaN)
        evaluated = [rows[:0] if s in untrained else rows for s, rows in enumerate(test_records[block])]
        auc[block] = auc_per_species(evaluation, evaluated, test_bg)
        tss[block] = [tss_at(evaluation[rows, s], evaluation[test_bg, s], thresholds[block][s])
                      for s, rows in enumerate(evaluated)]
        final = evaluation
        if x_final is not None:
            final = scores_of(fitted.model, x_final, species=block)
            final_thresholds[block] = transfer_thresholds(thresholds[block], evaluation, final)
        else:
            final_thresholds[block] = thresholds[block]
        if len(untrained):  # chosen on the stored model itself, not carried from the evaluation fit
            every_record = [np.r_[val_records[block][s], test_records[block][s]] for s in untrained]
            final_thresholds[block.start + untrained], untrained_rules = untrained_thresholds(
                final[:, untrained] if x_final is not None else None, every_record, np.r_[train_bg, val_bg, test_bg])
            for s, rule in zip(untrained, untrained_rules):
                block_rules[s] = rule
        rules += block_rules
        if keep_scores:
            kept_evaluation.append(evaluation)
            kept_final.append(final)
    assemblage_scores = np.concatenate(at_rows, axis=1) if assemblage_rows is not None else None
    if not keep_scores:
        return thresholds, rules, auc, tss, final_thresholds, None, None, assemblage_scores
    return (thresholds, rules, auc, tss, final_thresholds, np.concatenate(kept_evaluation, axis=1),
            np.concatenate(kept_final, axis=1), assemblage_scores)


def _accessible_area(cube: xr.DataArray, cell_rows, cell_cols, presences: np.ndarray, cell_split: np.ndarray,
                     accessible_km) -> tuple[dict | None, dict]:
    """(checkpoint entry or None, metrics entry) of the accessible area (:mod:`sdm.accessible`) over every record
    cell; ``accessible_km``: "auto", a distance (km) or None (off)."""
    from sdm.accessible import QUANTILE, checkpoint_entry, dispersal_distance_km
    from sdm.grid import cells_to_lonlat

    if accessible_km is None:
        return None, {"distance_km": None, "rule": "off (sdm.accessible_km: null)"}
    cells = presences[:, 0]
    lon, lat = cells_to_lonlat(cube["x"].values[cell_cols[cells]], cube["y"].values[cell_rows[cells]], cube)
    if accessible_km == "auto":
        distance, held_out = dispersal_distance_km(lon, lat, presences[:, 1], cell_split[cells], QUANTILE)
        if distance is None:
            log.warning("accessible area off: no species has records in both the training and validation blocks "
                        "to choose its distance on")
            return None, {"distance_km": None, "rule": "off: no species with training and validation records"}
        rule = (f"{QUANTILE:.0%} quantile of the distance from {held_out} validation-block records to the nearest "
                f"training-block record of the same species")
        log.info("accessible area: %.0f km around each species' records (%s)", distance, rule)
    else:
        distance, held_out, rule = float(accessible_km), 0, "sdm.accessible_km (config)"
    entry = checkpoint_entry(lon, lat, presences[:, 1], distance, QUANTILE, held_out)
    return entry, {"distance_km": round(distance, 1), "rule": rule}


def _rule_table(species: list[str], rules: list[str]) -> dict:
    """{rule: [species]} for the rules used."""
    table: dict = {}
    for name, rule in zip(species, rules):
        table.setdefault(rule, []).append(name)
    return table


def reference_quantiles(values: np.ndarray, levels: int = 101, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """(variables, levels) percentiles 0..100 of the training climate (raw units), from a seeded sample of at most
    ``sample`` rows: the reference distribution of MESS (Elith et al. 2010) for extrapolation layers."""
    if len(values) > sample:
        values = values[np.sort(np.random.default_rng(seed).choice(len(values), sample, replace=False))]
    return np.percentile(values.astype("float64"), np.linspace(0, 100, levels), axis=0).T


def training_classes(values: np.ndarray, variables: list[str], categorical: list[str] | None) -> dict:
    """{variable: sorted class codes (float) in ``values``' rows} for the ``categorical`` variables (names as in the
    config, harmonised like the cube's) among ``variables``: the classes MESS counts as seen in training
    (:func:`sdm.novelty.mess`)."""
    from sdm.climate import harmonise_name

    names = [harmonise_name(v) for v in categorical or []]
    unknown = [v for v in names if v not in variables]
    if unknown:
        raise ValueError(f"categorical variable(s) {unknown} are not among the model's variables {variables}")
    return {v: np.unique(values[:, variables.index(v)]).astype("float64").tolist() for v in names}


CONFIG_ONLY = ("min_records", "model", "block_cells", "device", "baseline", "coordinates", "eval_cells",
               "accessible_km", "background_cells")
"""Keys of the config's ``sdm`` section that are not network hyper-parameters (see :class:`NetworkParams`)."""


SPLIT_ROWS = 1024
"""Rows of the split map written at a time by :func:`write_split`."""


def write_split(split_map: np.ndarray, grid: xr.DataArray, path) -> None:
    """The spatial CV split (int8 (y, x) codes, :data:`SPLITS`) as a deflated, tiled uint8 GeoTIFF on ``grid``'s
    CRS and transform, a band of :data:`SPLIT_ROWS` rows at a time with GDAL's block cache at
    :data:`sdm.storage.GDAL_CACHE_MB`: rioxarray's whole-grid write, with GDAL's default cache, was the
    training job's peak on the 1/4 global band (+0.35 GB for a 2.3e8-cell map)."""
    import rasterio
    from rasterio.windows import Window

    from sdm.storage import gdal_write_env, replacing

    height, width = split_map.shape
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "height": height, "width": width,
               "crs": grid.rio.crs, "transform": grid.rio.transform(recalc=True), "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
    codes = ", ".join(f"{code} {name}" for name, code in SPLITS.items())
    with replacing(path) as partial, gdal_write_env():
        with rasterio.open(partial, "w", **profile) as dst:
            for top in range(0, height, SPLIT_ROWS):
                rows = split_map[top:top + SPLIT_ROWS]
                dst.write(rows.view("uint8"), 1, window=Window(0, top, width, len(rows)))
            dst.update_tags(long_name="spatial CV split", codes=codes)
            dst.set_band_description(1, "split")


def run_training(cube: xr.DataArray, occurrences: pd.DataFrame, params: dict, *, model_path, split_path,
                 threads: int | None = None, categorical: list[str] | None = None) -> dict:
    """Train with the config's ``sdm`` params, write the checkpoint and the split GeoTIFF; return metrics.

    Species with fewer than ``min_records`` occupied cells are not trained on and are listed in the metrics.
    ``categorical``: class layers, whose training classes the checkpoint keeps as ``categories`` for MESS; by
    default those the cube lists (:data:`sdm.climate.CATEGORICAL_ATTR`: the config's ``climate.categorical`` and
    the integer bands ingest treated as classes by their name).
    """
    from sdm.climate import CATEGORICAL_ATTR
    from sdm.model import save_checkpoint

    if categorical is None:
        categorical = list(cube.attrs.get(CATEGORICAL_ATTR) or [])

    sites = occurrences.groupby("species").size()
    species = sorted(sites.index[sites >= params["min_records"]])
    excluded = {s: int(n) for s, n in sites[sites < params["min_records"]].items()}
    if not species:
        raise ValueError(f"no species has >= sdm.min_records={params['min_records']} occupied cells; "
                         f"largest has {int(sites.max()) if len(sites) else 0}")
    network = {k: v for k, v in params.items() if k in {f.name for f in fields(NetworkParams)} and v is not None}
    model, info = train_sdm(
        cube, occurrences, species=species, block_cells=params["block_cells"], device=params["device"],
        baseline=params["baseline"], threads=threads, coordinates=params.get("coordinates") or 0,
        **({"eval_cells": params["eval_cells"]} if "eval_cells" in params else {}),
        **({"background_cells": params["background_cells"]} if "background_cells" in params else {}),
        accessible_km=params.get("accessible_km", "auto"), keep_scores=False, categorical=categorical, **network,
    )
    save_checkpoint(model_path, model, species=info["species"], variables=info["variables"], mean=info["mean"],
                    std=info["std"], thresholds=info["thresholds"], config=params, reference=info["reference"],
                    accessible=info["accessible"], categories=info["categories"])
    write_split(info["split"], cube, split_path)
    metrics = info["metrics"]
    metrics["excluded_species"] = {"reason": f"fewer than {params['min_records']} occupied cells",
                                   "species": excluded}
    metrics["thresholds"] = dict(zip(info["species"], np.round(info["thresholds"], 6).tolist()))
    return metrics
