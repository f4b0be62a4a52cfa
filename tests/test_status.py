"""Unit tests of sdm.status: the classifier, criterion A3 and the status table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sdm.redlist import CATEGORIES, CATEGORY_CODE
from sdm.status import (
    GENUS_COLUMNS,
    GEOGRAPHY_COLUMNS,
    StatusClassifier,
    a3_category,
    genus_of,
    load_classifier,
    neighbour_features,
    save_classifier,
    status_table,
)


def _synthetic(n_per_class: int = 30, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Species whose category is set by range size (as criterion B would), plus noise columns."""
    rng = np.random.default_rng(seed)
    labels, rows = [], []
    for k, cat in enumerate(CATEGORIES):
        for _ in range(n_per_class):
            # LC has the largest range, CR the smallest: one decade of area per category.
            range_km2 = 10 ** (6 - k + rng.uniform(0.1, 0.9))
            rows.append(
                {
                    "n_records": int(rng.integers(1, 500)),
                    "n_sites": int(rng.integers(1, 100)),
                    "eoo_km2": range_km2 * rng.uniform(1.0, 1.5),
                    "aoo_km2": range_km2 / 10,
                    "lat_min": rng.uniform(-10, 10),
                    "lat_max": rng.uniform(10, 30),
                    "lat_span": rng.uniform(0, 40),
                    "centroid_lon": rng.uniform(-180, 180),
                    "centroid_lat": rng.uniform(-60, 60),
                    "niche_mean_bio1": rng.normal(15, 5),
                    "niche_sd_bio1": rng.uniform(0, 3),
                    "range_km2": range_km2,
                    "mean_suitability": rng.uniform(0.4, 0.9),
                    "range_change": 1.0,
                    "range_loss": 0.0,
                    "current_range_km2": range_km2,
                }
            )
            labels.append(cat)
    index = pd.Index([f"sp{i:03d}" for i in range(len(rows))], name="species")
    return pd.DataFrame(rows, index=index), pd.Series(labels, index=index, name="redlistCategory")


@pytest.mark.parametrize("method", ["extra_trees", "hist_gradient_boosting", "random_forest"])
def test_separable_data_is_learnt(method):
    features, labels = _synthetic()
    # the most probable class: the decision rule chosen on inner folds has its own tests (and 5x the fits)
    metrics, oof = StatusClassifier(method=method, folds=5, seed=1, n_jobs=1,
                                    decision="argmax").cross_validate(features, labels)
    assert metrics["n_species"] == len(labels) and metrics["folds"] == 5
    assert metrics["accuracy"] > 0.9
    assert metrics["balanced_accuracy"] > 0.9
    assert metrics["binary_accuracy"] > 0.95
    assert metrics["macro_f1"] > 0.9
    assert set(oof.index) == set(labels.index) and set(oof) <= set(CATEGORIES)
    cm = metrics["confusion_matrix"]
    assert cm["labels"] == list(CATEGORIES)
    assert np.asarray(cm["matrix"]).sum() == len(labels)
    assert np.trace(np.asarray(cm["matrix"])) == round(metrics["accuracy"] * len(labels))
    json.dumps(metrics)  # plain Python types


def test_shuffled_labels_give_chance():
    # Leakage check: with labels unrelated to the features, CV must not beat chance (0.2 for 5 balanced classes).
    features, labels = _synthetic(n_per_class=30)
    shuffled = pd.Series(np.random.default_rng(3).permutation(labels.to_numpy()), index=labels.index)
    metrics, _ = StatusClassifier(seed=0, n_jobs=1).cross_validate(features, shuffled)
    assert metrics["accuracy"] < 0.35
    assert metrics["balanced_accuracy"] < 0.35


@pytest.mark.parametrize("kwargs", [{"ordinal": True}, {"class_weight": "balanced"}, {"taxonomy": False}])
def test_variants_learn_separable_data(kwargs):
    features, labels = _synthetic(n_per_class=15)
    metrics, _ = StatusClassifier(folds=3, seed=1, n_jobs=1, decision="argmax", **kwargs).cross_validate(features,
                                                                                                      labels)
    assert metrics["accuracy"] > 0.8 and metrics["binary_accuracy"] > 0.9


