"""The evaluation code of benchmarks/skill_sdm.py on cases with a known answer (fast; no model is trained)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("skill_sdm", ROOT / "benchmarks" / "skill_sdm.py")
skill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skill)

from sdm.train import SPLITS, spatial_blocks  # noqa: E402


# --- AUC ------------------------------------------------------------------------------------------------------------

def test_perfect_scorer_has_auc_one_and_inverted_zero():
    presence, background = np.array([0.7, 0.8, 0.99]), np.array([0.1, 0.2, 0.3, 0.69])
    assert skill.auc(presence, background) == pytest.approx(1.0)
    assert skill.auc(-presence, -background) == pytest.approx(0.0)


def test_random_scorer_has_auc_one_half():
    rng = np.random.default_rng(0)
    assert skill.auc(rng.random(5000), rng.random(20000)) == pytest.approx(0.5, abs=0.02)


def test_ties_count_half_and_empty_sides_are_nan():
    assert skill.auc(np.array([0.5, 0.5]), np.array([0.5, 0.5, 0.5])) == pytest.approx(0.5)
    # 0.6 beats 0.1 and ties 0.6: (1 + 0.5) / 2
    assert skill.auc(np.array([0.6]), np.array([0.1, 0.6])) == pytest.approx(0.75)
    assert np.isnan(skill.auc(np.array([]), np.array([0.1])))
    assert np.isnan(skill.auc(np.array([0.1]), np.array([])))


# --- independent test records against background cells ------------------------------------------------------------

SUITABILITY = np.array([[0.1, 0.2, 0.3],
                        [0.4, 0.5, 0.6],
                        [0.7, 0.8, np.nan]])
EVERY_CELL = np.ones((3, 3), dtype=bool)


def test_independent_test_auc_on_a_hand_made_grid():
    # background: the 8 cells with a score. Record at 0.8 beats 7 and ties itself: 7.5 / 8; record at 0.6 beats 5
    # and ties itself: 5.5 / 8. The record on the no-data cell is left out.
    rows, cols = np.array([2, 1, 2]), np.array([1, 2, 2])
    expected = (7.5 / 8 + 5.5 / 8) / 2
    assert skill.independent_test_auc(SUITABILITY, rows, cols, EVERY_CELL) == pytest.approx(expected)


def test_independent_test_auc_counts_each_record():
    # two records in the 0.8 cell, one in the 0.6 cell
    rows, cols = np.array([2, 2, 1]), np.array([1, 1, 2])
    expected = (2 * 7.5 / 8 + 5.5 / 8) / 3
    assert skill.independent_test_auc(SUITABILITY, rows, cols, EVERY_CELL) == pytest.approx(expected)


def test_independent_test_auc_uses_only_the_background_mask():
    background = np.zeros((3, 3), dtype=bool)
    background[0] = True  # the top row: 0.1, 0.2, 0.3, all below both records
    assert skill.independent_test_auc(SUITABILITY, np.array([2, 1]), np.array([1, 2]), background) == 1.0


# --- presence / absence truth -------------------------------------------------------------------------------------

def test_presence_absence_skill_perfect_random_and_threshold():
    truth = np.r_[np.ones(50), np.zeros(150)]
    perfect = skill.presence_absence_skill(truth * 0.5 + 0.25, truth, threshold=0.5)
    assert perfect == {"auc": pytest.approx(1.0), "tss": pytest.approx(1.0)}
    rng = np.random.default_rng(1)
    truth = rng.random(40000) < 0.3
    random = skill.presence_absence_skill(rng.random(40000), truth, threshold=0.5)
    assert random["auc"] == pytest.approx(0.5, abs=0.02)
    assert random["tss"] == pytest.approx(0.0, abs=0.03)
    # hand-made: presences 0.2, 0.6, 0.8; absences 0.1, 0.5, 0.7, 0.3; at 0.55: sensitivity 2/3, specificity 3/4
    scores = np.array([0.2, 0.6, 0.8, 0.1, 0.5, 0.7, 0.3])
    truth = np.array([1, 1, 1, 0, 0, 0, 0])
    out = skill.presence_absence_skill(scores, truth, threshold=0.55)
    assert out["tss"] == pytest.approx(2 / 3 + 3 / 4 - 1)
    assert out["auc"] == pytest.approx(8 / 12)  # pairs won: 0.2 > 0.1; 0.6 > 0.1, 0.5, 0.3; 0.8 > all four


# --- spatial splits: no leakage between training and test cells ---------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_masks_are_disjoint_and_cover_the_valid_cells(seed):
    rng = np.random.default_rng(seed)
    valid = rng.random((47, 120)) < 0.4  # like the 3-degree land mask
    records = np.where(valid & (rng.random(valid.shape) < 0.2), 1.0, 0.0)
    split = spatial_blocks(valid.shape, 5, seed, records=records, valid=valid)
    masks = skill.split_cells(split, valid)
    stacked = np.stack([masks[name] for name in SPLITS])
    assert (stacked.sum(axis=0) == valid).all()  # every valid cell in exactly one split, invalid in none
    assert not (masks["train"] & masks["test"]).any()
    assert masks["test"].any() and masks["train"].any()
    # whole blocks: no test cell has a training cell in the same 5 x 5 block
    for r in range(0, 47, 5):
        for c in range(0, 120, 5):
            codes = np.unique(split[r:r + 5, c:c + 5])
            assert len(codes) == 1


def test_independent_split_without_test_blocks_keeps_everything_for_training_and_validation():
    split = spatial_blocks((40, 52), 8, seed=0, fractions=(0.8, 0.2, 0.0))
    assert SPLITS["test"] not in np.unique(split)
    assert set(np.unique(split)) == {SPLITS["train"], SPLITS["validation"]}


def test_mammal_records_are_a_sample_of_true_presences():
    truth = np.zeros((2, 10, 10), dtype="uint8")
    truth[0, :4, :5] = 1  # 20 presence cells
    truth[1, 9, :3] = 1  # 3 presence cells: fewer than the minimum, all are taken
    truth[:, 5, 5] = 255  # no data
    da = xr.DataArray(truth, dims=("species", "y", "x"), coords={"species": ["a", "b"]})
    records = skill.mammal_records(da, fraction=0.5, seed=0, minimum=5)
    assert (records["species"] == "a").sum() == 10
    assert (records["species"] == "b").sum() == 3
    for i, s in enumerate(["a", "b"]):
        mine = records[records["species"] == s]
        assert (truth[i, mine["row"], mine["col"]] == 1).all()
        assert not mine.duplicated(["row", "col"]).any()


def test_grid_scores_put_cell_scores_back_on_the_grid():
    info = {"scores": np.array([[0.1, 0.9], [0.2, 0.8]]), "cell_rows": np.array([0, 2]),
            "cell_cols": np.array([1, 0])}
    grid = skill.grid_scores(info, "scores", (3, 2))
    assert grid.shape == (2, 3, 2)
    assert grid[0, 0, 1] == 0.1 and grid[1, 2, 0] == 0.8
    assert np.isnan(grid).sum() == 2 * 4


def test_validation_threshold_uses_only_validation_records():
    scores = np.array([[0.9, 0.2, 0.1],
                       [0.8, 0.3, 0.05]])
    masks = {"validation": np.array([[False, True, True], [False, True, True]])}
    import pandas as pd
    records = pd.DataFrame({"row": [0, 1, 0], "col": [0, 0, 1]})  # two training records score high, one validation
    threshold = skill._validation_threshold(scores, records, masks)
    # validation presence 0.2 against validation cells 0.2, 0.1, 0.3, 0.05: best cut keeps 0.2
    assert threshold == pytest.approx(0.2)


# --- the real inputs load as documented (skipped without ../shared/data) -----------------------------------------

needs_data = pytest.mark.skipif(not (skill.DATA / "kuenm2_myrcia_cmip6").exists(), reason="shared data absent")


@needs_data
def test_myrcia_inputs():
    cube, occurrences, test = skill.load_myrcia()
    assert [str(v) for v in cube["variable"].values] == ["bio1", "bio7", "bio12", "bio15"]
    assert int(skill.valid_mask(cube).sum()) == 1456
    assert occurrences["n_records"].sum() <= 51 and len(test) == 82
    assert (test["row"] >= 0).sum() >= 80


@needs_data
def test_mammal_truth_matches_the_table():
    _, truth = skill.load_mammals()
    presences = {str(s): int((truth.sel(species=s).values == 1).sum()) for s in truth["species"].values}
    assert presences == {"ConnochaetesGnou": 9, "GuloGulo": 661, "PantheraOnca": 152, "PteropusGiganteus": 62,
                         "TenrecEcaudatus": 13, "VulpesVulpes": 1182}


# --- issue 11: transfer to withheld blocks, richness far from records ------------------------------------------------

def _lonlat_grid():
    import rioxarray  # noqa: F401

    lon = np.arange(-179.75, 180, 0.5)
    lat = np.arange(89.75, -90, -0.5)
    return xr.DataArray(np.zeros((len(lat), len(lon)), "float32"), dims=("y", "x"),
                        coords={"y": lat, "x": lon}).rio.write_crs("EPSG:4326")


@needs_data
def test_mammals_score_the_evaluation_fit_not_the_refit(monkeypatch):
    """The test blocks' truth must be scored with the model fitted without them: the refitted model's scores (which
    saw the test blocks' presences) are the truth turned upside down here, the evaluation fit's the truth itself."""
    cube, truth = skill.load_mammals()
    valid = skill.valid_mask(cube)
    rows, cols = np.nonzero(valid)
    species = [str(s) for s in truth["species"].values]
    true = np.stack([(truth.sel(species=s).values[rows, cols] == 1).astype(float) for s in species], axis=1)
    split = np.zeros(valid.shape, dtype="int8")
    split[:, ::3] = SPLITS["validation"]
    split[:, 1::3] = SPLITS["test"]

    def fake_train_sdm(cube, records, **kwargs):
        return None, {"species": species, "split": split, "cell_rows": rows, "cell_cols": cols,
                      "scores": 1 - true, "evaluation_scores": true, "baseline_scores": 0.5 + 0 * true}

    monkeypatch.setattr(skill, "train_sdm", fake_train_sdm)
    table = skill.run_mammals(repeats=1)
    deep = next(r for r in table["rows"] if r["model"] == "deep SDM")
    assert deep["mean_auc"] == 1.0


def test_withheld_blocks_take_whole_blocks_and_their_share():
    import pandas as pd

    grid = _lonlat_grid()
    rng = np.random.default_rng(0)
    occurrences = pd.DataFrame({"species": "a", "row": rng.integers(0, 360, 5000), "col": rng.integers(0, 720, 5000)})
    withheld = skill.withheld_blocks(occurrences, grid, 5.0, 0.2, seed=3)
    lon, lat = grid["x"].values[occurrences["col"]], grid["y"].values[occurrences["row"]]
    block = pd.Series(list(zip(np.floor(lon / 5), np.floor(lat / 5))))
    per_block = pd.Series(withheld).groupby(block).agg(["min", "max"])
    assert (per_block["min"] == per_block["max"]).all()  # a block is withheld whole or not at all
    assert per_block["min"].mean() == pytest.approx(0.2, abs=0.01)
    assert not np.array_equal(withheld, skill.withheld_blocks(occurrences, grid, 5.0, 0.2, seed=4))


def test_transfer_table_prints_median_and_collapsed_species():
    with pytest.raises(ValueError, match=r"deep: no AUC for 1 species \(d\)"):
        skill._transfer_row("deep", {"a": 0.9, "b": 0.7, "c": 0.99, "d": float("nan")})
    rows = [skill._transfer_row("deep", {"a": 0.9, "b": 0.7, "c": 0.99}),
            skill._transfer_row("maxent", {"a": 0.95, "b": 0.85, "c": 0.9})]
    assert rows[0]["n_species"] == 3 and rows[0]["median_auc"] == 0.9 and rows[0]["below_0.8"] == 1
    table = {"dataset": "orchids_transfer", "protocol": "p", "rows": rows, "auc_difference": -0.0367,
             "target": 0.02, "target_met": False, "seconds": 1.0}
    lines = skill.format_table(table).splitlines()
    assert lines[1].split()[-4:] == ["median", "AUC", "below", "0.8"]
    assert lines[2].split()[-2:] == ["0.9", "1"] and lines[3].split()[-2:] == ["0.9", "0"]
    assert lines[-1].startswith("AUC difference -0.0367 (target 0.02): MISSED")


def test_distance_to_records_and_richness_far_and_near():
    import pandas as pd

    grid = _lonlat_grid()
    valid = np.ones(grid.shape, dtype=bool)
    equator, greenwich = 179, 359  # the cell centred on (-0.25, 0.25)
    occurrences = pd.DataFrame({"species": ["a"], "row": [equator], "col": [greenwich]})
    distance = skill.distance_to_records_km(grid, valid, occurrences)
    assert distance[equator, greenwich] == pytest.approx(0.0)
    # 10 cells (5 degrees) east along the equator: 5 x 111.2 km
    assert distance[equator, greenwich + 10] == pytest.approx(5 * 111.195, rel=1e-3)
    presence = np.zeros((3, *grid.shape), dtype=bool)
    presence[:, distance <= 250] = True  # three species near records
    presence[0, distance > 1000] = True  # one species everywhere far away
    result = skill.richness_by_distance(presence, distance)
    assert result["near_richness"] == pytest.approx(3.0) and result["far_richness"] == pytest.approx(1.0)
    assert result["far_over_near"] == pytest.approx(1 / 3, abs=1e-3)


def test_schema_defaults_are_what_a_bare_config_runs():
    defaults = skill.schema_defaults()
    assert defaults["loss"] == "maxent" and defaults["block_cells"] == 20


def test_myrcia_selection_scores_inner_test_blocks_and_never_the_independent_records(monkeypatch):
    skill_sdm = skill
    calls = []
    monkeypatch.setattr(skill_sdm, "load_myrcia", lambda: ("cube", "occurrences", None))  # no independent records

    def fake_train(cube, occurrences, *, seed, baseline, fractions, **params):
        calls.append((seed, baseline, fractions, params))
        auc = 0.6 + 0.1 * params.get("additive", 0) / 32
        return None, {"metrics": {"test": {"deep_sdm": {"mean_auc": auc},
                                           **({"baseline": {"mean_auc": 0.7}} if baseline != "none" else {})}}}

    monkeypatch.setattr(skill_sdm, "train_sdm", fake_train)
    result = skill_sdm.select_myrcia(seeds=2)
    assert len(calls) == 2 * len(skill_sdm.MYRCIA_CANDIDATES)
    assert all(fractions[2] > 0 for _, _, fractions, _ in calls)  # inner test blocks cut from the training records
    assert all(params["hidden"] == skill_sdm.DEEP["myrcia"]["hidden"] for *_, params in calls)
    assert result["additive, 32 units per input"]["mean_auc"] == 0.7
    assert result[skill_sdm.MAXENT]["per_seed"] == [0.7, 0.7]


def test_orchid_selection_never_sees_the_test_blocks(monkeypatch):
    """The inner fits get a cube and records without the outer test blocks; the best inner candidate is chosen."""
    rng = np.random.default_rng(0)
    cube = xr.DataArray(rng.normal(size=(2, 6, 6)).astype("float32"), dims=("variable", "y", "x"),
                        coords={"variable": ["bio1", "bio12"], "y": np.arange(6.0), "x": np.arange(6.0)})
    rows, cols = np.divmod(np.arange(36), 6)
    occurrences = pd.DataFrame({"species": np.where(np.arange(36) % 2, "a", "b"), "row": rows, "col": cols})
    split = np.zeros((6, 6), dtype="int8")
    split[:2, :2] = SPLITS["test"]
    monkeypatch.setattr(skill, "load_orchids", lambda: (cube, occurrences))
    seen = []

    def fake_train(cube, occurrences, *, seed, species, **params):
        if params.get("epochs") == 1:  # the outer split
            return None, {"split": split}
        seen.append((cube, occurrences, params))
        auc = 0.9 + (0.05 if params.get("target_group") == 0.5 else 0.0)
        return None, {"metrics": {"test": {"deep_sdm": {"per_species": {s: {"auc": auc} for s in species}}}}}

    monkeypatch.setattr(skill, "train_sdm", fake_train)
    result = skill.select_orchids(seeds=(1, 2), outer=False)
    assert len(seen) == 2 * len(skill.ORCHID_CANDIDATES)
    for inner_cube, inner_occurrences, params in seen:
        assert bool(inner_cube.isel(y=slice(0, 2), x=slice(0, 2)).isnull().all())
        assert int(inner_cube.isel(y=slice(2, None)).notnull().sum()) == 2 * 24
        assert not ((inner_occurrences["row"] < 2) & (inner_occurrences["col"] < 2)).any()
        assert len(inner_occurrences) == 32 and params["coordinates"] == 0
    assert result["chosen"] == "target-group share 0.5"
    assert result["inner"]["target-group share 0.5"]["per_seed"] == [0.95, 0.95]
