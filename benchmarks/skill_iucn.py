"""IUCN Red List status from the pipeline's species features, against the published anchors (issue 5, part 1).

Data: a finished run of ``config/examples/orchids_global.yaml`` (the IUCNN orchids: 889 assessed species, 883 of
them left with records after cleaning, plus 100 not-evaluated species) and the published numbers in
``../shared/data/`` (see its PROVENANCE.md).

Protocol, fixed before looking at test folds: the labelled species that have features, stratified 10-fold CV with
seed 0 (:func:`sdm.status.stratified_folds`), everything learnt from labels (trees, genus shares) fitted on the
training folds only. Every variant is scored on the same folds: 5-class and binary accuracy (threatened =
VU/EN/CR; binary from P(VU) + P(EN) + P(CR) > 0.5) with their standard deviations over folds, balanced accuracy,
macro F1, per-class recall and a confusion matrix. ``--seeds`` repeats the default on other fold splits and
``--nested`` estimates the whole "pick the best variant" procedure by nested CV (both off by default: runtime).

    python benchmarks/skill_iucn.py --results /tmp/orchids/results --out not_evaluated_status.csv

:func:`iucn_skill_tables` returns the tables for ``benchmarks/skill.py`` ({title: DataFrame});
:func:`iucn_skill_results` everything, including the full metrics of every variant.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sdm.features import OCCURRENCE_FEATURES, feature_columns, occurrence_features
from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED
from sdm.status import (
    DECISION_RULES,
    StatusClassifier,
    best_decision,
    classification_metrics,
    decide,
    decision_score,
    decision_scores,
    genus_of,
    stratified_folds,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ANCHOR_LOGS = DATA / "estopinan_orchid_status" / "classifier_cv_results_from_logs.csv"
IUCNN_MATRIX = DATA / "iucnn_orchids" / "zizka2021_orchid_features_52.csv"
MYRCIA = DATA / "walker_myrcia_predictors" / "myrcia_predictors.csv"
MYRCIA_FEATURES = ("eoo", "human_footprint", "human_population", "forest_loss", "annual_temperature",
                   "precipitation_driest", "elevation", "conr_aoo", "conr_locs", "conr_obs", "n_specimens",
                   "centroid_latitude")
"""Walker et al.'s predictors (their names), plus ``criterion_b_rank`` computed from their ConR EOO, AOO and
locations; ``conr_eoo`` itself is left out (missing for 159 species with fewer than three points: ``eoo`` holds
it)."""

FOLDS, SEED = 10, 0
IUCNN_VIGNETTE_ACCURACY = 0.633
"""5-class test accuracy of the example run in the IUCNN vignette (one split, no SD)."""
ESTOPINAN_RF_CONFUSION = (
    (332, 0, 9, 40, 5),
    (38, 1, 5, 12, 1),
    (50, 2, 24, 46, 2),
    (56, 2, 14, 143, 12),
    (14, 0, 2, 37, 39),
)
"""Estopinan et al.'s best 5-class random forest on deep-SDM activations (experiment RF800, 10-fold CV, 886
species, the 0.608 of :func:`anchors_table`): its test predictions pooled over the folds, rows = Red List LC..CR,
columns = predicted. Tallied from ``test.labels`` and ``test.preds`` (codes 1..5 = LC..CR) of
``logs/Selection_DETAIL/detail_all_3var_activ/RF800_ntree10000_mtry100_2023-07-13 11:53:03.txt`` in the public
repository estopinj/IUCN_classification (commit d08a4e8d1c8326b6d83210be03b3e4aa40f6c7f9). The log's own per-class
averages (``avg.test.sens``) are not in class order (each fold lists its classes in the order they were first
predicted), so recall is computed from these counts. It is the only 5-class log there with its predictions."""
IUCNN_PREDICTIONS = DATA / "estopinan_orchid_status" / "predsIUCNN_statuses.csv"
IUCN_LABELS = DATA / "estopinan_orchid_status" / "iucn_ground_truth.csv"
TARGET = {"accuracy": 0.64, "binary_accuracy": 0.84, "balanced_accuracy": 0.50}  # this release's targets

# The nine occurrence features of the first pipeline version; the rest of OCCURRENCE_FEATURES (spread of the sites,
# sampling effort around them) came with this benchmark.
ORIGINAL_OCCURRENCE = (
    "n_records", "n_sites", "eoo_km2", "aoo_km2", "lat_min", "lat_max", "lat_span", "centroid_lon", "centroid_lat",
)
SPREAD_EFFORT = tuple(c for c in OCCURRENCE_FEATURES if c not in ORIGINAL_OCCURRENCE)
SDM_RANGE = ("range_km2", "mean_suitability")


# ---------------------------------------------------------------------------------------------------------------
# Extra estimators, plugged into StatusClassifier through its _estimator hook


class TorchMLP:
    """A small multi-layer perceptron (2 x 64 ReLU, dropout 0.2, AdamW, full batch) with the scikit-learn calls
    StatusClassifier needs: ``fit(X, y, sample_weight)``, ``predict_proba``, ``classes_``. Missing values are
    replaced by the training median, then every column is standardised. CPU, one thread, deterministic."""

    def __init__(self, hidden: int = 64, epochs: int = 150, lr: float = 3e-3, weight_decay: float = 1e-3,
                 dropout: float = 0.2, seed: int = 0):
        self.hidden, self.epochs, self.lr, self.weight_decay, self.dropout, self.seed = (
            hidden, epochs, lr, weight_decay, dropout, seed)

    def _scale(self, X: np.ndarray):
        import torch

        X = np.where(np.isnan(X), self.median_, X)
        return torch.tensor((X - self.mean_) / self.sd_, dtype=torch.float32)

    def fit(self, X, y, sample_weight=None):
        import torch

        torch.manual_seed(self.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            y = np.asarray(y)
            self.classes_ = np.unique(y)
            self.median_ = np.nan_to_num(np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0))
            filled = np.where(np.isnan(X), self.median_, X)
            self.mean_, self.sd_ = filled.mean(axis=0), filled.std(axis=0) + 1e-9
            Xt = self._scale(X)
            yt = torch.tensor(np.searchsorted(self.classes_, y))
            d = self.dropout
            self.net_ = torch.nn.Sequential(
                torch.nn.Linear(X.shape[1], self.hidden), torch.nn.ReLU(), torch.nn.Dropout(d),
                torch.nn.Linear(self.hidden, self.hidden), torch.nn.ReLU(), torch.nn.Dropout(d),
                torch.nn.Linear(self.hidden, len(self.classes_)),
            )
            opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            w = None if sample_weight is None else torch.tensor(np.asarray(sample_weight), dtype=torch.float32)
            self.net_.train()
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.net_(Xt), yt, reduction="none")
                loss = (loss * w).sum() / w.sum() if w is not None else loss.mean()
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        return self

    def predict_proba(self, X):
        import torch

        self.net_.eval()
        with torch.no_grad():
            return torch.softmax(self.net_(self._scale(X)), dim=1).numpy().astype(float)


class MLPStatusClassifier(StatusClassifier):
    """StatusClassifier with :class:`TorchMLP` as the estimator (``method`` is ignored)."""

    def _estimator(self, n_train: int):
        return TorchMLP(seed=self.seed)


class CalibratedStatusClassifier(StatusClassifier):
    """StatusClassifier whose estimator is wrapped in Platt (sigmoid) calibration on 3 inner folds."""

    def _estimator(self, n_train: int):
        from sklearn.calibration import CalibratedClassifierCV

        return CalibratedClassifierCV(super()._estimator(n_train), method="sigmoid", cv=3)


class SoftVoteStatusClassifier(StatusClassifier):
    """StatusClassifier whose estimator averages the class probabilities of the default extra trees and of a
    random forest (scikit-learn's soft ``VotingClassifier``); ``method`` is ignored."""

    def _estimator(self, n_train: int):
        from sklearn.ensemble import VotingClassifier

        trees = {m: StatusClassifier(**{**self.get_params(), "method": m})._estimator(n_train)
                 for m in ("extra_trees", "random_forest")}
        return VotingClassifier(list(trees.items()), voting="soft")


class OrdinalRegressionTrees:
    """Ordinal regression for the status: extra-trees regression of the category code (LC 0 .. CR 4), cut into
    categories at the four cut points that maximise :func:`sdm.status.decision_score` on out-of-fold predictions of
    an inner 5-fold split of the training species; ``predict_proba`` is the one-hot of the cut category. Neighbouring
    categories share the trees' leaves, which a classifier's one-vs-rest probabilities do not."""

    def __init__(self, seed: int = 0, n_jobs: int | None = 1):
        self.seed, self.n_jobs = seed, n_jobs

    def _regressor(self):
        from sklearn.ensemble import ExtraTreesRegressor

        return ExtraTreesRegressor(n_estimators=500, min_samples_leaf=2, random_state=self.seed, n_jobs=self.n_jobs)

    @staticmethod
    def cut(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        return np.searchsorted(cuts, values, side="right")

    @classmethod
    def best_cuts(cls, values: np.ndarray, codes: np.ndarray, rounds: int = 3) -> np.ndarray:
        """Cut points (4, increasing) by coordinate search over the percentiles of ``values``, from the midpoints."""
        cuts = np.arange(len(CATEGORIES) - 1) + 0.5
        best = decision_score(codes, cls.cut(values, cuts))
        candidates = np.quantile(values, np.linspace(0.01, 0.99, 99))
        for _ in range(rounds):
            for j in range(len(cuts)):
                for value in candidates:
                    trial = cuts.copy()
                    trial[j] = value
                    if np.all(np.diff(trial) > 0):
                        score = decision_score(codes, cls.cut(values, trial))
                        if score > best + 1e-12:
                            best, cuts = score, trial
        return cuts

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight=None) -> "OrdinalRegressionTrees":
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        codes = pd.Series(y).map(CATEGORY_CODE).to_numpy(dtype=int)
        self.classes_ = np.asarray(CATEGORIES, dtype=object)
        folds = max(2, min(5, int(np.bincount(codes).max())))
        inner = StratifiedKFold(folds, shuffle=True, random_state=self.seed + 1)
        with warnings.catch_warnings():  # classes with fewer members than folds
            warnings.simplefilter("ignore", UserWarning)
            out_of_fold = cross_val_predict(self._regressor(), X, codes, cv=inner)
        self.cuts_ = self.best_cuts(out_of_fold, codes)
        self.regressor_ = self._regressor().fit(X, codes)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        category = self.cut(self.regressor_.predict(X), self.cuts_)
        out = np.zeros((len(X), len(CATEGORIES)))
        out[np.arange(len(X)), category] = 1.0
        return out


class OrdinalRegressionStatusClassifier(StatusClassifier):
    """StatusClassifier with :class:`OrdinalRegressionTrees` as the estimator (``method`` is ignored; its
    probabilities are one-hot, so use ``decision="argmax"``)."""

    def _estimator(self, n_train: int):
        return OrdinalRegressionTrees(seed=self.seed, n_jobs=self.n_jobs)


CHECKS = {
    "soft vote of extra trees and random forest": (SoftVoteStatusClassifier, {}),
    "ordinal regression (extra-trees regression, cut points on inner folds)":
        (OrdinalRegressionStatusClassifier, {"decision": "argmax"}),
}
"""Candidates that ``--soft-vote`` / ``--ordinal-regression`` compare with the default on several fold seeds."""


def check_against_default(features: pd.DataFrame, labels: pd.Series, seeds, candidate: str,
                          n_jobs: int = 2) -> pd.DataFrame:
    """The default and one candidate of :data:`CHECKS` on the same fold seeds, each seed and the means (outside any
    nested loop: a screen, not a figure for a choice)."""
    cls, params = CHECKS[candidate]
    rows = []
    for s in seeds:
        for name, model, extra in (("default", StatusClassifier, {}), (candidate, cls, params)):
            clf = model(folds=FOLDS, seed=int(s), n_jobs=n_jobs, **extra)
            metrics, seconds = evaluate_variant({"classifier": clf}, features, labels)
            rows.append({**_row(f"{name}, fold seed {s}", metrics, seconds), "model": name})
    table = pd.DataFrame(rows)
    means = table.groupby("model", sort=False)[["accuracy", "binary_accuracy", "balanced_accuracy"]].mean()
    means.index = [f"{m}, mean over fold seeds {', '.join(str(s) for s in seeds)}" for m in means.index]
    return pd.concat([table.drop(columns="model"), means.reset_index(names="variant")],
                     ignore_index=True)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def load_inputs(results_dir: str | Path) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """Current features and Red List labels of a finished run.

    Occurrence features that the run's feature table lacks (a run made before they existed) are recomputed with
    :func:`sdm.features.occurrence_features` from ``occurrences.parquet`` and ``cubes/current.zarr``.

    Returns ``(features, labels, notes)``: features indexed by species; labels (LC..CR or NaN) on the same index.
    """
    import xarray as xr

    results = Path(results_dir)
    features = pd.read_parquet(results / "iucn" / "features_current_none.parquet")
    notes = []
    missing = [c for c in OCCURRENCE_FEATURES if c not in features.columns]
    if missing:
        occurrences = pd.read_parquet(results / "occurrences.parquet")
        cube = xr.open_zarr(results / "cubes" / "current.zarr", consolidated=False)
        cube = cube[list(cube.data_vars)[0]].load()
        occ = occurrence_features(occurrences, cube)
        features = features.join(occ[missing])
        notes.append(f"{len(missing)} occurrence features recomputed from occurrences.parquet (run predates them)")
    redlist = pd.read_parquet(results / "redlist.parquet")
    labels = redlist.set_index("species")["category"].astype(object).reindex(features.index)
    labels = labels.where(labels.isin(CATEGORIES))
    return features, labels, notes


# ---------------------------------------------------------------------------------------------------------------
# Variants


def variants(features: pd.DataFrame, n_jobs: int = 2) -> list[dict]:
    """The variants compared, in print order: ``name``, ``group``, ``classifier`` (unfitted), ``columns``
    (feature columns, None = the classifier's default). The first of group "default" is the shipped default."""
    niche = [c for c in feature_columns(features) if c.startswith(("niche_mean_", "niche_sd_"))]
    occ0, occ = list(ORIGINAL_OCCURRENCE), list(ORIGINAL_OCCURRENCE) + list(SPREAD_EFFORT)
    common = {"folds": FOLDS, "seed": SEED, "n_jobs": n_jobs}
    et = dict(common, method="extra_trees")
    plain = dict(et, taxonomy=False, geography=False)  # pipeline features only
    genus_only = dict(et, geography=False)

    def v(name, group, clf, columns=None):
        clf.features = None if columns is None else list(columns)
        return {"name": name, "group": group, "classifier": clf, "columns": columns}

    return [
        v("default: extra trees, all features + genus + neighbours", "default", StatusClassifier(**et)),
        v("default with argmax decision (most probable class)", "decision",
          StatusClassifier(**et, decision="argmax")),
        v("balanced weights + argmax decision", "decision",
          StatusClassifier(**et, class_weight="balanced", decision="argmax")),
        v("previous default: HGB balanced, first features", "baseline",
          StatusClassifier(**dict(common, method="hist_gradient_boosting", n_jobs=1), taxonomy=False,
                           geography=False, class_weight="balanced"), occ0 + list(SDM_RANGE) + niche),
        v("occurrence (9 first features)", "features", StatusClassifier(**plain), occ0),
        v("occurrence + spread/effort", "features", StatusClassifier(**plain), occ),
        v("occurrence + spread/effort + niche", "features", StatusClassifier(**plain), occ + niche),
        v("+ SDM range (all features)", "features", StatusClassifier(**plain),
          occ + niche + list(SDM_RANGE)),
        v("occurrence + spread/effort + genus", "features", StatusClassifier(**genus_only), occ),
        v("first features + genus (no spread/effort)", "features", StatusClassifier(**genus_only),
          occ0 + niche + list(SDM_RANGE)),
        v("all features + genus, no neighbours", "features", StatusClassifier(**genus_only)),
        v("default with 8 neighbours", "features", StatusClassifier(**et, neighbours=8)),
        v("default with 30 neighbours", "features", StatusClassifier(**et, neighbours=30)),
        v("random forest, all + genus + neighbours", "models",
          StatusClassifier(**dict(common, method="random_forest"))),
        v("HGB, all + genus + neighbours", "models",
          StatusClassifier(**dict(common, method="hist_gradient_boosting", n_jobs=1))),
        v("torch MLP, all + genus + neighbours", "models", MLPStatusClassifier(**et)),
        v("extra trees balanced weights, all + genus + neighbours", "models",
          StatusClassifier(**et, class_weight="balanced")),
        v("extra trees ordinal (cumulative), all + genus + neighbours", "models",
          StatusClassifier(**et, ordinal=True)),
        v("extra trees calibrated (sigmoid), all + genus + neighbours", "models",
          CalibratedStatusClassifier(**et)),
    ]


def myrcia_status(n_jobs: int = 2, path: str | Path = MYRCIA) -> pd.DataFrame:
    """The status classifier on a second taxon: the *Myrcia* species of Walker et al. with a category LC..CR,
    from their predictors (:data:`MYRCIA_FEATURES`) and the preliminary criterion B rank, the same 10-fold
    protocol; the shipped default and its argmax variant. One genus: the genus features carry nothing here; the
    table has no longitude, so the geography (neighbour) features are left out."""
    from sdm.criteria import CRITERION_B_RANK, criterion_b

    table = pd.read_csv(path)
    table = table[table["category"].isin(CATEGORIES)].set_index("name")
    features = table[list(MYRCIA_FEATURES)].astype(float)
    eoo = table["conr_eoo"].fillna(table["conr_aoo"])  # no polygon: the Guidelines set EOO to AOO
    features["criterion_b_rank"] = criterion_b(np.maximum(eoo, table["conr_aoo"]), table["conr_aoo"],
                                               table["conr_locs"]).map(CRITERION_B_RANK).astype(float)
    labels = table["category"].astype(str)
    rows = []
    for name, decision in (("Myrcia: default (decision auto)", "auto"), ("Myrcia: argmax decision", "argmax")):
        clf = StatusClassifier(folds=FOLDS, seed=SEED, n_jobs=n_jobs, decision=decision,
                               features=list(features.columns), geography=False)
        metrics, seconds = evaluate_variant({"classifier": clf}, features, labels)
        rows.append(_row(name, metrics, seconds))
    criterion = features["criterion_b_rank"].map({v: k for k, v in CRITERION_B_RANK.items()})
    rows.append({"variant": "Myrcia: preliminary criterion B alone (threatened = VU/EN/CR)",
                 "binary_accuracy": float(np.mean(criterion.isin(list(THREATENED)) == labels.isin(list(THREATENED)))),
                 "n_species": int(len(labels))})
    return pd.DataFrame(rows).assign(n_species=len(labels))


def _row(name: str, metrics: dict, seconds: float | None = None) -> dict:
    recall = metrics["per_class_recall"]
    return {
        "variant": name,
        "accuracy": metrics["accuracy"],
        "accuracy_sd": metrics["accuracy_sd"],
        "binary_accuracy": metrics["binary_accuracy"],
        "binary_accuracy_sd": metrics["binary_accuracy_sd"],
        "binary_from_category": metrics["binary_accuracy_from_category"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        **{f"recall_{c}": recall[c] for c in CATEGORIES},
        "seconds": seconds,
    }


def evaluate_variant(variant: dict, features: pd.DataFrame, labels: pd.Series) -> tuple[dict, float]:
    """(metrics, seconds) of one variant's cross-validation."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        metrics, _ = variant["classifier"].cross_validate(features, labels)
    return metrics, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# Anchors and the IUCNN matrix


def _population_sd(values: pd.Series) -> float:
    """Standard deviation over the folds with ``ddof=0``, as :func:`sdm.status.classification_metrics` gives ours,
    so that the anchors' spread and ours are on one scale."""
    return float(np.std(values.to_numpy(dtype=float)))


def anchors_table(path: str | Path = ANCHOR_LOGS) -> pd.DataFrame:
    """Published per-fold numbers, best experiment per (level, classifier, feature family): mean and SD (ddof=0,
    like ours) over the 10 folds of the log's ``test.micro`` (accuracy) and ``test.macro``, plus the IUCNN
    vignette."""
    logs = pd.read_csv(path)
    families = {
        "all_3var_activ": "deep-SDM activations", "zeroD_3var_activ": "deep-SDM activations",
        "rank_3var_activ": "deep-SDM activations", "iucnn_geo": "IUCNN features",
        "iucnn_geo+iucnn_hf": "IUCNN features",
    }
    logs["family"] = logs["feature_set"].map(families).fillna(logs["feature_set"])
    per = logs.groupby(["level", "classifier", "family", "feature_set", "experiment"]).agg(
        micro=("test_micro", "mean"), micro_sd=("test_micro", _population_sd),
        macro=("test_macro", "mean"), macro_sd=("test_macro", _population_sd), folds=("fold", "size"),
    ).reset_index()
    best = per.sort_values("micro").groupby(["level", "classifier", "family"]).tail(1)
    best = best[best["classifier"].isin(["RF", "MlpIucnn"])]
    names = {"RF": "random forest", "MlpIucnn": "IUCNN MLP"}
    rows = [
        {
            "anchor": f"Estopinan et al. logs: {names[r.classifier]} on {r.family} ({r.feature_set})",
            "level": "binary" if r.level == "broad" else "5-class",
            "accuracy": r.micro, "accuracy_sd": r.micro_sd, "macro": r.macro, "macro_sd": r.macro_sd,
            "experiment": r.experiment,
        }
        for r in best.sort_values(["level", "classifier", "family"]).itertuples()
    ]
    rows.append({"anchor": "IUCNN vignette (one test split)", "level": "5-class",
                 "accuracy": IUCNN_VIGNETTE_ACCURACY, "accuracy_sd": np.nan, "macro": np.nan, "macro_sd": np.nan,
                 "experiment": "vignette"})
    return pd.DataFrame(rows)


def _anchor_rates(metrics: dict) -> dict:
    """Species, accuracy, balanced accuracy and per-class recall (NaN for an absent class) of
    :func:`sdm.status.classification_metrics`' output."""
    recall = metrics["per_class_recall"]
    return {"species": metrics["n_species"], "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            **{f"recall_{c}": np.nan if recall[c] is None else recall[c] for c in CATEGORIES}}


def rates_from_confusion(matrix) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present) and each class's recall of a confusion
    matrix whose rows are the true classes LC..CR and columns the predicted ones: its counts expanded back into
    (truth, predicted) pairs and scored like our own predictions (:func:`sdm.status.classification_metrics`)."""
    counts = np.asarray(matrix, dtype=int)
    rows, cols = np.indices(counts.shape)
    categories = np.asarray(CATEGORIES, dtype=object)
    truth = np.repeat(categories[rows.ravel()], counts.ravel())
    predicted = np.repeat(categories[cols.ravel()], counts.ravel())
    return _anchor_rates(classification_metrics(truth, predicted))


def iucnn_published_rates(predictions: str | Path = IUCNN_PREDICTIONS, labels: str | Path = IUCN_LABELS) -> dict:
    """:func:`rates_from_confusion`'s figures for IUCNN's published 5-class predictions (Estopinan et al.'s
    model2indicators data) of the assessed orchids they cover. IUCNN was trained on these labels, so this is an
    in-sample figure: an upper bound on what IUCNN gets on species it has not seen."""
    truth = pd.read_csv(labels).set_index("species")["labels"]
    predicted = pd.read_csv(predictions).set_index("species")["preds"]
    both = pd.concat([truth.rename("truth"), predicted.rename("predicted")], axis=1, join="inner").dropna()
    return _anchor_rates(classification_metrics(both["truth"], both["predicted"]))


def anchor_recall_table() -> pd.DataFrame:
    """Each class's recall of the 5-class anchors, beside ours: Estopinan et al.'s random forest on deep-SDM
    activations (out-of-fold, from their log) and IUCNN's published predictions (in-sample)."""
    rows = [
        {"anchor": "Estopinan et al.: random forest on deep-SDM activations (10-fold, their log)",
         **rates_from_confusion(ESTOPINAN_RF_CONFUSION)},
        {"anchor": "IUCNN: published predictions for the assessed species (in-sample, optimistic)",
         **iucnn_published_rates()},
    ]
    return pd.DataFrame(rows)


def iucnn_matrix_check(n_jobs: int = 2, path: str | Path = IUCNN_MATRIX) -> pd.DataFrame:
    """Our classifiers on IUCNN's own 52-feature matrix (885 species), same protocol: checks the classifier
    itself, independent of our features (anonymous columns, no centroids: no geography features)."""
    matrix = pd.read_csv(path).set_index("species")
    labels = matrix["label_detail"].astype(object)
    features = matrix[[c for c in matrix.columns if c.startswith("f") and c[1:].isdigit()]]
    cols = list(features.columns)
    common = {"folds": FOLDS, "seed": SEED, "n_jobs": n_jobs, "features": cols, "geography": False}
    rows = []
    for name, clf in (
        ("IUCNN 52 features: extra trees", StatusClassifier(**common, taxonomy=False)),
        ("IUCNN 52 features: random forest", StatusClassifier(**common, method="random_forest", taxonomy=False)),
        ("IUCNN 52 features: extra trees + genus", StatusClassifier(**common)),
    ):
        metrics, seconds = evaluate_variant({"classifier": clf}, features, labels)
        rows.append(_row(name, metrics, seconds))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# Not-evaluated species, robustness checks


def predict_not_evaluated(features: pd.DataFrame, labels: pd.Series, classifier: StatusClassifier) -> pd.DataFrame:
    """Fit ``classifier`` on every labelled species and predict those without a label: ``species``,
    ``category``, ``p_LC`` .. ``p_CR``, ``p_threatened``, ``threatened`` (p_threatened > 0.5), and as evidence
    ``genus``, ``genus_n_assessed`` (assessed congeners), ``n_records``, ``n_sites``, ``eoo_km2``, ``range_km2``."""
    clf = classifier._clone().fit(features, labels)
    unlabelled = features[labels.reindex(features.index).isna()]
    proba = clf.predict_proba(unlabelled)
    genera = genus_of(unlabelled.index)
    assessed = pd.Series(genus_of(labels.dropna().index)).value_counts()
    out = pd.DataFrame(
        {
            "species": unlabelled.index.astype(str),
            "category": clf.categories_from(proba).to_numpy(),  # the fitted decision rule, as the pipeline
            **{f"p_{c}": proba[c].to_numpy() for c in CATEGORIES},
        }
    )
    out["p_threatened"] = proba[[c for c in CATEGORIES if c in THREATENED]].sum(axis=1).to_numpy()
    out["threatened"] = out["p_threatened"] > 0.5
    out["genus"] = genera
    out["genus_n_assessed"] = assessed.reindex(genera).fillna(0).astype(int).to_numpy()
    for c in ("n_records", "n_sites", "eoo_km2", "range_km2"):
        out[c] = unlabelled[c].to_numpy() if c in unlabelled else np.nan
    return out.sort_values(["p_threatened", "species"], ascending=[False, True]).reset_index(drop=True)


def repeated_seeds(variant: dict, features: pd.DataFrame, labels: pd.Series, seeds) -> pd.DataFrame:
    """The variant's CV under other fold seeds (same classifier seed): is seed 0's split a lucky one?"""
    rows = []
    for s in seeds:
        clf = variant["classifier"]._clone()
        clf.seed = int(s)
        metrics, seconds = evaluate_variant({"classifier": clf}, features, labels)
        rows.append(_row(f"default on fold seed {s}", metrics, seconds))
    return pd.DataFrame(rows)


def nested_selection(candidates: list[dict], features: pd.DataFrame, labels: pd.Series, seed: int = SEED,
                     inner_folds: int = 5):
    """Nested CV of "choose the variant and its decision rule on inner folds, refit, predict the outer fold".

    In each outer training set (stratified :data:`FOLDS`-fold, ``seed``), every candidate's out-of-fold
    probabilities on an inner split (``min(folds, inner_folds)`` folds, seed + 1: the split of ``decision="auto"``)
    are scored for every rule of :data:`sdm.status.DECISION_RULES` by :func:`sdm.status.decision_score`, the
    criterion of ``decision="auto"``; the best (candidate, rule) is refitted on the whole training set and decides
    the outer fold. The outer folds only give the figure. For the default alone this is its own cross-validation.

    Returns ``(metrics, chosen)``: :func:`sdm.status.classification_metrics` of the outer predictions (binary from
    P(VU) + P(EN) + P(CR) > 0.5 of the chosen model) and ``"variant / rule"`` chosen in each outer fold."""
    y = labels.reindex(features.index)
    y = y[y.isin(CATEGORIES)].astype(str)
    X = features.loc[y.index]
    fold = stratified_folds(y.to_numpy(), FOLDS, seed)
    pred = pd.Series("", index=y.index, dtype=object)
    p_threatened = pd.Series(0.0, index=y.index)
    chosen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        for k in np.unique(fold):
            train, test = fold != k, fold == k
            truth = y[train].map(CATEGORY_CODE).to_numpy(dtype=int)
            best = None
            for cand in candidates:
                inner = cand["classifier"]._clone()
                inner.decision, inner.folds, inner.seed = "argmax", min(inner.folds, inner_folds), seed + 1
                inner.cross_validate(X[train], y[train])
                prior = np.bincount(truth, minlength=len(CATEGORIES)) / len(truth)
                scores = decision_scores(truth, inner.cv_proba_.to_numpy(), prior)
                rule = best_decision(scores)
                if best is None or round(scores[rule], 12) > round(best[0], 12):
                    best = (scores[rule], cand, rule)
            _, cand, rule = best
            chosen.append(f"{cand['name']} / {rule}")
            model = cand["classifier"]._clone()
            model.decision, model.seed = "argmax", seed
            model.fit(X[train], y[train])
            proba = model.predict_proba(X[test])
            pred[test] = np.asarray(CATEGORIES, dtype=object)[decide(proba.to_numpy(), model.prior_, rule)]
            p_threatened[test] = proba[[c for c in CATEGORIES if c in THREATENED]].sum(axis=1).to_numpy()
    return classification_metrics(y.to_numpy(), pred.to_numpy(), fold, p_threatened.to_numpy()), chosen


# ---------------------------------------------------------------------------------------------------------------


SLOW_VARIANTS = (
    "previous default: HGB balanced, first features",
    "HGB, all + genus + neighbours",
    "extra trees ordinal (cumulative), all + genus + neighbours",
    "extra trees calibrated (sigmoid), all + genus + neighbours",
)
"""Variants left out by ``quick=True`` (each takes 30-90 s on a busy 2-core machine)."""
NESTED_CANDIDATES = (
    "default: extra trees, all features + genus + neighbours",
    "all features + genus, no neighbours",
    "default with 8 neighbours",
    "default with 30 neighbours",
    "extra trees balanced weights, all + genus + neighbours",
    "random forest, all + genus + neighbours",
    "HGB, all + genus + neighbours",
)
"""The variants ``--nested`` chooses among (with every decision rule), also under ``quick=True``."""


def iucn_skill_results(results_dir: str | Path, n_jobs: int = 2, seeds=(), nested: bool = False,
                       verbose: bool = False, quick: bool = False) -> dict:
    """Everything this benchmark measures.

    Returns a dict: ``variants`` (DataFrame, one row per variant: accuracy, binary accuracy and their fold SDs,
    balanced accuracy, macro F1, per-class recall, seconds), ``metrics`` ({variant: full metrics dict with the
    confusion matrix}), ``default`` (name of the shipped default), ``anchors`` (DataFrame), ``iucnn_matrix``
    (DataFrame, our classifiers on IUCNN's 52 features), ``not_evaluated`` (DataFrame, predictions for the
    species without a label), ``seeds`` / ``nested`` (DataFrames, empty unless asked), ``n_labelled``,
    ``n_not_evaluated``, ``notes`` (list of str), ``target``.
    """
    with warnings.catch_warnings():
        # Emitted by joblib worker threads of the tree ensembles now and then; harmless here (default config).
        warnings.filterwarnings("ignore", message=".*should be used with .sklearn.utils.parallel.Parallel.*")
        return _results(results_dir, n_jobs, seeds, nested, verbose, quick)


def _results(results_dir, n_jobs, seeds, nested, verbose, quick) -> dict:
    features, labels, notes = load_inputs(results_dir)
    rows, all_metrics = [], {}
    vs = variants(features, n_jobs)
    if quick:
        vs = [v for v in vs if v["name"] not in SLOW_VARIANTS]
        notes.append("quick run: " + ", ".join(SLOW_VARIANTS) + " left out")
    for v in vs:
        metrics, seconds = evaluate_variant(v, features, labels)
        all_metrics[v["name"]] = metrics
        rows.append(_row(v["name"], metrics, seconds))
        if verbose:
            print(f"  {v['name']}: {metrics['accuracy']:.3f} / {metrics['binary_accuracy']:.3f} ({seconds:.0f} s)",
                  file=sys.stderr, flush=True)
    default = vs[0]
    seed_table = repeated_seeds(default, features, labels, seeds) if seeds else pd.DataFrame()
    nested_table = pd.DataFrame()
    if nested:
        cands = [v for v in variants(features, n_jobs) if v["name"] in NESTED_CANDIDATES]
        metrics, chosen = nested_selection(cands, features, labels)
        row = _row(f"nested CV: best of {len(cands)} variants x {len(DECISION_RULES)} rules (below)", metrics)
        row["chosen"] = "; ".join(f"{c} x{chosen.count(c)}" for c in dict.fromkeys(chosen))
        row["candidates"] = "; ".join(c["name"] for c in cands)
        nested_table = pd.DataFrame([row])
    not_evaluated = predict_not_evaluated(features, labels, default["classifier"])
    return {
        "variants": pd.DataFrame(rows),
        "metrics": all_metrics,
        "default": default["name"],
        "anchors": anchors_table(),
        "anchor_recall": anchor_recall_table(),
        "iucnn_matrix": iucnn_matrix_check(n_jobs),
        "myrcia": myrcia_status(n_jobs),
        "not_evaluated": not_evaluated,
        "seeds": seed_table,
        "nested": nested_table,
        "n_labelled": int(labels.notna().sum()),
        "n_not_evaluated": int(labels.isna().sum()),
        "notes": notes,
        "target": dict(TARGET),
    }


def printable_tables(results: dict) -> dict[str, pd.DataFrame]:
    """The results of :func:`iucn_skill_results` as named DataFrames, rounded for printing."""
    m = results["metrics"][results["default"]]
    tables = {
        f"variants ({results['n_labelled']} species, stratified {FOLDS}-fold CV, seed {SEED}; "
        f"targets 5-class >= {results['target']['accuracy']}, binary >= {results['target']['binary_accuracy']})":
            results["variants"],
        "anchors (published, mean and SD over 10 folds)": results["anchors"],
        "anchors' recall per class (5-class)": results["anchor_recall"],
        "classifier check on IUCNN's 52-feature matrix": results["iucnn_matrix"],
        "second taxon: Myrcia (Walker et al.'s predictors)": results["myrcia"],
        f"confusion matrix of the default ({results['default']}), rows = Red List, columns = predicted":
            pd.DataFrame(m["confusion_matrix"]["matrix"], index=list(CATEGORIES), columns=list(CATEGORIES)),
        f"not-evaluated species ({results['n_not_evaluated']}), default classifier": results["not_evaluated"],
    }
    if len(results["seeds"]):
        tables["default on other fold seeds"] = results["seeds"]
    if len(results["nested"]):
        tables["nested CV of the variant choice"] = results["nested"]
    return {k: v.round(3) for k, v in tables.items()}


def iucn_skill_tables(results_dir: str | Path, n_jobs: int = 2, seeds=(), nested: bool = False,
                      quick: bool = False) -> dict:
    """:func:`printable_tables` of :func:`iucn_skill_results`: {title: DataFrame}, for ``benchmarks/skill.py``."""
    return printable_tables(iucn_skill_results(results_dir, n_jobs=n_jobs, seeds=seeds, nested=nested, quick=quick))


def _fmt(x, sd=None) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "  -  "
    return f"{x:.3f}" + (f" ± {sd:.3f}" if sd is not None and not np.isnan(sd) else "")


def format_tables(tables: dict) -> str:
    """The tables as text, ours next to the anchors."""
    lines = [
        f"IUCN status, IUCNN orchids: {tables['n_labelled']} labelled species with features, stratified "
        f"{FOLDS}-fold CV (seed {SEED}); binary = threatened (VU/EN/CR) when P(VU)+P(EN)+P(CR) > 0.5.",
        f"Targets: 5-class >= {tables['target']['accuracy']}, binary >= {tables['target']['binary_accuracy']}.",
        *[f"Note: {n}" for n in tables["notes"]],
        "",
        f"{'variant':50s} {'5-class':>14s} {'binary':>14s} {'bin(cat)':>8s} {'bal.acc':>7s} {'macroF1':>7s}  "
        + " ".join(f"{'R_' + c:>5s}" for c in CATEGORIES) + "   sec",
    ]

    def line(r):
        return (f"{r['variant'][:50]:50s} {_fmt(r['accuracy'], r['accuracy_sd']):>14s} "
                f"{_fmt(r['binary_accuracy'], r['binary_accuracy_sd']):>14s} {_fmt(r['binary_from_category']):>8s} "
                f"{_fmt(r['balanced_accuracy']):>7s} {_fmt(r['macro_f1']):>7s}  "
                + " ".join(f"{r['recall_' + c]:5.2f}" if r['recall_' + c] is not None else "  -  "
                           for c in CATEGORIES)
                + (f" {r['seconds']:5.0f}" if r.get("seconds") is not None and not pd.isna(r.get("seconds")) else ""))

    for r in tables["variants"].to_dict("records"):
        lines.append(line(r))
    for name in ("seeds", "nested"):
        if len(tables[name]):
            lines.append("")
            for r in tables[name].to_dict("records"):
                lines.append(line(r))
                if r.get("chosen"):
                    lines.append(f"    candidates: {r['candidates']}")
                    lines.append(f"    chosen per outer fold (variant / rule, by inner decision_score): {r['chosen']}")
    lines += ["", "Anchors (published, same labels; mean ± SD over 10 folds; 'macro' = the log's test.macro):"]
    for r in tables["anchors"].to_dict("records"):
        lines.append(f"  {r['anchor'][:80]:80s} {r['level']:>7s}  accuracy {_fmt(r['accuracy'], r['accuracy_sd']):>14s}"
                     f"  macro {_fmt(r['macro'], r['macro_sd']):>14s}")
    lines += ["", "Anchors' recall per class (5-class; pooled predictions):",
              f"  {'anchor':80s} {'species':>7s} {'accuracy':>8s} {'bal.acc':>7s}  "
              + " ".join(f"{'R_' + c:>5s}" for c in CATEGORIES)]
    for r in tables["anchor_recall"].to_dict("records"):
        lines.append(f"  {r['anchor'][:80]:80s} {r['species']:7d} {r['accuracy']:8.3f} {r['balanced_accuracy']:7.3f}  "
                     + " ".join(f"{r['recall_' + c]:5.2f}" for c in CATEGORIES))
    lines += ["", "Classifier check on IUCNN's own 52-feature matrix (885 species, same protocol):"]
    for r in tables["iucnn_matrix"].to_dict("records"):
        lines.append(line(r))
    myrcia = tables["myrcia"]
    lines += ["", f"Second taxon: Myrcia ({int(myrcia['n_species'].iloc[0])} species with LC..CR, Walker et al.'s "
              f"predictors + criterion B rank, same protocol):"]
    for r in myrcia.to_dict("records"):
        if "recall_LC" in r and not pd.isna(r.get("accuracy")):
            lines.append(line(r))
        else:
            lines.append(f"  {r['variant']}: binary accuracy {r['binary_accuracy']:.3f}")
    m = tables["metrics"][tables["default"]]
    lines += ["", f"Confusion matrix of the default ({tables['default']}), rows = Red List, columns = predicted:",
              "        " + " ".join(f"{c:>5s}" for c in CATEGORIES)]
    for c, row in zip(CATEGORIES, m["confusion_matrix"]["matrix"]):
        lines.append(f"  {c:>5s} " + " ".join(f"{v:5d}" for v in row))
    ne = tables["not_evaluated"]
    lines += ["", f"Not-evaluated species ({len(ne)}), default classifier fitted on all labelled species: "
              + ", ".join(f"{c} {int((ne['category'] == c).sum())}" for c in CATEGORIES)
              + f"; threatened (p > 0.5) {int(ne['threatened'].sum())}",
              f"  {'species':34s} {'cat':>4s} " + " ".join(f"{'p_' + c:>5s}" for c in CATEGORIES)
              + f" {'p_thr':>5s} {'congeners':>9s} {'records':>7s}"]
    for r in ne.to_dict("records"):
        lines.append(f"  {r['species'][:34]:34s} {r['category']:>4s} "
                     + " ".join(f"{r['p_' + c]:5.2f}" for c in CATEGORIES)
                     + f" {r['p_threatened']:5.2f} {r['genus_n_assessed']:9d} {int(r['n_records']):7d}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="results/ of an orchids_global run")
    parser.add_argument("--out", help="CSV for the not-evaluated species' predictions")
    parser.add_argument("--n-jobs", type=int, default=2, help="threads for the tree ensembles (default 2)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="also run the default on these fold seeds")
    parser.add_argument("--nested", action="store_true", help="also run nested CV of the variant choice (slow)")
    parser.add_argument("--quick", action="store_true", help="leave out the four slowest variants")
    parser.add_argument("--soft-vote", type=int, nargs="+", metavar="SEED",
                        help="only compare the default with a soft vote of extra trees and random forest on these "
                             "fold seeds, then exit")
    parser.add_argument("--ordinal-regression", type=int, nargs="+", metavar="SEED",
                        help="only compare the default with ordinal regression (extra-trees regression of the "
                             "category, cut points chosen on inner folds) on these fold seeds, then exit")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    check = [(name, seeds) for name, seeds in zip(CHECKS, (args.soft_vote, args.ordinal_regression)) if seeds]
    if check:
        features, labels, _ = load_inputs(args.results)
        for name, seeds in check:
            print(check_against_default(features, labels, seeds, name, args.n_jobs).to_string(
                index=False, float_format="%.3f"))
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return 0
    tables = iucn_skill_results(args.results, n_jobs=args.n_jobs, seeds=args.seeds, nested=args.nested, verbose=True,
                                quick=args.quick)
    print(format_tables(tables))
    if args.out:
        tables["not_evaluated"].to_csv(args.out, index=False)
        print(f"\nnot-evaluated species written to {args.out}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