def test_ordinal_probabilities_are_valid_with_a_class_missing():
    features, labels = _synthetic(n_per_class=10)
    keep = labels != "VU"
    clf = StatusClassifier(ordinal=True).fit(features[keep], labels[keep])
    proba = clf.predict_proba(features)
    assert (proba.to_numpy() >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba["VU"] == 0).all()


def test_genus_features_from_names_without_own_label():
    features, labels = _synthetic(n_per_class=6)
    names = ["Orchis mascula", " Ophrys apifera ", "Dactylorhiza"]
    assert list(genus_of(names)) == ["Orchis", "Ophrys", "Dactylorhiza"]
    # Two genera: one all LC, one all CR.
    names = [("Alpha" if cat == "LC" else "Beta" if cat == "CR" else f"G{i}") + f" sp{i}"
             for i, cat in enumerate(labels)]
    features.index = labels.index = pd.Index(names, name="species")
    clf = StatusClassifier(decision="argmax").fit(features, labels)
    new = features.iloc[:1].rename(index=lambda s: "Alpha novum")
    enc = clf._full_design(new)[0, -len(GENUS_COLUMNS):]
    # a new Alpha species: Alpha's LC share is high (smoothed toward the prior) and it has 6 assessed congeners
    assert enc[0] > 0.6 and enc[0] == enc[:5].max() and enc[5] == 6
    # training species: shares cross-fitted, and the congeners without the species itself (5, not 6): the same
    # meaning as for the new species, whose 6 congeners are all others
    design = clf._fit_genus(genus_of(labels.index), labels.to_numpy())
    alpha = np.flatnonzero(labels.to_numpy() == "LC")
    assert (design[alpha, 5] == 5).all()
    unknown = clf._full_design(features.iloc[:1].rename(index=lambda s: "Gamma novum"))[0, -len(GENUS_COLUMNS):]
    assert unknown[5] == 0 and unknown[:5] == pytest.approx(clf.prior_, abs=1e-9)  # unseen genus: the prior


def test_a_training_species_is_predicted_without_its_own_label_in_its_features():
    # one CR species alone in its genus, next to nobody: the encoder and the neighbour pool of the fitted model hold
    # its label, so computed afresh its genus share of CR would be high and its nearest neighbour itself at 0 km
    features, labels = _synthetic(n_per_class=12)
    names = [f"Lonely sp{i}" if i == 0 else f"G{i % 4} sp{i}" for i in range(len(labels))]
    lonely = int(np.flatnonzero(labels.to_numpy() == "CR")[0])
    names[0], names[lonely] = names[lonely], names[0]
    names[lonely] = "Lonely cr"
    features.index = labels.index = pd.Index(names, name="species")
    features.loc["Lonely cr", ["centroid_lon", "centroid_lat"]] = [170.0, -70.0]
    clf = StatusClassifier(decision="argmax").fit(features, labels)
    extra = len(GEOGRAPHY_COLUMNS) + len(GENUS_COLUMNS)
    predicted = clf._full_design(features.loc[["Lonely cr"]])[0, -extra:]
    trained = clf.fit_label_features_[list(clf.fit_species_).index("Lonely cr")]
    np.testing.assert_array_equal(predicted, trained)
    genus = predicted[-len(GENUS_COLUMNS):]
    assert genus[-1] == 0  # no other assessed congener
    assert genus[CATEGORY_CODE["CR"]] == pytest.approx(clf.prior_[CATEGORY_CODE["CR"]], abs=0.05)  # not 1
    assert predicted[len(GEOGRAPHY_COLUMNS) - 1] > np.log1p(1000)  # mean distance of other species, > 1,000 km
    # the same record centre and genus under a name the model never saw: the fitted pool and encoder, which hold
    # the CR species itself (0 km away, one CR congener)
    renamed = clf._full_design(features.loc[["Lonely cr"]].rename(index={"Lonely cr": "Lonely other"}))[0, -extra:]
    distance = GEOGRAPHY_COLUMNS.index("neighbours_mean_distance_km")
    assert renamed[distance] < predicted[distance]
    assert renamed[-1] == 1 and renamed[len(GEOGRAPHY_COLUMNS) + CATEGORY_CODE["CR"]] > genus[CATEGORY_CODE["CR"]]
    # and the rest of the design is the species' own features, unchanged
    np.testing.assert_array_equal(clf._full_design(features.loc[["Lonely cr"]])[0, :-extra],
                                  clf._design(features.loc[["Lonely cr"]], clf.features_)[0])


