"""Red List status: a classifier from species features to IUCN categories, and criterion A3 on range loss.

The classifier is estimator-shaped (``fit`` / ``predict_proba`` / ``predict``), trained on species that have a Red
List label (LC, NT, VU, EN, CR), evaluated by stratified k-fold cross-validation. Besides the species features it
uses, by default, the Red List categories of assessed species of the same genus (taxonomy): assessments come in
batches per genus and region, and the share of threatened congeners is the strongest single predictor on the IUCNN
orchids (``benchmarks/skill_iucn.py``); and, also by default, the categories of the assessed species that live
nearest (geography): threat clusters in space, where habitat is lost and where assessors worked. For future
scenarios its prediction is cross-checked with criterion A3 (projected reduction >= 30 / 50 / 80 %) and the more
threatened of the two is kept.
"""

from __future__ import annotations

import warnings
from os import PathLike

import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from sdm.features import LOG_COLUMNS, feature_columns
from sdm.redlist import CATEGORIES, CATEGORY_CODE, THREATENED

METHODS = ("extra_trees", "random_forest", "hist_gradient_boosting")
CLASS_WEIGHTS = (None, "balanced")

A3_THRESHOLDS: tuple[tuple[float, str], ...] = ((0.8, "CR"), (0.5, "EN"), (0.3, "VU"))
"""Criterion A3: projected reduction (fraction) at or above which a category applies, most threatened first."""

CURRENT = "current"
"""Scenario name of the present; its status uses the Red List label where one exists."""

GENUS_COLUMNS: tuple[str, ...] = tuple(f"genus_share_{c}" for c in CATEGORIES) + ("genus_n_assessed",)
"""Taxonomy features the classifier adds when ``taxonomy=True``: the share of each category among the assessed
species of the genus (scikit-learn's ``TargetEncoder``, shrunk toward the training set's shares by its empirical
Bayes smoothing; one column per category seen in training) and the number of *other* assessed species of the
genus."""

NEIGHBOURS = 15
"""Default number of assessed species, nearest by record centroid, that the geography features summarise."""
CENTROID_COLUMNS: tuple[str, str] = ("centroid_lon", "centroid_lat")
"""Feature columns the geography features read (degrees; :func:`sdm.features.occurrence_features`)."""
GEOGRAPHY_COLUMNS: tuple[str, ...] = ("neighbours_share_threatened", "neighbours_mean_category",
                                      "neighbours_mean_distance_km")
"""Geography features the classifier adds when ``geography=True``: among the ``neighbours`` (default
:data:`NEIGHBOURS`) assessed training species whose record centroids lie nearest on the sphere (great circle), the
share that is threatened (VU, EN, CR), their mean category on LC = 0 .. CR = 4, and their mean distance (km,
entered as ``log1p``). A training species sees neighbours from the other folds of an inner split (never its own
label); a species to predict sees all training species. A species without a centroid gets missing values."""

