"""The evaluation code of the IUCN status benchmark (benchmarks/skill_iucn.py, sdm.status) on cases with a known
answer: perfect and random predictors, shuffled labels (leakage), fold assignment. Fast: small synthetic sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdm.redlist import CATEGORIES, THREATENED
from sdm.status import StatusClassifier, classification_metrics, stratified_folds

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("skill_iucn", ROOT / "benchmarks" / "skill_iucn.py")
skill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skill)

# Category shares of the IUCNN orchids (LC 386, NT 59, VU 124, EN 227, CR 93 of 889).
ORCHID_SHARES = np.array([386, 59, 124, 227, 93]) / 889


def _labels(n: int, seed: int = 0, shares=ORCHID_SHARES) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(CATEGORIES, dtype=object), size=n, p=shares)


def _informative(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Species whose category is written in their features (range shrinks by a decade per category), each in a
    genus of its own so that the genus shares carry nothing."""
    rng = np.random.default_rng(seed)
    labels = _labels(n, seed)
    code = np.array([CATEGORIES.index(c) for c in labels])
    index = pd.Index([f"Genus{i:04d} species" for i in range(n)], name="species")
    features = pd.DataFrame(
        {
            "eoo_km2": 10 ** (6 - code + rng.uniform(0.1, 0.9, n)),
            "n_records": rng.integers(1, 500, n),
            "centroid_lat": rng.uniform(-60, 60, n),
            "centroid_lon": rng.uniform(-180, 180, n),
            "noise": rng.normal(size=n),
        },
        index=index,
    )
    return features, pd.Series(labels, index=index, name="category")


# --- metrics ---------------------------------------------------------------------------------------------------


def test_perfect_predictor_scores_one():
    truth = _labels(500)
    fold = stratified_folds(truth, 10, 0)
    m = classification_metrics(truth, truth, fold, p_threatened=np.isin(truth, list(THREATENED)).astype(float))
    for key in ("accuracy", "binary_accuracy", "binary_accuracy_from_category", "balanced_accuracy", "macro_f1"):
        assert m[key] == pytest.approx(1.0), key
    assert m["accuracy_sd"] == 0.0 and m["binary_accuracy_sd"] == 0.0
    assert all(r == 1.0 for r in m["per_class_recall"].values())
    cm = np.asarray(m["confusion_matrix"]["matrix"])
    assert np.array_equal(cm, np.diag(np.diag(cm))) and cm.sum() == 500
    assert m["folds"] == 10 and m["n_species"] == 500


def test_random_predictor_scores_chance():
    rng = np.random.default_rng(1)
    truth = _labels(20000, seed=2, shares=np.full(5, 0.2))
    pred = rng.choice(np.asarray(CATEGORIES, dtype=object), size=truth.size)
    m = classification_metrics(truth, pred, stratified_folds(truth, 10, 0), p_threatened=rng.random(truth.size))
    assert m["accuracy"] == pytest.approx(0.2, abs=0.015)
    assert m["balanced_accuracy"] == pytest.approx(0.2, abs=0.015)
    assert m["macro_f1"] == pytest.approx(0.2, abs=0.015)
    assert m["binary_accuracy"] == pytest.approx(0.5, abs=0.015)  # random P(threatened)
    # Categories drawn at random: 3 of 5 are threatened on both sides, so agreement is 0.6^2 + 0.4^2 = 0.52.
    assert m["binary_accuracy_from_category"] == pytest.approx(0.52, abs=0.015)
    assert all(r == pytest.approx(0.2, abs=0.03) for r in m["per_class_recall"].values())


def test_binary_uses_threatened_probability_and_fold_sd_is_over_folds():
    truth = np.array(["LC", "LC", "EN", "EN"], dtype=object)
    pred = np.array(["LC", "VU", "LC", "EN"], dtype=object)  # category wrong on rows 1 and 2
    p_thr = np.array([0.1, 0.2, 0.9, 0.8])  # but the threatened probability is right everywhere
    m = classification_metrics(truth, pred, fold=np.array([0, 0, 1, 1]), p_threatened=p_thr)
    assert m["binary_accuracy"] == 1.0 and m["binary_accuracy_sd"] == 0.0
    assert m["binary_accuracy_from_category"] == 0.5
    assert m["accuracy"] == 0.5 and m["accuracy_sd"] == 0.0  # 1 of 2 right in each fold
    m = classification_metrics(truth, np.array(["LC", "LC", "LC", "LC"], dtype=object), fold=np.array([0, 0, 1, 1]))
    assert m["accuracy"] == 0.5 and m["accuracy_sd"] == pytest.approx(0.5)  # folds at 1.0 and 0.0
    assert m["per_class_recall"]["NT"] is None


# --- folds -----------------------------------------------------------------------------------------------------