def test_neighbour_features_known_answer():
    # pool: two CR species near (0, 0), two LC species on the other side of the globe
    pool = np.radians([[0.0, 0.0], [0.0, 1.0], [0.0, 180.0], [0.0, 179.0]])  # latitude, longitude
    codes = np.array([4, 4, 0, 0])
    query = np.radians([[0.0, 0.1], [np.nan, 0.0], [0.0, -179.5]])
    out = neighbour_features(pool, codes, query, k=2)
    assert out.shape == (3, len(GEOGRAPHY_COLUMNS))
    km_per_degree = 6371.0088 * np.pi / 180
    assert out[0, 0] == 1.0 and out[0, 1] == 4.0  # both neighbours CR: all threatened, mean category CR
    assert out[0, 2] == pytest.approx(np.log1p((0.1 + 0.9) / 2 * km_per_degree))
    assert np.isnan(out[1]).all()  # no centroid: missing, not (0, 0)
    # across the antimeridian: -179.5 is 0.5 degrees from 180 and 1.5 from 179
    assert out[2, 0] == 0.0 and out[2, 1] == 0.0
    assert out[2, 2] == pytest.approx(np.log1p(1.0 * km_per_degree))
    assert np.isnan(neighbour_features(pool[:0], codes[:0], query)).all()  # nobody assessed yet
    assert neighbour_features(pool, codes, query[:1], k=10)[0, 1] == 2.0  # k larger than the pool: all of it


def test_geography_features_never_see_the_own_label():
    # 40 LC species and one CR species at the same place: the CR species' neighbours are the LC ones (its own
    # label is in another inner fold's pool only), so its share threatened is 0, not 1/15
    features, labels = _synthetic(n_per_class=20)
    lc = labels.index[labels == "LC"]
    features, labels = features.copy(), labels.copy()
    extra = features.loc[lc].rename(index=lambda s: s + "b")
    features = pd.concat([features.loc[lc], extra, features.loc[[labels.index[labels == "CR"][0]]]])
    labels = pd.Series(["LC"] * (len(features) - 1) + ["CR"], index=features.index)
    features[["centroid_lon", "centroid_lat"]] = [10.0, 45.0]
    clf = StatusClassifier(decision="argmax", taxonomy=False)
    codes = labels.map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    design = clf._fit_geography(features, codes)
    assert design[-1, 0] == 0.0 and design[-1, 1] == 0.0
    assert (design[:-1, 0] <= 1 / 15 + 1e-12).all()
    # a new species at the same place sees 15 of the 41 training species
    clf.fit(features, labels)
    new = clf._full_design(features.iloc[:1])[0, -len(GEOGRAPHY_COLUMNS):]
    assert new[0] in (0.0, 1 / 15)


def test_geography_needs_centroids():
    features, labels = _synthetic(n_per_class=4)
    with pytest.raises(ValueError, match=r"'centroid_lon'.*geography=False"):
        StatusClassifier().fit(features.drop(columns="centroid_lon"), labels)
    clf = StatusClassifier(geography=False).fit(features.drop(columns="centroid_lon"), labels)
    assert clf.predict(features).notna().all()
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="neighbours must be a whole number"):
            StatusClassifier(neighbours=bad).fit(features, labels)


