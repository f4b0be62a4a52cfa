"""The DeepSDM estimator (the trainer's table front door): scikit-learn contract, categories, seeds, refit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from sdm import DeepSDM

FAST = {"hidden": 32, "blocks": 1, "dropout": 0.0, "epochs": 12, "patience": 12, "batch_size": 64,
        "background_per_batch": 256, "learning_rate": 3e-3, "device": "cpu"}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def table(seed: int = 0, n_background: int = 2000):
    """Background rows over two covariates and a land-cover class; species 'warm' lives where t > 1, 'wet_forest'
    where p > 0.5 in forest; returns (X, y, truth (rows, species) bool)."""
    rng = np.random.default_rng(seed)
    n = n_background + 400
    X = pd.DataFrame({"t": rng.normal(size=n), "p": rng.normal(size=n),
                      "cover": pd.Categorical(rng.choice(["forest", "grass", "crop"], size=n))},
                     index=pd.RangeIndex(1000, 1000 + n))
    truth = pd.DataFrame({"warm": X["t"] > 1, "wet_forest": (X["p"] > 0.5) & (X["cover"] == "forest")})
    y = pd.Series([None] * n, index=X.index, dtype=object)
    for species, count in (("warm", 150), ("wet_forest", 120)):
        candidates = np.flatnonzero(truth[species].to_numpy()[n_background:]) + n_background
        chosen = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
        y.iloc[chosen] = species
    presence_rows = y.notna()
    return X[presence_rows | (np.arange(n) < n_background)], y[presence_rows | (np.arange(n) < n_background)], truth


@pytest.fixture(scope="module")
def fitted():
    X, y, truth = table()
    return DeepSDM(random_state=0, **FAST).fit(X, y), X, y, truth


def test_fit_returns_self_and_learns_the_niches(fitted):
    model, X, y, truth = fitted
    X_new, _, truth_new = table(seed=5)
    scores = model.predict_proba(X_new)
    assert list(scores.columns) == ["warm", "wet_forest"] == list(model.species_)
    assert scores.index.equals(X_new.index)
    assert ((scores.to_numpy() >= 0) & (scores.to_numpy() <= 1)).all()
    for species in scores.columns:
        assert roc_auc_score(truth_new.loc[X_new.index, species], scores[species]) > 0.85, species


def test_params_follow_the_sklearn_contract():
    model = DeepSDM(random_state=3, hidden=16)
    params = model.get_params()
    assert params["hidden"] == 16 and params["random_state"] == 3 and params["loss"] == DeepSDM().loss
    model.set_params(hidden=8, loss="logistic")
    assert model.hidden == 8 and model.loss == "logistic"
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model


def test_defaults_are_the_pipeline_defaults():
    """DeepSDM() and the config schema's sdm section agree on every shared hyper-parameter."""
    from pathlib import Path

    import yaml

    schema = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath(
        "workflow/schemas/config.schema.yaml").read_text())["properties"]["sdm"]["properties"]
    params = DeepSDM().get_params()
    shared = set(schema) & set(params)
    assert {"hidden", "blocks", "loss", "epochs", "learning_rate", "target_group"} <= shared
    for key in shared:
        assert schema[key].get("default") == params[key], key


def test_unseen_category_and_column_order_do_not_break_predict(fitted):
    model, X, _, _ = fitted
    X_new = X.iloc[:5].copy()
    X_new["cover"] = pd.Categorical(["desert", "forest", "grass", "ice", "crop"])
    scores = model.predict_proba(X_new[["cover", "p", "t"]])
    assert scores.shape == (5, 2) and np.isfinite(scores.to_numpy()).all()


def test_same_seed_same_model_other_seed_other_model():
    X, y, _ = table()
    params = {**FAST, "epochs": 3, "patience": 3}
    a = DeepSDM(random_state=1, **params).fit(X, y).predict_proba(X.iloc[:50])
    b = DeepSDM(random_state=1, **params).fit(X, y).predict_proba(X.iloc[:50])
    c = DeepSDM(random_state=2, **params).fit(X, y).predict_proba(X.iloc[:50])
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_refit_learns_from_every_row(fitted):
    """The stored model is refitted on all rows for best_epoch + 1 epochs, standardised with all rows' statistics."""
    model, X, _, _ = fitted
    assert model.n_epochs_ == model.best_epoch_ + 1
    assert model.mean_[0] == pytest.approx(X["t"].mean(), abs=1e-5)
    no_refit = DeepSDM(random_state=0, refit=False, **FAST).fit(*table()[:2])
    assert not np.isclose(no_refit.mean_[0], X["t"].mean(), atol=1e-4)  # validation rows left out


def test_groups_keep_blocks_together_in_validation(monkeypatch):
    import sdm.estimator

    seen = {}
    real = sdm.estimator.fit_joint

    def spy(values, presences, background, row_split, *args, **kwargs):
        seen["split"] = row_split
        return real(values, presences, background, row_split, *args, **kwargs)

    monkeypatch.setattr(sdm.estimator, "fit_joint", spy)
    X, y, _ = table()
    groups = np.arange(len(X)) // 100
    DeepSDM(random_state=0, **{**FAST, "epochs": 1}).fit(X, y, groups=groups)
    for g in np.unique(groups):
        assert len(np.unique(seen["split"][groups == g])) == 1


def test_bad_inputs_say_what_is_wrong():
    X, y, _ = table()
    with pytest.raises(ValueError, match="background rows"):
        DeepSDM(**FAST).fit(X[y.notna()], y[y.notna()])
    with pytest.raises(ValueError, match="column 'name'"):
        DeepSDM(**FAST).fit(X.assign(name="x"), y)
    with pytest.raises(AttributeError, match="not fitted"):  # sklearn NotFittedError
        DeepSDM().predict_proba(X)
