"""Red List status: a classifier from species features to IUCN categories, and criterion A3 on range loss.

The classifier is estimator-shaped (``fit`` / ``predict_proba`` / ``predict``), trained on species that have a Red
List label (LC, NT, VU, EN, CR), with class-balanced sample weights and stratified k-fold cross-validation.
For future scenarios its prediction is cross-checked with criterion A3 (projected reduction >= 30 / 50 / 80 %)
and the more threatened of the two is kept.
"""

from __future__ import annotations

import warnings
from os import PathLike

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from sdm.features import LOG_COLUMNS, feature_columns
from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED

METHODS = ("hist_gradient_boosting", "random_forest")

A3_THRESHOLDS: tuple[tuple[float, str], ...] = ((0.8, "CR"), (0.5, "EN"), (0.3, "VU"))
"""Criterion A3: projected reduction (fraction) at or above which a category applies, most threatened first."""

CURRENT = "current"
"""Scenario name of the present; its status uses the Red List label where one exists."""

_EPS = 1e-9  # fractions such as 1 - 0.7 land at 0.29999999999999993; thresholds are inclusive


def _proba_columns() -> list[str]:
    return [f"p_{c}" for c in CATEGORIES]


def _valid_labels(labels: pd.Series) -> pd.Series:
    """Labels restricted to assessed categories (DD, NE, NaN and anything else dropped)."""
    labels = labels.astype(object)
    return labels[labels.isin(CATEGORIES)].astype(str)