def test_neighbours_sets_how_many_species_the_geography_features_see():
    # one CR species among LC ones, all at the same place: a new species there sees at most one CR among its k
    features, labels = _synthetic(n_per_class=20)
    keep = (labels == "LC") | (labels.index == labels.index[labels == "CR"][0])
    features, labels = features[keep].copy(), labels[keep]
    features[["centroid_lon", "centroid_lat"]] = [10.0, 45.0]
    for k, most in ((4, 1 / 4), (20, 1 / 20)):
        clf = StatusClassifier(decision="argmax", taxonomy=False, neighbours=k).fit(features, labels)
        assert clf.get_params()["neighbours"] == k
        new = features.iloc[:1].rename(index=lambda s: "Novum sp")  # not a training species: the whole pool
        share = clf._full_design(new)[0, -len(GEOGRAPHY_COLUMNS)]
        assert share in (0.0, most)


def test_genus_features_with_two_classes():
    features, labels = _synthetic(n_per_class=6)
    keep = labels.isin(["LC", "CR"]).to_numpy()
    features, labels = features[keep], labels[keep]
    features.index = labels.index = pd.Index([f"G{i % 3} sp{i}" for i in range(len(labels))], name="species")
    clf = StatusClassifier(decision="argmax").fit(features, labels)
    genus = clf._full_design(features.iloc[:2])[:, -3:]
    np.testing.assert_allclose(genus[:, 0] + genus[:, 1], 1.0)  # LC and CR shares
    assert clf.predict(features).isin(["LC", "CR"]).all()


def test_decision_rules():
    from sdm.status import ORDINAL, decide

    proba = np.array([[0.40, 0.05, 0.30, 0.05, 0.20],
                      [0.45, 0.35, 0.10, 0.05, 0.05]])
    prior = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    assert decide(proba, prior, 0.0).tolist() == [0, 0]  # the most probable
    assert decide(proba, prior, 1.0).tolist() == [4, 1]  # 0.20 / 0.05 = 4 beats 0.30 / 0.15 = 2
    assert decide(proba, prior, ORDINAL).tolist() == [2, 1]  # the median class
    assert decide(proba, np.array([0.5, 0.5, 0, 0, 0]), 1.0).tolist() == [0, 0]  # unseen classes never


def test_decision_scores_and_ties():
    from sdm.status import DECISION_RULES, ORDINAL, best_decision, decision_scores

    # 8 LC, 2 CR; the model ranks CR right but never makes it the most probable: only a prior shift finds it.
    truth = np.array([0] * 8 + [4] * 2)
    proba = np.tile([0.8, 0.05, 0.05, 0.05, 0.05], (10, 1))
    proba[8:] = [0.6, 0.05, 0.05, 0.05, 0.25]
    prior = np.array([0.8, 0, 0, 0, 0.2])
    scores = decision_scores(truth, proba, prior)
    assert list(scores) == list(DECISION_RULES)
    assert scores[0.0] == pytest.approx(0.5 * (0.8 + 0.5))  # all LC
    assert scores[0.5] == pytest.approx(0.5 * (0.8 + 0.5))  # CR 0.25 / 0.2 ** 0.5 = 0.56 < LC 0.6 / 0.8 ** 0.5
    assert scores[0.75] == scores[1.0] == pytest.approx(1.0)  # 0.25 / 0.2 ** 0.75 = 0.84 > 0.6 / 0.8 ** 0.75
    assert scores[ORDINAL] == pytest.approx(0.5 * (0.8 + 0.5))  # the median of both rows is LC
    assert best_decision(scores) == 0.75  # the smaller of the two perfect shifts
    # ties go to the rule first in DECISION_RULES
    assert best_decision({rule: 0.7 for rule in DECISION_RULES}) == 0.0
    assert best_decision({0.0: 0.5, 0.25: 0.6, ORDINAL: 0.6}) == 0.25


