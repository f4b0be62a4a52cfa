"""benchmarks/nceas.py: reading the NCEAS development regions as the protocol says (no model is trained)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nceas", ROOT / "benchmarks" / "nceas.py")
nceas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nceas)

pytestmark = pytest.mark.skipif(not nceas.DATA.exists(), reason="../shared/data/nceas_disdat not present")


def test_nsw_tables_follow_the_protocol():
    data = nceas.load_region("NSW")
    X, y = data["X"], data["y"]
    assert len(X) == 3323 + 10000 and y.notna().sum() == 3323 and y.iloc[3323:].isna().all()
    assert isinstance(X["vegsys"].dtype, pd.CategoricalDtype) and X["vegsys"].nunique() <= 9
    assert len(data["covariates"]) == 13 and "x" not in X.columns
    assert len(data["group_of"]) == 54 and set(data["tests"]) == {"ba", "db", "nb", "ot", "ou", "rt", "ru", "sr"}
    test_X, pa = data["tests"]["ba"]
    assert list(test_X.columns) == list(X.columns) and len(test_X) == len(pa) == 570
    assert list(test_X["vegsys"].cat.categories) == list(X["vegsys"].cat.categories)


def test_reserved_regions_are_refused():
    with pytest.raises(ValueError, match="not a development region"):
        nceas.load_region("NZ")


def test_spatial_groups_cover_a_grid_of_blocks():
    xy = np.random.default_rng(0).random((1000, 2)) * [500, 200]
    groups = nceas.spatial_groups(xy, blocks=5)
    assert set(np.unique(groups)) == set(range(25))


def test_maxent_runs_with_the_glmnet_path():
    """elapid falls back silently to a single-penalty scikit-learn fit without python-glmnet."""
    import elapid.models

    assert not elapid.models.FORCE_SKLEARN and getattr(elapid.models, "LogitNet", None) is not None