def test_folds_are_stratified_and_deterministic():
    labels = _labels(883, seed=3)
    fold = stratified_folds(labels, 10, 0)
    assert np.array_equal(fold, stratified_folds(labels, 10, 0))
    assert not np.array_equal(fold, stratified_folds(labels, 10, 1))
    assert set(fold) == set(range(10))
    for c in CATEGORIES:
        per_fold = np.bincount(fold[labels == c], minlength=10)
        assert per_fold.max() - per_fold.min() <= 1, c
    # Folds are capped by the smallest class.
    few = np.array(["LC"] * 10 + ["CR"] * 3, dtype=object)
    assert set(stratified_folds(few, 10, 0)) == {0, 1, 2}


def test_cross_validate_uses_these_folds_and_keeps_out_of_fold_probabilities():
    features, labels = _informative(150)
    clf = StatusClassifier(folds=5, seed=4, n_jobs=1, decision="argmax")
    metrics, oof = clf.cross_validate(features, labels)
    assert np.array_equal(clf.cv_folds_.to_numpy(), stratified_folds(labels.to_numpy(), 5, 4))
    np.testing.assert_allclose(clf.cv_proba_.sum(axis=1), 1.0)
    assert (clf.cv_proba_.idxmax(axis=1).astype(object) == oof).all()  # argmax: the most probable category
    assert metrics["accuracy"] > 0.85  # the category is written in eoo_km2


# --- leakage ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("taxonomy", [True, False])
def test_shuffled_labels_give_chance_accuracy(taxonomy):
    features, labels = _informative(400)
    # Genera of 1 to 4 species: if a test species' own label reached its genus shares, it would be predicted.
    genera = np.repeat(np.arange(400), np.random.default_rng(5).integers(1, 5, 400))[:400]
    features.index = labels.index = pd.Index([f"G{g} sp{i}" for i, g in enumerate(genera)], name="species")
    shuffled = pd.Series(np.random.default_rng(6).permutation(labels.to_numpy()), index=labels.index)
    majority = shuffled.value_counts(normalize=True).max()  # about 0.43
    threatened_share = shuffled.isin(list(THREATENED)).mean()  # about 0.5
    clf = StatusClassifier(folds=5, seed=0, n_jobs=1, taxonomy=taxonomy)
    metrics, _ = clf.cross_validate(features, shuffled)
    assert metrics["accuracy"] <= majority + 0.06
    assert metrics["binary_accuracy"] == pytest.approx(0.5, abs=0.08)
    assert metrics["balanced_accuracy"] <= 0.3
    assert 0.35 <= threatened_share <= 0.65


def test_leakage_would_show():
    # Positive control of the check above: scoring species the model was trained on (what leakage amounts to)
    # is far above chance on the same shuffled labels.
    features, labels = _informative(400)
    shuffled = pd.Series(np.random.default_rng(6).permutation(labels.to_numpy()), index=labels.index)
    # (taxonomy and geography off: a training species' label-derived features are cross-fitted at fit time, so
    # they differ when the same species is predicted; this control is about the trees remembering rows)
    clf = StatusClassifier(method="random_forest", n_jobs=1, taxonomy=False, geography=False).fit(features, shuffled)
    assert (clf.predict(features) == shuffled).mean() > 0.9


def test_genus_shares_are_learnt_when_they_carry_the_label():
    # Labels set by genus (10 species each), features pure noise: only the genus shares can predict.
    rng = np.random.default_rng(7)
    genus_cat = rng.choice(np.asarray(CATEGORIES, dtype=object), size=30)
    genera = np.repeat(np.arange(30), 10)
    index = pd.Index([f"G{g} sp{i}" for i, g in enumerate(genera)], name="species")
    features = pd.DataFrame({"noise": rng.normal(size=300)}, index=index)
    labels = pd.Series(genus_cat[genera], index=index)
    # the genus shares, not the rule; no centroids here, so no geography features
    common = {"folds": 5, "n_jobs": 2, "features": ["noise"], "decision": "argmax", "geography": False}
    with_genus, _ = StatusClassifier(**common).cross_validate(features, labels)
    without, _ = StatusClassifier(**common, taxonomy=False).cross_validate(features, labels)
    assert with_genus["accuracy"] > 0.9
    assert without["accuracy"] < 0.45


# --- benchmark helpers -----------------------------------------------------------------------------------------


class _SmallTrees(StatusClassifier):
    """The default classifier with 50 trees: the same code path, fast enough for nested CV in a unit test."""

    def _estimator(self, n_train):
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier(n_estimators=50, min_samples_leaf=2, random_state=self.seed, n_jobs=1)