def test_auto_decision_is_chosen_on_training_folds_only():
    features, labels = _synthetic(n_per_class=8)
    clf = StatusClassifier(folds=3, decision="auto")
    clf.cross_validate(features, labels)
    assert set(clf.cv_decisions_) == {0, 1, 2}
    model = StatusClassifier(folds=3).fit(features, labels)
    assert set(model.decision_scores_) == {"0.0", "0.25", "0.5", "0.75", "1.0", "ordinal"}
    assert model.decision_rule_ in (0.0, 0.25, 0.5, 0.75, 1.0, "ordinal")
    assert model.predict(features).isin(CATEGORIES).all()
    with pytest.raises(ValueError, match="decision"):
        StatusClassifier(decision="median").fit(features, labels)


def test_bad_class_weight():
    features, labels = _synthetic(n_per_class=4)
    with pytest.raises(ValueError, match="class_weight"):
        StatusClassifier(class_weight="sqrt").fit(features, labels)


def test_classifier_saved_before_new_parameters_still_predicts(tmp_path):
    features, labels = _synthetic(n_per_class=5)
    clf = StatusClassifier(method="random_forest", taxonomy=False, class_weight="balanced").fit(features, labels)
    clf = StatusClassifier(method="random_forest", taxonomy=False, geography=False,
                           class_weight="balanced").fit(features, labels)
    for name in ("taxonomy", "geography", "neighbours", "class_weight", "ordinal"):  # as an older version saved it
        delattr(clf, name)
    save_classifier(clf, tmp_path / "old.joblib")
    again = load_classifier(tmp_path / "old.joblib")
    assert again.taxonomy is False and again.class_weight == "balanced" and again.ordinal is False
    assert again.geography is False and again.neighbours == 15
    assert again.predict(features).notna().all()


def test_threatened_probability():
    features, labels = _synthetic(n_per_class=8)
    clf = StatusClassifier().fit(features, labels)
    proba = clf.predict_proba(features)
    p = clf.threatened_probability(features)
    np.testing.assert_allclose(p, proba[["VU", "EN", "CR"]].sum(axis=1))
    assert p.name == "p_threatened"


def test_predict_proba_has_all_categories_and_sums_to_one():
    features, labels = _synthetic(n_per_class=10)
    keep = labels.isin(["LC", "EN", "CR"])  # NT and VU never seen in training
    clf = StatusClassifier().fit(features[keep], labels[keep])
    proba = clf.predict_proba(features)
    assert list(proba.columns) == list(CATEGORIES)
    assert proba.index.equals(features.index)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba[["NT", "VU"]] == 0).all().all()
    pred = clf.predict(features)
    assert set(pred) <= {"LC", "EN", "CR"}
    assert pred.index.equals(features.index)


def test_unlabelled_rows_ignored_and_missing_values_tolerated():
    features, labels = _synthetic(n_per_class=8)
    labels = labels.astype(object)
    labels.iloc[:5] = "DD"
    labels.iloc[5:8] = np.nan
    features.iloc[10, features.columns.get_loc("range_km2")] = np.nan
    features.iloc[11, features.columns.get_loc("eoo_km2")] = np.inf
    clf = StatusClassifier(method="random_forest").fit(features, labels.drop(labels.index[-3:]))
    assert clf.n_train_ == len(labels) - 8 - 3
    assert clf.predict(features).notna().all()


def test_single_member_class_does_not_crash_cv():
    features, labels = _synthetic(n_per_class=6)
    labels = labels.copy()
    cr = labels.index[labels == "CR"]
    features, labels = features.drop(cr[1:]), labels.drop(cr[1:])  # one CR left
    metrics, oof = StatusClassifier(folds=5).cross_validate(features, labels)
    assert metrics["folds"] == 2
    assert oof.notna().all()
    assert metrics["per_class_recall"]["CR"] in (0.0, 1.0)


def test_absent_class_recall_is_none():
    features, labels = _synthetic(n_per_class=6)
    keep = labels != "NT"
    metrics, _ = StatusClassifier(folds=3).cross_validate(features[keep], labels[keep])
    assert metrics["per_class_recall"]["NT"] is None
    assert metrics["folds"] == 3