DECISIONS = ("argmax", "auto")
"""How :meth:`StatusClassifier.decide` turns class probabilities into one category (see there)."""
PRIOR_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Candidate exponents of the prior shift that ``decision="auto"`` chooses among on inner folds."""
ORDINAL = "ordinal"
"""The candidate of ``decision="auto"`` that picks the category of least expected ordinal distance."""
DECISION_RULES: tuple[float | str, ...] = PRIOR_SHIFTS + (ORDINAL,)
"""Every rule ``decision="auto"`` chooses among, in order of preference on ties (see :func:`best_decision`)."""

_INNER_FOLDS = 5  # out-of-fold genus shares for training species
_EPS = 1e-9  # fractions such as 1 - 0.7 land at 0.29999999999999993; thresholds are inclusive


def _proba_columns() -> list[str]:
    return [f"p_{c}" for c in CATEGORIES]


def _valid_labels(labels: pd.Series) -> pd.Series:
    """Labels restricted to assessed categories (DD, NE, NaN and anything else dropped)."""
    labels = labels.astype(object)
    return labels[labels.isin(CATEGORIES)].astype(str)


def genus_of(species) -> np.ndarray:
    """Genus of each binomial: its first word (``"Orchis mascula"`` -> ``"Orchis"``)."""
    return np.asarray([str(s).strip().split(" ", 1)[0] for s in species], dtype=object)


def _other_congeners(genera_train: np.ndarray, genera: np.ndarray, own: bool) -> np.ndarray:
    """Assessed training species of each species' genus, the species itself left out (``own``: the species are
    the training species, so each count drops one): the same meaning at fit and at predict time."""
    counts = pd.Series(genera_train).value_counts()
    n = counts.reindex(genera).fillna(0).to_numpy(dtype=float)
    return n - 1 if own else n


def _centroids_radians(features: pd.DataFrame) -> np.ndarray:
    """(n, 2) latitude, longitude of the record centroids in radians (the order ``BallTree``'s haversine wants);
    NaN where a species has none."""
    missing = [c for c in CENTROID_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"features lack column(s) {', '.join(repr(c) for c in missing)}, which the geography "
                         f"features need (the Red List categories of the nearest assessed species); "
                         f"pass geography=False to train without them")
    lon, lat = (features[c].to_numpy(dtype=float) for c in CENTROID_COLUMNS)
    return np.radians(np.column_stack([lat, lon]))


def neighbour_features(pool: np.ndarray, pool_codes: np.ndarray, query: np.ndarray,
                       k: int = NEIGHBOURS) -> np.ndarray:
    """:data:`GEOGRAPHY_COLUMNS` of each ``query`` point among the ``k`` nearest ``pool`` points.

    ``pool``, ``query``: (n, 2) latitude, longitude in radians; ``pool_codes``: category codes (LC = 0 .. CR = 4)
    of the pool. Rows of ``query`` with a missing coordinate, and every row when the pool is empty, are NaN. The
    distance column is ``log1p`` of the mean great-circle distance in km."""
    from sklearn.neighbors import BallTree

    from sdm.features import EARTH_RADIUS_KM

    out = np.full((len(query), len(GEOGRAPHY_COLUMNS)), np.nan)
    known = np.isfinite(query).all(axis=1)
    if len(pool) == 0 or not known.any():
        return out
    distance, index = BallTree(pool, metric="haversine").query(query[known], k=min(int(k), len(pool)))
    codes = np.asarray(pool_codes)[index]
    out[known] = np.column_stack([
        (codes >= CATEGORY_CODE["VU"]).mean(axis=1),
        codes.mean(axis=1),
        np.log1p(distance.mean(axis=1) * EARTH_RADIUS_KM),
    ])
    return out


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """Test-fold index (0 .. n_splits - 1) of each label, stratified by category and fixed by ``seed``.

    ``n_splits = max(2, min(folds, smallest class count))``; a class with a single member lands in one test fold.
    """
    y = np.asarray(labels, dtype=object).astype(str)
    if len(y) < 2:
        raise ValueError(f"cross-validation needs at least 2 labelled species, got {len(y)}")
    n_splits = max(2, min(int(folds), int(pd.Series(y).value_counts().min())))
    fold = np.empty(len(y), dtype=int)
    with warnings.catch_warnings():
        # "The least populated class in y has only 1 members": expected for rare categories.
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
            fold[test] = k
    return fold


def decide(proba: np.ndarray, prior: np.ndarray, rule) -> np.ndarray:
    """Category codes (0 LC .. 4 CR) from class probabilities ``proba`` (n, 5).

    ``rule``: a number a in [0, 1], the prior shift: argmax of p_c / prior_c ** a (0 = the most probable class, the
    decision of highest accuracy; 1 = divide out the training frequencies, which favours balanced accuracy and the
    rare classes); or :data:`ORDINAL`, the category c minimising the expected ordinal distance sum_k p_k |k - c|
    (the median of the predicted distribution; LC < NT < VU < EN < CR). Classes absent from training (prior 0)
    are never chosen by the shift."""
    proba = np.asarray(proba, dtype=float)
    if rule == ORDINAL:
        cumulative = np.cumsum(proba, axis=1)
        return np.argmax(cumulative >= 0.5 * cumulative[:, -1:] - 1e-12, axis=1)
    prior = np.asarray(prior, dtype=float)
    with np.errstate(divide="ignore"):
        shifted = np.where(prior > 0, proba / np.where(prior > 0, prior, 1.0) ** float(rule), -np.inf)
    return shifted.argmax(axis=1)


def decision_score(truth_codes: np.ndarray, predicted_codes: np.ndarray) -> float:
    """What ``decision="auto"`` maximises on inner folds: the mean of accuracy and balanced accuracy (better
    weak-class recall without giving up overall accuracy)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        balanced = balanced_accuracy_score(truth_codes, predicted_codes)
    return 0.5 * (accuracy_score(truth_codes, predicted_codes) + balanced)


def decision_scores(truth_codes: np.ndarray, proba: np.ndarray, prior: np.ndarray) -> dict:
    """:func:`decision_score` of every rule in :data:`DECISION_RULES` applied (:func:`decide`) to out-of-fold
    probabilities ``proba`` (n, 5) of species with category codes ``truth_codes``; ``prior``: the training
    frequencies (5,). Returns ``{rule: score}`` in the order of :data:`DECISION_RULES`."""
    return {rule: decision_score(truth_codes, decide(proba, prior, rule)) for rule in DECISION_RULES}


def best_decision(scores: dict) -> float | str:
    """The rule of highest score in ``{rule: score}`` (scores equal to 12 decimals count as ties); ties go to
    the rule first in :data:`DECISION_RULES` (the smaller prior shift, the ordinal median last)."""
    return max(scores, key=lambda rule: (round(scores[rule], 12), -DECISION_RULES.index(rule)))


def classification_metrics(truth, predicted, fold=None, p_threatened=None) -> dict:
    """Skill of predicted categories against Red List labels.

    Parameters
    ----------
    truth, predicted
        Categories (LC..CR), same length.
    fold
        Test-fold index per species; None = one fold (standard deviations 0).
    p_threatened
        Probability of VU/EN/CR per species; when given, the binary prediction is ``p_threatened > 0.5``
        (the Bayes decision for the binary task), else the predicted category is VU/EN/CR.

    Returns
    -------
    ``n_species``, ``folds``, ``accuracy`` (5-class), ``accuracy_sd`` (population standard deviation over folds),
    ``balanced_accuracy`` (mean recall over the classes present), ``binary_accuracy`` (threatened = VU/EN/CR vs
    not), ``binary_accuracy_sd``, ``binary_accuracy_from_category`` (the predicted category collapsed to
    threatened / not), ``macro_f1``, ``per_class_recall`` ({category: recall, None if absent}),
    ``confusion_matrix`` ({"labels": CATEGORIES, "matrix": rows = Red List, columns = predicted}). Plain Python
    types, ready for JSON.
    """
    truth = np.asarray(truth, dtype=object).astype(str)
    pred = np.asarray(predicted, dtype=object).astype(str)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and predicted differ in length: {len(truth)} vs {len(pred)}")
    fold = np.zeros(len(truth), dtype=int) if fold is None else np.asarray(fold)
    threatened = list(THREATENED)
    true_t = np.isin(truth, threatened)
    cat_t = np.isin(pred, threatened)
    pred_t = cat_t if p_threatened is None else np.asarray(p_threatened, dtype=float) > 0.5
    ks = np.unique(fold)
    fold_acc = [np.mean(truth[fold == k] == pred[fold == k]) for k in ks]
    fold_bin = [np.mean(true_t[fold == k] == pred_t[fold == k]) for k in ks]
    present = [c for c in CATEGORIES if c in set(truth)]
    recall_by = dict(zip(present, recall_score(truth, pred, labels=present, average=None, zero_division=0)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        balanced = balanced_accuracy_score(truth, pred)
    return {
        "n_species": int(len(truth)),
        "folds": int(len(ks)),
        "accuracy": float(accuracy_score(truth, pred)),
        "accuracy_sd": float(np.std(fold_acc)),
        "balanced_accuracy": float(balanced),
        "binary_accuracy": float(np.mean(true_t == pred_t)),
        "binary_accuracy_sd": float(np.std(fold_bin)),
        "binary_accuracy_from_category": float(np.mean(true_t == cat_t)),
        "macro_f1": float(f1_score(truth, pred, labels=present, average="macro", zero_division=0)),
        "per_class_recall": {c: (float(recall_by[c]) if c in recall_by else None) for c in CATEGORIES},
        "confusion_matrix": {
            "labels": list(CATEGORIES),
            "matrix": confusion_matrix(truth, pred, labels=list(CATEGORIES)).tolist(),
        },
    }


class StatusClassifier:
    """Species features -> IUCN category (LC, NT, VU, EN, CR).

    Parameters
    ----------
    method
        ``"extra_trees"`` (default), ``"random_forest"`` or ``"hist_gradient_boosting"``; all handle missing
        features (NaN) natively.
    folds
        Number of folds of :meth:`cross_validate` (reduced to the smallest class count, at least 2).
    seed
        Random seed of the estimator, of the fold split and of the inner split of the genus shares.
    features
        Feature columns; None = :func:`sdm.features.feature_columns` of the table given to :meth:`fit`.
    n_jobs
        Threads for fitting and predicting (tree workers and the OpenMP threads of gradient boosting);
        None = library defaults (all cores). Default 1: Red List sets are small, and Snakemake runs jobs side by
        side, where unlimited OpenMP threads oversubscribe the cores and run many times slower.
    taxonomy
        Add :data:`GENUS_COLUMNS`, computed from the species names (the features' index) and the training labels.
        A training species sees its genus' shares cross-fitted (``TargetEncoder``'s inner 5-fold split, never its
        own label) and the number of its assessed congeners without itself; a species to predict sees those of
        all training species.
    geography
        Add :data:`GEOGRAPHY_COLUMNS`, computed from the record centroids (``centroid_lon``, ``centroid_lat``) and
        the training labels: the share threatened and the mean category of the :data:`NEIGHBOURS` nearest assessed
        species (cross-fitted for training species like the genus shares).
    neighbours
        How many nearest assessed species the geography features summarise (default :data:`NEIGHBOURS`).
    class_weight
        None (default: every species counts once, which maximises accuracy) or ``"balanced"`` (classes weighted
        inversely to their frequency: higher recall of the rare NT / VU / CR, lower accuracy).
    ordinal
        Use the order LC < NT < VU < EN < CR: four binary classifiers for "worse than LC", "worse than NT", ...
        whose cumulative probabilities give the five classes (Frank & Hall 2001). Off by default: it did not beat
        the plain multi-class model on the orchids.
    decision
        How probabilities become one category (:func:`decide`): ``"argmax"`` (the most probable), or ``"auto"``
        (default): the rule among the prior shifts :data:`PRIOR_SHIFTS` and the ordinal median that maximises
        :func:`decision_score` on out-of-fold probabilities of an inner ``folds``-fold split of the training
        species, so cross-validation of the classifier is nested. Probabilities are not changed.

    Counts, areas and distances (:data:`sdm.features.LOG_COLUMNS`) enter as ``log1p``; infinities as missing
    values. A class absent from training gets probability 0. The defaults are those of the best variant under a
    fixed 10-fold protocol on the IUCNN orchids (``benchmarks/skill_iucn.py``).
    """

    def __init__(
        self,
        method: str = "extra_trees",
        folds: int = 5,
        seed: int = 0,
        features: list[str] | None = None,
        n_jobs: int | None = 1,
        taxonomy: bool = True,
        geography: bool = True,
        neighbours: int = NEIGHBOURS,
        class_weight: str | None = None,
        ordinal: bool = False,
        decision: str = "auto",
    ):
        self.method = method
        self.folds = folds
        self.seed = seed
        self.features = features
        self.n_jobs = n_jobs
        self.taxonomy = taxonomy
        self.geography = geography
        self.neighbours = neighbours
        self.class_weight = class_weight
        self.ordinal = ordinal
        self.decision = decision

    _PARAMS = ("method", "folds", "seed", "features", "n_jobs", "taxonomy", "geography", "neighbours", "class_weight",
               "ordinal", "decision")

    def __setstate__(self, state: dict) -> None:
        # Classifiers saved before taxonomy / geography / class_weight / ordinal existed were trained like this.
        self.__dict__.update({"taxonomy": False, "geography": False, "neighbours": NEIGHBOURS,
                              "class_weight": "balanced", "ordinal": False, "decision": "argmax",
                              "decision_rule_": 0.0, **state})

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def _clone(self) -> "StatusClassifier":
        return type(self)(**self.get_params())

    def _check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if int(self.folds) < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds!r}")
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, (int, np.integer)) \
                or self.neighbours < 1:
            raise ValueError(f"neighbours must be a whole number of at least 1, got {self.neighbours!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")

    def _design(self, features: pd.DataFrame, columns: list[str]) -> np.ndarray:
        missing = [c for c in columns if c not in features.columns]
        if missing:
            raise ValueError(f"features lack column(s) {', '.join(repr(c) for c in missing)}")
        X = features[columns].astype(float).copy()
        for c in columns:
            if c in LOG_COLUMNS:
                X[c] = np.log1p(X[c].clip(lower=0))
        X = np.array(X.to_numpy(dtype=float), dtype=float)
        X[~np.isfinite(X)] = np.nan
        return X

    def _estimator(self, n_train: int):
        """A fresh, unfitted scikit-learn classifier (subclasses may return any estimator with ``fit(X, y,
        sample_weight)``, ``predict_proba`` and ``classes_``)."""
        if self.method == "hist_gradient_boosting":
            # Red List training sets are tens to thousands of species: the default leaf size of 20 would leave
            # tiny sets with a handful of leaves.
            return HistGradientBoostingClassifier(
                min_samples_leaf=int(min(20, max(2, n_train // 10))), random_state=self.seed
            )
        if self.method == "extra_trees":
            # min_samples_leaf=2: a leaf never rests on a single species' label.
            return ExtraTreesClassifier(
                n_estimators=500, min_samples_leaf=2, random_state=self.seed, n_jobs=self.n_jobs
            )
        return RandomForestClassifier(n_estimators=500, random_state=self.seed, n_jobs=self.n_jobs)

    def _weights(self, y: np.ndarray) -> np.ndarray | None:
        return compute_sample_weight("balanced", y) if self.class_weight == "balanced" else None

    def _fit_one(self, X: np.ndarray, y: np.ndarray):
        """One fitted estimator, or the constant class when ``y`` holds one value."""
        if len(set(y.tolist())) == 1:
            return y[0]
        est = self._estimator(len(y))
        est.fit(X, y, sample_weight=self._weights(y))
        return est

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
        n_own = X.shape[1]
        codes = y.map(CATEGORY_CODE).to_numpy(dtype=int)
        if self.geography:
            X = np.hstack([X, self._fit_geography(features.loc[y.index], codes)])
        if self.taxonomy:
            X = np.hstack([X, self._fit_genus(genus_of(y.index), y.to_numpy())])
        # the label-derived columns each training species was fitted with (cross-fitted: never its own label),
        # reused when it is predicted again (a future scenario, the status table), so that its own label does not
        # reach its genus shares or neighbours at predict time
        self.fit_species_ = np.asarray(y.index.astype(str), dtype=object)
        self.fit_label_features_ = X[:, n_own:].copy()
        self.classes_ = [c for c in CATEGORIES if c in set(y)]
        self.prior_ = np.bincount(codes, minlength=len(CATEGORIES)) / len(codes)
        self.n_train_ = len(y)
        with threadpool_limits(limits=self.n_jobs, user_api="openmp"):
            if len(self.classes_) == 1:
                self.estimator_ = None  # one class seen: predict it with certainty
            elif self.ordinal:
                self.estimator_ = [self._fit_one(X, codes >= j) for j in range(1, len(CATEGORIES))]
            else:
                self.estimator_ = self._fit_one(X, y.to_numpy())
        self.decision_rule_, self.decision_scores_ = 0.0, {}
        if self.decision == "auto" and len(self.classes_) > 1:
            self.decision_rule_, self.decision_scores_ = self._choose_decision(features.loc[y.index], y)
        return self

    def _choose_decision(self, features: pd.DataFrame, y: pd.Series) -> tuple[float | str, dict]:
        """The :func:`decide` rule of best :func:`decision_score` on out-of-fold probabilities of an inner split
        of the training species (argmax-decided models, so that the inner fits do not recurse)."""
        inner = type(self)(**{**self.get_params(), "decision": "argmax", "folds": min(self.folds, _INNER_FOLDS)})
        inner.seed = self.seed + 1  # another split than the one that may have produced these training folds
        inner.cross_validate(features, y)
        proba = inner.cv_proba_.to_numpy()
        truth = y.map(CATEGORY_CODE).to_numpy(dtype=int)
        scores = decision_scores(truth, proba, self.prior_)
        return best_decision(scores), {str(k): round(float(v), 4) for k, v in scores.items()}

    def _fit_genus(self, genera: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Genus features of the training species (cross-fitted shares, congeners without the species itself)."""
        from sklearn.preprocessing import TargetEncoder

        self.genus_train_ = np.asarray(genera, dtype=object)
        largest = int(pd.Series(labels).value_counts().max())
        if len(set(labels.tolist())) == 1 or largest < 2:
            # TargetEncoder needs two classes and a class with two members: the genus then says nothing
            self.genus_encoder_ = None
            shares = np.ones((len(genera), 1))
        else:
            # its inner split is stratified: at most as many folds as the largest class has members
            # two classes: scikit-learn's multiclass mode fails on them (one binarised column); binary mode gives
            # the share of the second, completed to two columns in _in_category_order
            kind = "binary" if len(set(labels.tolist())) == 2 else "multiclass"
            folds = StratifiedKFold(n_splits=min(_INNER_FOLDS, largest), shuffle=True, random_state=self.seed)
            with warnings.catch_warnings():  # "the least populated class has only n members": rare categories
                warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
                self.genus_encoder_ = TargetEncoder(target_type=kind, cv=folds)
                shares = self._in_category_order(self.genus_encoder_.fit_transform(genera.reshape(-1, 1), labels))
            self.genus_encoder_.cv = None  # the split is only used while fitting; not part of the saved model
        return np.hstack([shares, _other_congeners(self.genus_train_, genera, own=True)[:, None]])

    def _fit_geography(self, features: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
        """Geography features of the training species, each from the neighbours in the other folds of an inner
        split; keeps the training species with a centroid as the pool for prediction."""
        points = _centroids_radians(features)
        known = np.isfinite(points).all(axis=1)
        self.geography_points_, self.geography_codes_ = points[known], codes[known]
        out = np.full((len(points), len(GEOGRAPHY_COLUMNS)), np.nan)
        if len(points) < 2:
            return out
        splitter = KFold(n_splits=min(_INNER_FOLDS, len(points)), shuffle=True, random_state=self.seed)
        for rest, held in splitter.split(points):
            pool = rest[known[rest]]
            out[held] = neighbour_features(points[pool], codes[pool], points[held], self.neighbours)
        return out

    def _in_category_order(self, shares: np.ndarray) -> np.ndarray:
        """TargetEncoder's columns (classes sorted by name) reordered LC .. CR."""
        if shares.shape[1] == 1 and len(self.genus_encoder_.classes_) == 2:  # binary: the second class's share
            shares = np.hstack([1.0 - shares, shares])
        order = [list(self.genus_encoder_.classes_).index(c) for c in CATEGORIES if c in self.genus_encoder_.classes_]
        return shares[:, order]

    def _genus_design(self, genera: np.ndarray) -> np.ndarray:
        if getattr(self, "genus_train_", None) is None:
            raise ValueError("this classifier was saved by an older version (genus counts without TargetEncoder); "
                             "retrain it (rerun the train_iucn rule)")
        shares = (np.ones((len(genera), 1)) if self.genus_encoder_ is None else self._in_category_order(
            self.genus_encoder_.transform(np.asarray(genera, dtype=object).reshape(-1, 1))))
        return np.hstack([shares, _other_congeners(self.genus_train_, genera, own=False)[:, None]])

    def _full_design(self, features: pd.DataFrame) -> np.ndarray:
        """Design matrix of ``features``: the feature columns, then the neighbour and genus features. A species the
        classifier was trained on gets the neighbour and genus features it was trained with (from the other inner
        folds), not ones computed from a pool and an encoder that hold its own label."""
        X = self._design(features, self.features_)
        if self.geography:
            X = np.hstack([X, neighbour_features(self.geography_points_, self.geography_codes_,
                                                 _centroids_radians(features), self.neighbours)])
        if self.taxonomy:
            X = np.hstack([X, self._genus_design(genus_of(features.index))])
        fitted = getattr(self, "fit_species_", None)
        if fitted is not None and X.shape[1] > len(self.features_):
            row = pd.Index(fitted).get_indexer(features.index.astype(str))  # -1: not a training species
            seen = row >= 0
            X[seen, len(self.features_):] = self.fit_label_features_[row[seen]]
        return X

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
        X = self._full_design(features)
        with threadpool_limits(limits=self.n_jobs, user_api="openmp"):
            if self.ordinal:
                proba = self._ordinal_proba(X)
                for c in self.classes_:
                    out[c] = proba[:, CATEGORY_CODE[c]]
                total = out.sum(axis=1)
                out.loc[total <= 0, self.classes_] = 1.0  # all mass on unseen classes: uniform over seen ones
                out = out.div(out.sum(axis=1), axis=0)
            else:
                proba = _positive_proba(self.estimator_, X)
                for j, c in enumerate(proba.columns):
                    out[str(c)] = proba[c].to_numpy()
        return out

    def _ordinal_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 5) class probabilities from the cumulative P(category >= j), j = NT .. CR, made monotone."""
        cum = np.ones((len(X), len(CATEGORIES)))
        for j, est in enumerate(self.estimator_, start=1):
            cum[:, j] = _positive_proba(est, X).get(True, pd.Series(0.0, index=range(len(X)))).to_numpy()
        cum = np.minimum.accumulate(cum, axis=1)
        return np.hstack([cum[:, :-1] - cum[:, 1:], cum[:, -1:]])

    def categories_from(self, proba: pd.DataFrame) -> pd.Series:
        """Category per row of :meth:`predict_proba`'s output, by the fitted decision rule (:func:`decide` with
        ``decision_rule_``; ties go to the less threatened category)."""
        rule = getattr(self, "decision_rule_", 0.0)
        prior = getattr(self, "prior_", np.ones(len(CATEGORIES)))
        codes = decide(proba[list(CATEGORIES)].to_numpy(), prior, rule) if len(proba) else np.empty(0, int)
        return pd.Series(np.asarray(CATEGORIES, dtype=object)[codes], index=proba.index, name="category",
                         dtype=object)

    def predict(self, features: pd.DataFrame) -> pd.Series:
        """Category per species by the fitted decision rule (see :meth:`categories_from`)."""
        return self.categories_from(self.predict_proba(features))

    def threatened_probability(self, features: pd.DataFrame) -> pd.Series:
        """P(VU) + P(EN) + P(CR) per species (name ``p_threatened``); above 0.5 the species is predicted
        threatened in the binary sense of :func:`classification_metrics`."""
        proba = self.predict_proba(features)
        return proba[[c for c in CATEGORIES if c in THREATENED]].sum(axis=1).rename("p_threatened")

    def cross_validate(self, features: pd.DataFrame, labels: pd.Series) -> tuple[dict, pd.Series]:
        """Stratified k-fold cross-validation on the labelled species (folds from :func:`stratified_folds`).

        Everything learnt from labels (the estimator, the genus shares) is fitted on the training folds only.
        The out-of-fold class probabilities are kept in ``cv_proba_`` (DataFrame, species x CATEGORIES), the
        fold of each species in ``cv_folds_`` and the decision rule each fold's model chose (on its training
        folds only: nested) in ``cv_decisions_``.

        Returns
        -------
        metrics
            :func:`classification_metrics` of the out-of-fold predictions, binary from ``p_threatened > 0.5``.
        oof
            Out-of-fold predicted category per labelled species (name ``category_cv``).
        """
        self._check()
        y = _valid_labels(labels.reindex(features.index))
        fold = stratified_folds(y.to_numpy(), self.folds, self.seed)
        X = features.loc[y.index]
        proba = pd.DataFrame(0.0, index=y.index, columns=list(CATEGORIES))
        oof = pd.Series("", index=y.index, dtype=object, name="category_cv")
        self.cv_decisions_ = {}
        for k in np.unique(fold):
            test = fold == k
            model = self._clone().fit(X[~test], y[~test])
            fold_proba = model.predict_proba(X[test])
            proba.iloc[np.flatnonzero(test)] = fold_proba.to_numpy()
            oof.iloc[np.flatnonzero(test)] = model.categories_from(fold_proba).to_numpy()
            self.cv_decisions_[int(k)] = model.decision_rule_
        self.cv_proba_, self.cv_folds_ = proba, pd.Series(fold, index=y.index, name="fold")
        p_threatened = proba[[c for c in CATEGORIES if c in THREATENED]].sum(axis=1)
        return classification_metrics(y.to_numpy(), oof.to_numpy(), fold, p_threatened.to_numpy()), oof


def _positive_proba(est, X: np.ndarray) -> pd.DataFrame:
    """``est.predict_proba(X)`` with its classes as columns; a constant (from :meth:`_fit_one`) gives 1 for it."""
    if isinstance(est, (np.ndarray, np.generic, str, bool)):
        return pd.DataFrame({est.item() if isinstance(est, np.generic) else est: np.ones(len(X))})
    return pd.DataFrame(est.predict_proba(X), columns=list(est.classes_))


TRUSTED_TYPES = frozenset({
    "sdm.status.StatusClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
})
"""The types a classifier file may hold beyond those skops trusts by itself (scikit-learn estimators, numpy, ...)."""


def save_classifier(clf: StatusClassifier, path: str | PathLike) -> None:
    """Write a fitted classifier with ``skops.io`` (a zip of JSON and arrays: loading it runs no code)."""
    import copy

    import skops.io as sio

    saved = copy.copy(clf)
    for attribute in ("cv_proba_", "cv_folds_", "cv_decisions_"):  # cross-validation results, not the model
        saved.__dict__.pop(attribute, None)
    sio.dump(saved, path)


def load_classifier(path: str | PathLike) -> StatusClassifier:
    """Read a classifier written by :func:`save_classifier`, trusting only :data:`TRUSTED_TYPES`; any other type
    in the file (a tampered or foreign file) or a file that is not a skops archive raises one line naming it."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as error:  # zipfile.BadZipFile, json errors, ...: not a classifier file written by us
        raise ValueError(f"{path}: not a status classifier file (skops archive) written by this pipeline: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise ValueError(f"{path}: refused to load, it holds types this pipeline does not write: {unexpected}")
    try:
        clf = sio.load(path, trusted=list(untrusted))
    except Exception as error:
        raise ValueError(f"{path}: damaged classifier file: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from None
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


def _criterion_b_labels(feats: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """The preliminary criterion B category (:mod:`sdm.criteria`) of each species from its ``criterion_b_rank``
    feature; NaN where the features lack it (tables made before it existed) or the species has no record."""
    from sdm.criteria import CRITERION_B_RANK

    if "criterion_b_rank" not in feats.columns:
        return np.full(len(index), np.nan, dtype=object)
    labels = {rank: label for label, rank in CRITERION_B_RANK.items()}
    return feats["criterion_b_rank"].reindex(index).map(labels).to_numpy(dtype=object)


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
    ``category_a3`` (criterion A3 on ``range_loss``; NaN for current), ``category_b`` (preliminary criterion B
    from the records' EOO, AOO and locations, :mod:`sdm.criteria`), ``category`` (futures: the more threatened
    of classifier and A3; current: the classifier's), ``redlist_category`` (the Red List label or ""),
    ``category_cv`` (out-of-fold prediction for assessed species, else ""), ``status`` (current: the Red List
    category where it is one of LC..CR, else ``category``; futures: the more threatened of the species' standing,
    its Red List category or else the classifier's category for this scenario, and A3, so that an assessed species' future status
    changes only through its projected range loss, not where the classifier disagrees with its label),
    ``no_suitable_cell``
    (range_km2 == 0), and as evidence ``range_km2``, ``range_change``, ``range_loss``; last ``p_threatened``
    (``p_VU + p_EN + p_CR``, the classifier's probability that the species is threatened).
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
        cat_clf = classifier.categories_from(proba)
        if scenario == CURRENT:
            cat_a3 = pd.Series(np.nan, index=index, dtype=object)
            category = cat_clf
        else:
            cat_a3 = a3_category(feats["range_loss"])
            category = _more_threatened(cat_clf, cat_a3)
        rl = redlist.reindex(index)
        rl_valid = rl.where(rl.isin(CATEGORIES))
        standing = rl_valid.where(rl_valid.notna(), cat_clf)  # the Red List category, else the classifier's
        status = standing if scenario == CURRENT else _more_threatened(standing.astype(object), cat_a3)
        table = pd.DataFrame(
            {
                "species": index.astype(str),
                "scenario": scenario,
                "dispersal": dispersal,
                "category_classifier": cat_clf.to_numpy(),
                **{f"p_{c}": proba[c].to_numpy(dtype=float) for c in CATEGORIES},
                "category_a3": cat_a3.to_numpy(),
                "category_b": _criterion_b_labels(feats, index),
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
                "p_threatened": proba[[c for c in CATEGORIES if c in THREATENED]].sum(axis=1).to_numpy(dtype=float),
            }
        )
        tables.append(table)
    if not tables:
        raise ValueError("features_by_run is empty")
    return pd.concat(tables, ignore_index=True)