def test_nested_selection_picks_on_inner_folds_and_matches_the_default_alone(monkeypatch):
    monkeypatch.setattr(skill, "FOLDS", 3)
    features, labels = _informative(150)
    common = {"folds": 3, "seed": 0, "n_jobs": 1}
    informative = {"name": "informative", "classifier": _SmallTrees(**common, features=["eoo_km2", "noise"])}
    noise = {"name": "noise only", "classifier": _SmallTrees(**common, features=["noise"])}
    metrics, chosen = skill.nested_selection([noise, informative], features, labels)
    assert len(chosen) == 3 and all(c.startswith("informative / ") for c in chosen)
    assert metrics["accuracy"] > 0.8 and metrics["n_species"] == 150
    # The informative candidate alone: the default's own nested cross-validation (decision auto on the same
    # inner split), prediction for prediction.
    alone, rules = skill.nested_selection([informative], features, labels)
    clf = informative["classifier"]._clone()
    cv, _ = clf.cross_validate(features, labels)
    assert alone["confusion_matrix"] == cv["confusion_matrix"]
    assert rules == [f"informative / {r}" for r in clf.cv_decisions_.values()]
    # Negative control: shuffled labels give no skill through the choice.
    shuffled = pd.Series(np.random.default_rng(2).permutation(labels.to_numpy()), index=labels.index)
    null, _ = skill.nested_selection([noise, informative], features, shuffled)
    assert null["balanced_accuracy"] < 0.35