def test_bad_method_and_missing_feature_column():
    features, labels = _synthetic(n_per_class=4)
    with pytest.raises(ValueError, match="method"):
        StatusClassifier(method="svm").fit(features, labels)
    clf = StatusClassifier().fit(features, labels)
    with pytest.raises(ValueError, match="niche_mean_bio1"):
        clf.predict_proba(features.drop(columns="niche_mean_bio1"))


def test_save_and_load_roundtrip(tmp_path):
    features, labels = _synthetic(n_per_class=5)
    clf = StatusClassifier(seed=2)
    clf.cross_validate(features, labels)  # as the rule does before fitting: its results are not saved
    clf.fit(features, labels)
    path = tmp_path / "classifier.skops"
    save_classifier(clf, path)
    again = load_classifier(path)
    pd.testing.assert_frame_equal(clf.predict_proba(features), again.predict_proba(features))
    assert (clf.predict(features) == again.predict(features)).all()


def test_a_tampered_or_foreign_classifier_file_gives_one_line(tmp_path):
    import pickle
    import zipfile

    features, labels = _synthetic(n_per_class=4)
    path = tmp_path / "classifier.skops"
    save_classifier(StatusClassifier(decision="argmax").fit(features, labels), path)
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.skops: not a status classifier file") as error:
        load_classifier(truncated)
    assert "\n" not in str(error.value)
    pickled = tmp_path / "pickled.skops"  # a pickle (joblib's format) runs code on load: refused, never unpickled
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a status classifier file"):
        load_classifier(pickled)
    # an archive naming a type the pipeline never writes
    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "schema.json":
                data = data.replace(b'"sdm.status"', b'"os"').replace(b'"StatusClassifier"', b'"system"')
            target.writestr(item, data)
    with pytest.raises(ValueError, match=r"refused to load.*os\.system"):
        load_classifier(tampered)


def test_a3_thresholds_at_edges():
    loss = pd.Series([0.0, 0.29, 0.3, 0.49, 0.5, 0.79, 0.8, 1.0, 1 - 0.7, np.nan], index=list("abcdefghij"))
    got = a3_category(loss)
    assert list(got.iloc[:9]) == ["LC", "LC", "VU", "VU", "EN", "EN", "CR", "CR", "VU"]
    assert pd.isna(got.iloc[9])
    assert got.index.equals(loss.index)