class StatusClassifier:
    """Species features -> IUCN category (LC, NT, VU, EN, CR).

    Parameters
    ----------
    method
        ``"hist_gradient_boosting"`` (default) or ``"random_forest"``; both handle missing features (NaN) natively.
    folds
        Number of folds of :meth:`cross_validate` (reduced to the smallest class count, at least 2).
    seed
        Random seed of the estimator and of the fold split.
    features
        Feature columns; None = :func:`sdm.features.feature_columns` of the table given to :meth:`fit`.
    n_jobs
        Threads for fitting and predicting (random-forest workers and the OpenMP threads of gradient boosting);
        None = library defaults (all cores). Default 1: Red List sets are small, and Snakemake runs jobs side by
        side, where unlimited OpenMP threads oversubscribe the cores and run many times slower.

    Counts and areas (:data:`sdm.features.LOG_COLUMNS`) enter as ``log1p``; infinities as missing values. Classes
    are weighted inversely to their frequency. A class absent from training gets probability 0.
    """

    def __init__(
        self,
        method: str = "hist_gradient_boosting",
        folds: int = 5,
        seed: int = 0,
        features: list[str] | None = None,
        n_jobs: int | None = 1,
    ):
        self.method = method
        self.folds = folds
        self.seed = seed
        self.features = features
        self.n_jobs = n_jobs

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("method", "folds", "seed", "features", "n_jobs")}

    def _clone(self) -> "StatusClassifier":
        return type(self)(**self.get_params())

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds!r}")

    def _design(self, features: pd.DataFrame, columns: list[str]) -> np.ndarray:
        missing = [c for c in columns if c not in features.columns]
        if missing:
            raise ValueError(f"features lack column(s) {', '.join(repr(c) for c in missing)}")
        X = features[columns].astype(float).copy()
        for c in columns:
            if c in LOG_COLUMNS:
                X[c] = np.log1p(X[c].clip(lower=0))
        X = X.to_numpy(dtype=float)
        X[~np.isfinite(X)] = np.nan
        return X

    def _estimator(self, n_train: int):
        if self.method == "hist_gradient_boosting":
            # Red List training sets are tens to thousands of species: the default leaf size of 20 would leave
            # tiny sets with a handful of leaves.
            return HistGradientBoostingClassifier(
                min_samples_leaf=int(min(20, max(2, n_train // 10))), random_state=self.seed
            )
        return RandomForestClassifier(n_estimators=300, random_state=self.seed, n_jobs=self.n_jobs)

    def fit(self, features: pd.DataFrame, labels: pd.Series) -> "StatusClassifier":
        """Fit on the species (index of ``features``) whose label in ``labels`` (indexed by species) is one of
        :data:`sdm.redlist.CATEGORIES`; other rows are ignored."""
        self._check()
        y = _valid_labels(labels.reindex(features.index))
        if len(y) == 0:
            raise ValueError("no species with a Red List category (LC, NT, VU, EN, CR) among the features")
        self.features_ = list(self.features) if self.features is not None else feature_columns(features)
        if not self.features_:
            raise ValueError("no feature columns to train on")
        X = self._design(features.loc[y.index], self.features_)
        self.classes_ = [c for c in CATEGORIES if c in set(y)]
        self.n_train_ = len(y)
        if len(self.classes_) == 1:
            self.estimator_ = None  # one class seen: predict it with certainty
        else:
            self.estimator_ = self._estimator(len(y))
            with threadpool_limits(limits=self.n_jobs, user_api="openmp"):
                self.estimator_.fit(X, y.to_numpy(), sample_weight=compute_sample_weight("balanced", y.to_numpy()))
        return self

    def predict_proba(self, features: pd.DataFrame) -> pd.DataFrame:
        """Probability of each category, columns = :data:`sdm.redlist.CATEGORIES`, index = species; rows sum to 1."""
        if not hasattr(self, "features_"):
            raise RuntimeError("StatusClassifier is not fitted")
        out = pd.DataFrame(0.0, index=features.index, columns=list(CATEGORIES))
        if len(features) == 0:
            return out
        if self.estimator_ is None:
            out[self.classes_[0]] = 1.0
            return out
        with threadpool_limits(limits=self.n_jobs, user_api="openmp"):
            proba = self.estimator_.predict_proba(self._design(features, self.features_))
        for j, c in enumerate(self.estimator_.classes_):
            out[str(c)] = proba[:, j]
        return out

    def predict(self, features: pd.DataFrame) -> pd.Series:
        """Most probable category per species (ties go to the less threatened one)."""
        proba = self.predict_proba(features)
        cats = np.asarray(CATEGORIES, dtype=object)[proba.to_numpy().argmax(axis=1)] if len(proba) else []
        return pd.Series(cats, index=features.index, name="category", dtype=object)

    def cross_validate(self, features: pd.DataFrame, labels: pd.Series) -> tuple[dict, pd.Series]:
        """Stratified k-fold cross-validation on the labelled species.

        ``n_splits = max(2, min(folds, smallest class count))``; a class with a single member lands in one test
        fold (and is then missing from that fold's training set).

        Returns
        -------
        metrics
            ``n_species``, ``folds``, ``accuracy`` (5-class), ``accuracy_sd`` (standard deviation over folds),
            ``balanced_accuracy`` (mean recall over the classes present), ``binary_accuracy`` (threatened =
            VU/EN/CR vs not), ``macro_f1``, ``per_class_recall`` ({category: recall, None if absent}),
            ``confusion_matrix`` ({"labels": CATEGORIES, "matrix": rows = Red List, columns = predicted}).
            Plain Python types, ready for JSON.
        oof
            Out-of-fold predicted category per labelled species (name ``category_cv``).
        """
        self._check()
        y = _valid_labels(labels.reindex(features.index))
        if len(y) < 2:
            raise ValueError(f"cross-validation needs at least 2 labelled species, got {len(y)}")
        counts = y.value_counts()
        n_splits = max(2, min(int(self.folds), int(counts.min())))
        X = features.loc[y.index]
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        oof = pd.Series(index=y.index, dtype=object, name="category_cv")
        fold_acc = []
        with warnings.catch_warnings():
            # "The least populated class in y has only 1 members": expected for rare categories.
            warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
            splits = list(splitter.split(np.zeros(len(y)), y.to_numpy()))
        for train, test in splits:
            model = self._clone().fit(X.iloc[train], y.iloc[train])
            pred = model.predict(X.iloc[test])
            oof.iloc[test] = pred.to_numpy()
            fold_acc.append(accuracy_score(y.iloc[test], pred))

        truth, pred = y.to_numpy(), oof.to_numpy().astype(str)
        present = [c for c in CATEGORIES if c in set(truth)]
        recall = recall_score(truth, pred, labels=present, average=None, zero_division=0)
        recall_by = dict(zip(present, recall))
        threatened = list(THREATENED)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
            balanced = balanced_accuracy_score(truth, pred)
        metrics = {
            "n_species": int(len(y)),
            "folds": int(n_splits),
            "accuracy": float(accuracy_score(truth, pred)),
            "accuracy_sd": float(np.std(fold_acc)),
            "balanced_accuracy": float(balanced),
            "binary_accuracy": float(np.mean(np.isin(truth, threatened) == np.isin(pred, threatened))),
            "macro_f1": float(f1_score(truth, pred, labels=present, average="macro", zero_division=0)),
            "per_class_recall": {c: (float(recall_by[c]) if c in recall_by else None) for c in CATEGORIES},
            "confusion_matrix": {
                "labels": list(CATEGORIES),
                "matrix": confusion_matrix(truth, pred, labels=list(CATEGORIES)).tolist(),
            },
        }
        return metrics, oof


def save_classifier(clf: StatusClassifier, path: str | PathLike) -> None:
    """Write a fitted classifier with joblib."""
    joblib.dump(clf, path)


def load_classifier(path: str | PathLike) -> StatusClassifier:
    """Read a classifier written by :func:`save_classifier`."""
    clf = joblib.load(path)
    if not isinstance(clf, StatusClassifier):
        raise TypeError(f"{path} holds a {type(clf).__name__}, not a StatusClassifier")
    return clf


def a3_category(range_loss: pd.Series) -> pd.Series:
    """IUCN criterion A3 on projected range loss (fraction 0..1): >= 0.8 CR, >= 0.5 EN, >= 0.3 VU, else LC.

    NaN (no prediction for the species) stays NaN. Same index as ``range_loss``, name ``category_a3``.
    """
    loss = pd.to_numeric(range_loss, errors="coerce").astype(float)
    out = pd.Series("LC", index=loss.index, dtype=object, name="category_a3")
    for threshold, cat in reversed(A3_THRESHOLDS):  # least to most threatened, so the last match wins
        out[loss >= threshold - _EPS] = cat
    out[loss.isna()] = np.nan
    return out


def _more_threatened(a: pd.Series, b: pd.Series) -> pd.Series:
    """Elementwise the more threatened of two category series; NaN in ``b`` keeps ``a``."""
    ca = a.map(CATEGORY_CODE)
    cb = b.map(CATEGORY_CODE).fillna(-1)
    return a.where(ca >= cb, b).astype(object)


def status_table(
    classifier: StatusClassifier,
    features_by_run: dict[tuple[str, str], pd.DataFrame],
    redlist: pd.Series | pd.DataFrame,
    oof: pd.Series | None = None,
) -> pd.DataFrame:
    """Predicted status per species x run.

    Parameters
    ----------
    classifier
        A fitted :class:`StatusClassifier`.
    features_by_run
        ``{(scenario, dispersal): species_features(...)}``; the present is the key ``("current", "none")``.
    redlist
        Red List category per species (index species; may hold DD/NE/NA or miss species), or the table of
        :func:`sdm.redlist.read_redlist` (``species`` plus ``raw_category``, which keeps DD/NE for display, or
        ``category``).
    oof
        Out-of-fold predictions from :meth:`StatusClassifier.cross_validate`, or None.

    Returns
    -------
    One row per species x run (runs in the dict's order, species in each table's order): ``species``,
    ``scenario``, ``dispersal``, ``category_classifier``, ``p_LC`` .. ``p_CR`` (probabilities),
    ``category_a3`` (criterion A3 on ``range_loss``; NaN for current), ``category`` (futures: the more threatened
    of classifier and A3; current: the classifier's), ``redlist_category`` (the Red List label or ""),
    ``category_cv`` (out-of-fold prediction for assessed species, else ""), ``status`` (current: the Red List
    category where it is one of LC..CR, else ``category``; futures: ``category``), ``no_suitable_cell``
    (range_km2 == 0), and as evidence ``range_km2``, ``range_change``, ``range_loss``.
    """
    if isinstance(redlist, pd.DataFrame):
        column = "raw_category" if "raw_category" in redlist.columns else "category"
        redlist = redlist.set_index("species")[column]
    redlist = redlist.astype(object)
    oof = pd.Series(dtype=object) if oof is None else oof.astype(object)
    tables = []
    for (scenario, dispersal), feats in features_by_run.items():
        if "range_loss" not in feats.columns or "range_km2" not in feats.columns:
            missing = [c for c in ("range_km2", "range_loss") if c not in feats.columns]
            raise ValueError(f"features of run ({scenario!r}, {dispersal!r}) lack column(s) {missing}")
        index = feats.index
        proba = classifier.predict_proba(feats)
        cat_clf = pd.Series(np.asarray(CATEGORIES, dtype=object)[proba.to_numpy().argmax(axis=1)], index=index)
        if scenario == CURRENT:
            cat_a3 = pd.Series(np.nan, index=index, dtype=object)
            category = cat_clf
        else:
            cat_a3 = a3_category(feats["range_loss"])
            category = _more_threatened(cat_clf, cat_a3)
        rl = redlist.reindex(index)
        rl_valid = rl.where(rl.isin(CATEGORIES))
        status = category.copy()
        if scenario == CURRENT:
            status = rl_valid.where(rl_valid.notna(), category)
        table = pd.DataFrame(
            {
                "species": index.astype(str),
                "scenario": scenario,
                "dispersal": dispersal,
                "category_classifier": cat_clf.to_numpy(),
                **{f"p_{c}": proba[c].to_numpy(dtype=float) for c in CATEGORIES},
                "category_a3": cat_a3.to_numpy(),
                "category": category.to_numpy(),
                "redlist_category": rl.fillna("").astype(str).to_numpy(),
                "category_cv": oof.reindex(index).fillna("").astype(str).to_numpy(),
                "status": status.to_numpy(),
                "no_suitable_cell": (feats["range_km2"] == 0).to_numpy(),
                "range_km2": feats["range_km2"].to_numpy(dtype=float),
                "range_change": feats["range_change"].to_numpy(dtype=float)
                if "range_change" in feats
                else np.nan,
                "range_loss": feats["range_loss"].to_numpy(dtype=float),
            }
        )
        tables.append(table)
    if not tables:
        raise ValueError("features_by_run is empty")
    return pd.concat(tables, ignore_index=True)