def test_not_evaluated_species_are_predicted_with_probabilities(monkeypatch):
    features, labels = _informative(120)
    labels = labels.astype(object)
    labels.iloc[:15] = np.nan
    # the classifier's fitted decision rule gives the category, as in the pipeline (here a stand-in rule)
    monkeypatch.setattr(StatusClassifier, "categories_from", lambda self, proba: pd.Series("NT", index=proba.index))
    out = skill.predict_not_evaluated(features, labels, StatusClassifier(n_jobs=1))
    assert sorted(out["species"]) == sorted(features.index[:15])
    probs = out[[f"p_{c}" for c in CATEGORIES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(out["p_threatened"], probs[:, 2:].sum(axis=1))
    assert (out["category"] == "NT").all()
    assert out["p_threatened"].is_monotonic_decreasing
    assert (out["threatened"] == (out["p_threatened"] > 0.5)).all()


def test_tables_format_with_our_numbers_next_to_the_anchors():
    if not skill.ANCHOR_LOGS.exists():
        pytest.skip("shared/data/estopinan_orchid_status not available")
    anchors = skill.anchors_table()
    detail_rf = anchors[(anchors["level"] == "5-class") & anchors["anchor"].str.contains("random forest on deep")]
    assert detail_rf["accuracy"].iloc[0] == pytest.approx(0.608, abs=0.001)
    assert detail_rf["macro"].iloc[0] == pytest.approx(0.425, abs=0.001)
    binary_mlp = anchors[(anchors["level"] == "binary") & anchors["anchor"].str.contains("IUCNN MLP")]
    assert 0.79 <= binary_mlp["accuracy"].iloc[0] <= 0.81
    truth = _labels(50)
    metrics = classification_metrics(truth, truth, stratified_folds(truth, 5, 0))
    row = skill._row("perfect", metrics, 1.0)
    results = {
        "variants": pd.DataFrame([row]), "metrics": {"perfect": metrics}, "default": "perfect",
        "anchors": anchors, "anchor_recall": skill.anchor_recall_table(), "iucnn_matrix": pd.DataFrame([row]),
        "seeds": pd.DataFrame(), "nested": pd.DataFrame(),
        "myrcia": pd.DataFrame([{**row, "variant": "Myrcia: perfect", "n_species": 50},
                                {"variant": "Myrcia: criterion B alone", "binary_accuracy": 0.5, "n_species": 50}]),
        "not_evaluated": pd.DataFrame(columns=["species", "category", *[f"p_{c}" for c in CATEGORIES],
                                               "p_threatened", "threatened", "genus_n_assessed", "n_records"]),
        "n_labelled": 50, "n_not_evaluated": 0, "notes": [], "target": dict(skill.TARGET),
    }
    text = skill.format_tables(results)
    assert "Myrcia (50 species" in text and "Myrcia: criterion B alone: binary accuracy 0.500" in text
    assert "perfect" in text and "1.000 ± 0.000" in text and "0.608 ± 0.043" in text
    assert "Anchors' recall per class" in text and "0.86  0.02  0.19  0.63  0.42" in text
    tables = skill.printable_tables(results)
    assert all(isinstance(t, pd.DataFrame) for t in tables.values())


def test_rates_from_a_confusion_matrix_with_known_answers():
    matrix = [[8, 2, 0, 0, 0],
              [1, 1, 0, 0, 0],
              [0, 0, 0, 3, 1],
              [0, 0, 0, 4, 0],
              [0, 0, 0, 0, 0]]   # no CR species: its recall is undefined and left out of the balanced accuracy
    rates = skill.rates_from_confusion(matrix)
    assert rates["species"] == 20 and rates["accuracy"] == pytest.approx(13 / 20)
    assert [rates[f"recall_{c}"] for c in ("LC", "NT", "VU", "EN")] == pytest.approx([0.8, 0.5, 0.0, 1.0])
    assert np.isnan(rates["recall_CR"])
    assert rates["balanced_accuracy"] == pytest.approx((0.8 + 0.5 + 0.0 + 1.0) / 4)


def test_anchor_recall_puts_each_class_beside_the_published_models():
    if not skill.IUCNN_PREDICTIONS.exists():
        pytest.skip("shared/data/estopinan_orchid_status not available")
    table = skill.anchor_recall_table().set_index("anchor")
    rf = table.loc[table.index.str.startswith("Estopinan")].iloc[0]
    assert rf["species"] == 886 and rf["accuracy"] == pytest.approx(0.608, abs=0.001)  # the log's own 0.608
    assert rf["recall_NT"] == pytest.approx(1 / 57) and rf["recall_VU"] == pytest.approx(24 / 124)
    iucnn = table.loc[table.index.str.startswith("IUCNN")].iloc[0]
    assert iucnn["recall_NT"] == 0 and iucnn["recall_VU"] == 0  # IUCNN never predicts NT or VU
    assert 870 <= iucnn["species"] <= 889 and 0.4 < iucnn["balanced_accuracy"] < iucnn["accuracy"]


def test_myrcia_second_taxon_runs_the_default_on_its_labels():
    if not skill.MYRCIA.exists():
        pytest.skip("shared/data/walker_myrcia_predictors not available")
    table = pd.read_csv(skill.MYRCIA)
    assert int(table["category"].isin(CATEGORIES).sum()) == 346  # the species with a category LC..CR


def test_soft_vote_averages_the_two_forests():
    features, labels = _informative(120)
    common = {"seed": 0, "taxonomy": False, "geography": False, "decision": "argmax"}
    vote = skill.SoftVoteStatusClassifier(**common).fit(features, labels)
    alone = [StatusClassifier(**common, method=m).fit(features, labels).predict_proba(features)
             for m in ("extra_trees", "random_forest")]
    proba = vote.predict_proba(features)
    np.testing.assert_allclose(proba.to_numpy(), (alone[0] + alone[1]).to_numpy() / 2, atol=1e-12)
    assert not np.allclose(alone[0].to_numpy(), alone[1].to_numpy())  # the two forests do differ


def test_soft_vote_check_reports_both_models_and_their_means(monkeypatch):
    features, labels = _informative(60)
    monkeypatch.setattr(skill, "FOLDS", 2)
    table = skill.check_against_default(features, labels, [0, 1], "soft vote of extra trees and random forest",
                                        n_jobs=1)
    assert len(table) == 2 * 2 + 2
    assert table["variant"].iloc[-1] == "soft vote of extra trees and random forest, mean over fold seeds 0, 1"
    votes = table[table["variant"].str.startswith("soft vote") & table["variant"].str.contains("fold seed ")]
    assert table["accuracy"].iloc[-1] == pytest.approx(votes["accuracy"].iloc[:2].mean())
    assert (table["accuracy"] > 0.5).all()  # the category is written in the features


def test_ordinal_regression_cut_points_and_one_hot_probabilities():
    # regression values that separate the five categories only with uneven cut points
    codes = np.repeat(np.arange(5), 20)
    values = np.array([0.0, 0.2, 0.3, 0.5, 0.9])[codes] + np.tile(np.linspace(0, 0.05, 20), 5)
    cuts = skill.OrdinalRegressionTrees.best_cuts(values, codes)
    assert np.all(np.diff(cuts) > 0)
    assert (skill.OrdinalRegressionTrees.cut(values, cuts) == codes).all()  # the midpoints 0.5 .. 3.5 would not
    features, labels = _informative(150)
    clf = skill.OrdinalRegressionStatusClassifier(seed=0, taxonomy=False, geography=False, decision="argmax")
    proba = clf.fit(features, labels).predict_proba(features)
    assert list(proba.columns) == list(CATEGORIES)
    assert ((proba == 0) | (proba == 1)).all().all() and (proba.sum(axis=1) == 1).all()
    assert (clf.predict(features) == labels.reindex(features.index)).mean() > 0.8  # the category is in the features


def test_ordinal_regression_handles_missing_features():
    features, labels = _informative(80)
    features.iloc[::7, 0] = np.nan
    clf = skill.OrdinalRegressionStatusClassifier(seed=0, taxonomy=False, geography=False, decision="argmax")
    assert clf.fit(features, labels).predict(features).isin(CATEGORIES).all()