def test_status_table():
    features, labels = _synthetic(n_per_class=6)
    clf = StatusClassifier().fit(features, labels)
    _, oof = clf.cross_validate(features, labels)
    future = features.copy()
    future["range_loss"] = 0.0
    future.iloc[0, future.columns.get_loc("range_loss")] = 0.85  # an LC species losing 85 % of its range
    future.iloc[1, future.columns.get_loc("range_km2")] = 0.0
    # an assessed LC species whose future features look like a CR species' (the classifier disagrees with its
    # label) but with no projected loss: its status stays LC
    future.iloc[3, [future.columns.get_loc(c) for c in ("range_km2", "eoo_km2", "aoo_km2", "current_range_km2")]] = (
        features.iloc[-1][["range_km2", "eoo_km2", "aoo_km2", "current_range_km2"]].to_numpy())
    runs = {("current", "none"): features, ("ssp585", "full"): future, ("ssp585", "none"): future}
    # Red List: known for all but the last 5 species; one DD.
    redlist = labels.iloc[:-5].astype(object).copy()
    redlist.iloc[2] = "DD"
    table = status_table(clf, runs, redlist, oof.iloc[:-5])

    assert len(table) == len(features) * len(runs)
    expected = ["species", "scenario", "dispersal", "category_classifier"] + [f"p_{c}" for c in CATEGORIES]
    expected += ["category_a3", "category_b", "category", "redlist_category", "category_cv", "status",
                 "no_suitable_cell"]
    assert list(table.columns[: len(expected)]) == expected
    assert table["category_b"].isna().all()  # the synthetic features have no criterion_b_rank
    np.testing.assert_allclose(table[[f"p_{c}" for c in CATEGORIES]].sum(axis=1), 1.0, atol=1e-9)

    cur = table[table["scenario"] == "current"].set_index("species")
    assert cur["category_a3"].isna().all()
    assert (cur["category"] == cur["category_classifier"]).all()
    labelled = redlist[redlist.isin(CATEGORIES)]
    assert (cur.loc[labelled.index, "status"] == labelled).all()
    assert cur.loc[redlist.index[2], "redlist_category"] == "DD"
    assert cur.loc[redlist.index[2], "status"] == cur.loc[redlist.index[2], "category"]
    unassessed = features.index[-5:]
    assert (cur.loc[unassessed, "redlist_category"] == "").all()
    assert (cur.loc[unassessed, "category_cv"] == "").all()
    assert (cur.loc[unassessed, "status"] == cur.loc[unassessed, "category"]).all()
    assert (cur.loc[features.index[:5], "category_cv"] != "").all()

    fut = table[(table["scenario"] == "ssp585") & (table["dispersal"] == "full")].set_index("species")
    sp0 = features.index[0]
    assert fut.loc[sp0, "category_a3"] == "CR" and fut.loc[sp0, "category"] == "CR"
    assert fut.loc[sp0, "status"] == "CR"
    order = {c: i for i, c in enumerate(CATEGORIES)}
    assert (fut["category"].map(order) >= fut["category_classifier"].map(order)).all()
    standing = cur["status"].reindex(fut.index)  # the Red List category, else the classifier's
    labelled_now = fut.index.isin(labelled.index)
    assert (fut.loc[~labelled_now, "status"] == fut.loc[~labelled_now, "category"]).all()
    worse = fut["category_a3"].map(order).fillna(-1) > standing.map(order)
    np.testing.assert_array_equal(fut.loc[labelled_now, "status"],
                                  fut["category_a3"].where(worse, standing)[labelled_now])
    sp3 = features.index[3]
    assert labels[sp3] == "LC" and fut.loc[sp3, "category_classifier"] != "LC"
    assert fut.loc[sp3, "status"] == "LC"
    assert bool(fut.loc[features.index[1], "no_suitable_cell"])
    assert table["no_suitable_cell"].dtype == bool
    np.testing.assert_allclose(table["p_threatened"], table[["p_VU", "p_EN", "p_CR"]].sum(axis=1))

    ranked = {run: feats.assign(criterion_b_rank=np.arange(len(feats)) % 4) for run, feats in runs.items()}
    labels_b = status_table(clf, ranked, redlist, oof.iloc[:-5])["category_b"]
    assert labels_b.iloc[:4].tolist() == ["LC or NT", "VU", "EN", "CR"]


def test_status_table_accepts_read_redlist_frame():
    features, labels = _synthetic(n_per_class=4)
    clf = StatusClassifier().fit(features, labels)
    sp = features.index
    frame = pd.DataFrame(
        {
            "species": pd.array(sp[:3], dtype="string"),
            "raw_category": ["DD", "EN", None],
            "category": pd.array([pd.NA, "EN", pd.NA], dtype="string"),
        }
    )
    table = status_table(clf, {("current", "none"): features}, frame, None).set_index("species")
    assert list(table.loc[sp[:3], "redlist_category"]) == ["DD", "EN", ""]
    assert table.loc[sp[1], "status"] == "EN"
    assert table.loc[sp[0], "status"] == table.loc[sp[0], "category"]
    assert (table["category_cv"] == "").all()
    # The same labels as a pandas string Series with NA work for fit and CV.
    labels_na = pd.Series(pd.array(list(labels.iloc[:-2]) + [pd.NA, pd.NA], dtype="string"), index=sp)
    metrics, _ = StatusClassifier(folds=2).cross_validate(features, labels_na)
    assert metrics["n_species"] == len(sp) - 2
