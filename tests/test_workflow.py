"""End to end: snakemake on a small demo world in a temporary directory, then every output checked against the
demo's known truth; a second run has nothing to do; adding a scenario reruns only what depends on it."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml
from sklearn.metrics import roc_auc_score

from sdm.climate import open_cube
from sdm.demo import load_truth
from sdm.predict import open_predictions
from sdm.redlist import THREATENED

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ["ssp126_2070", "ssp585_2070"]
RUNS = ["current_none"] + [f"{s}_{d}" for s in SCENARIOS for d in ("full", "none")]

CONFIG = {
    "demo": {"rows": 200, "cols": 200, "species": 30, "seed": 3,
             "scenarios": {"ssp126_2070": {"warming": 1.5, "precip_change": -0.05},
                           "ssp585_2070": {"warming": 4.0, "precip_change": -0.2}}},
    "occurrences": {"path": "results/demo/occurrences.csv"},
    "redlist": {"path": "results/demo/redlist.csv"},
    "climate": {"current": "results/demo/climate/current.tif",
                "scenarios": {s: f"results/demo/climate/{s}.tif" for s in SCENARIOS},
                "ensembles": {"both_ssps": SCENARIOS}},
    "sdm": {"epochs": 40, "hidden": 128, "blocks": 3, "baseline": "logistic", "patience": 8},
    "prediction": {"chunk": 128},
    "maps": {"regions": {"path": "regions.geojson", "name_column": "name"},
             "protected_areas": {"path": "protected.tif"}},
}
ENSEMBLE_RUNS = ["both_ssps_full", "both_ssps_none"]


def write_planner_inputs(workdir: Path, rows: int = 200, cols: int = 200) -> None:
    """Two regions (the West and East halves of the demo world) and a protected-area raster: the West protected."""
    from rasterio.transform import from_origin
    from shapely.geometry import box

    import geopandas as gpd
    from sdm.demo import CELL_M, ORIGIN

    x0, y0 = ORIGIN
    mid = x0 + cols // 2 * CELL_M
    halves = [box(x0, y0 - rows * CELL_M, mid, y0), box(mid, y0 - rows * CELL_M, x0 + cols * CELL_M, y0)]
    gpd.GeoDataFrame({"name": ["West", "East"]}, geometry=halves, crs="EPSG:3035").to_file(workdir / "regions.geojson")
    protected = np.zeros((rows, cols), "float32")
    protected[:, : cols // 2] = 1.0
    with rasterio.open(workdir / "protected.tif", "w", driver="GTiff", height=rows, width=cols, count=1,
                       dtype="float32", crs="EPSG:3035", transform=from_origin(x0, y0, CELL_M, CELL_M)) as dst:
        dst.write(protected, 1)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("demo_run")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    write_planner_inputs(workdir)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_ingest_report_adds_up(run):
    report = json.loads((run / "results/ingest_report.json").read_text())
    assert report["records_kept"] + sum(report["dropped"].values()) == report["records_read"]
    # the demo plants bad rows of several kinds; each must be caught under its own reason
    for reason in ("missing_coordinates", "non_numeric_coordinates", "coordinates_out_of_range", "outside_grid",
                   "zero_zero_coordinates", "duplicate_species_cell"):
        assert report["dropped"][reason] > 0, reason
    occurrences = pd.read_parquet(run / "results/occurrences.parquet")
    rejected = pd.read_parquet(run / "results/rejected_occurrences.parquet")
    assert len(occurrences) == report["records_kept"]
    assert len(rejected) == sum(report["dropped"].values())
    assert not occurrences.duplicated(["species", "row", "col"]).any()


def test_cubes_share_the_grid_with_crs(run):
    current = open_cube(run / "results/cubes/current.zarr")
    assert current.dims == ("variable", "y", "x")
    assert current.shape[1:] == (200, 200)
    assert current.rio.crs.to_epsg() == 3035
    for scenario in SCENARIOS:
        cube = open_cube(run / f"results/cubes/{scenario}.zarr")
        assert cube.shape == current.shape
        assert cube.rio.crs == current.rio.crs
        np.testing.assert_array_equal(cube["x"], current["x"])
        warming = float((cube.sel(variable="bio1") - current.sel(variable="bio1")).mean())
        assert warming > 1.0  # both demo futures are warmer


def test_sdm_beats_chance_against_truth_and_reports_baseline(run):
    metrics = json.loads((run / "results/sdm/metrics.json").read_text())
    deep, baseline = metrics["test"]["deep_sdm"], metrics["test"]["baseline"]
    assert deep["mean_auc"] is not None and baseline["mean_auc"] is not None
    assert "logistic" in baseline["name"]

    _, truth = load_truth(run / "results/demo")
    predictions = open_predictions(run / "results/predictions/current.zarr")
    with rasterio.open(run / "results/sdm/split.tif") as src:
        split = src.read(1)
        assert src.crs.to_epsg() == 3035
    test_cells = (split == 2) & predictions["suitability"].isel(species=0).notnull().values
    aucs = []
    for species in predictions["species"].values:
        truth_presence = truth["presence"].sel(scenario="current", species=species).values[test_cells]
        score = predictions["suitability"].sel(species=species).values[test_cells]
        if 0 < truth_presence.sum() < truth_presence.size:
            aucs.append(roc_auc_score(truth_presence, score))
    assert len(aucs) >= 15
    assert np.mean(aucs) >= 0.85, f"held-out AUC against the true presence: {np.mean(aucs):.3f}"


def test_predictions_are_compact_and_aligned(run):
    raw = xr.open_zarr(run / "results/predictions/ssp585_2070.zarr", consolidated=False)
    assert raw["suitability"].dtype == np.uint8 and raw["presence"].dtype == np.uint8
    assert raw["suitability"].dims == ("species", "y", "x")
    assert 20 <= raw["suitability"].sizes["species"] <= 30  # species under sdm.min_records are not modelled
    assert raw["suitability"].shape[1:] == (200, 200)
    assert int(raw["suitability"].max()) <= 255


def test_status_recovers_true_labels(run):
    status = pd.read_csv(run / "results/iucn/status.csv")
    species, _ = load_truth(run / "results/demo")
    assert len(status) == status["species"].nunique() * len(RUNS + ENSEMBLE_RUNS)
    assert set(zip(status["scenario"], status["dispersal"])) == {tuple(r.rsplit("_", 1)) for r in RUNS + ENSEMBLE_RUNS}
    current = status[status["scenario"] == "current"].set_index("species")
    truth = species.set_index("species")
    # honest evidence: out-of-fold predictions for assessed species, plain predictions for the others
    predicted = current["category_cv"].where(current["category_cv"].notna(), current["category"])
    true = truth["true_category"].reindex(predicted.index)
    binary = (predicted.isin(THREATENED) == true.isin(THREATENED)).mean()
    assert binary >= 0.8, f"binary accuracy against the demo's true labels: {binary:.3f}"
    cv = json.loads((run / "results/iucn/cv_metrics.json").read_text())
    assert set(cv) >= {"accuracy", "balanced_accuracy", "binary_accuracy", "confusion_matrix"}
    per_run = status[status["scenario"] != "both_ssps"]  # ensemble rows summarise members, without probabilities
    probabilities = per_run[["p_LC", "p_NT", "p_VU", "p_EN", "p_CR"]].sum(axis=1)
    np.testing.assert_allclose(probabilities, 1.0, atol=1e-6)


def test_indicator_geotiffs_open_with_crs(run):
    for run_name in RUNS:
        folder = run / "results/indicators" / run_name
        names = ["richness", "threatened_count", "threatened_share", "most_threatened", "mess"]
        if run_name != "current_none":
            names += ["richness_change", "threatened_count_change", "threatened_share_change"]
        for name in names:
            with rasterio.open(folder / f"{name}.tif") as src:
                assert src.crs.to_epsg() == 3035
                assert (src.height, src.width) == (200, 200)
                values = src.read(1)
            if name == "most_threatened":
                assert set(np.unique(values[np.isfinite(values)])) <= {0, 1, 2, 3, 4}
            if name == "threatened_share":
                assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1
            if name == "mess":  # percent, at most 100; the demo's training cells span the current climate
                assert np.nanmax(values) <= 100 and np.isfinite(values).any()
        assert (folder / "indicators.zarr").is_dir()
    # richness equals the number of present species in the stored assemblage
    presence = open_predictions(run / "results/predictions/current.zarr")["presence"]
    with rasterio.open(run / "results/indicators/current_none/richness.tif") as src:
        richness = src.read(1)
    expected = presence.sum("species").values.astype("float32")
    valid = np.isfinite(richness)
    np.testing.assert_array_equal(richness[valid], expected[valid])
    # MESS: the scenario's climate, the same for both dispersal assumptions, and more novel under the warmer one
    stored = open_predictions(run / "results/predictions/ssp585_2070.zarr")["mess"].values
    novel = {}
    for run_name in RUNS:
        with rasterio.open(run / "results/indicators" / run_name / "mess.tif") as src:
            novel[run_name] = src.read(1)
    np.testing.assert_array_equal(novel["ssp585_2070_full"], stored)
    np.testing.assert_array_equal(novel["ssp585_2070_none"], stored)
    share = {r: np.nanmean(v < 0) for r, v in novel.items()}
    assert share["ssp585_2070_full"] > share["ssp126_2070_full"] >= share["current_none"]


def test_maps_are_offline(run):
    maps = run / "results/maps"
    pages = sorted(maps.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "richness.html", "threatened_share.html",
                                       "most_threatened.html", "richness_change.html", "mess.html"}
    for page in pages:
        assert not re.search(r"https?://(?!www\.w3\.org)", page.read_text()), page.name
    index = (maps / "index.html").read_text()
    assert "threatened_share.html" in index and "AUC" in index


def test_maps_render_in_a_browser_without_network(run, tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium not installed (apt-get install chromium)")
    from test_browser import dump_dom, js_errors, screenshot

    for page in ("index.html", "threatened_share.html"):
        dom = dump_dom(tmp_path, run / "results/maps" / page)
        assert js_errors(dom) == "", f"{page}: {js_errors(dom)}"
        if page != "index.html":
            assert "leaflet-container" in dom
            assert "leaflet-image-layer" in dom
            assert "legend" in dom
    screenshot(tmp_path, run / "results/maps/threatened_share.html", "e2e_threatened_share")


def test_ensemble_layers_are_the_members_median_and_agreement(run):
    def layer(run_name, name):
        with rasterio.open(run / "results/indicators" / run_name / f"{name}.tif") as src:
            return src.read(1)

    for dispersal in ("full", "none"):
        members = [layer(f"{s}_{dispersal}", "richness") for s in SCENARIOS]
        np.testing.assert_allclose(layer(f"both_ssps_{dispersal}", "richness"), np.median(members, axis=0))
        rises = [layer(f"{s}_{dispersal}", "threatened_count_change") > 0 for s in SCENARIOS]
        agreement = layer(f"both_ssps_{dispersal}", "threatened_rise_agreement")
        valid = np.isfinite(agreement)
        np.testing.assert_allclose(agreement[valid], np.mean(rises, axis=0)[valid])
    status = pd.read_csv(run / "results/iucn/status.csv")
    ensemble = status[status["scenario"] == "both_ssps"]
    assert len(ensemble) == 2 * status["species"].nunique()
    assert ensemble["threatened_agreement"].between(0, 1).all() and set(ensemble["members"]) == {2}


def test_regions_and_protection(run):
    regions = pd.read_csv(run / "results/indicators/regions.csv")
    assert set(regions["region"]) == {"West", "East"}
    assert set(regions["run"]) == set(RUNS + ENSEMBLE_RUNS)
    with rasterio.open(run / "results/indicators/current_none/richness.tif") as src:
        richness = src.read(1)
    west = regions.query("region == 'West' and run == 'current_none' and indicator == 'richness'").iloc[0]
    # an equal-area grid of 1 km2 cells: the area-weighted mean is the mean over the West's cells with data
    assert west["mean"] == pytest.approx(np.nanmean(richness[:, :100]), rel=1e-4)
    assert west["area_km2"] == pytest.approx(np.isfinite(richness[:, :100]).sum(), rel=1e-4)
    with rasterio.open(run / "results/indicators/current_none/threatened_count.tif") as src:
        threatened = src.read(1)
    with rasterio.open(run / "results/indicators/current_none/threatened_unprotected.tif") as src:
        gap = src.read(1)
    np.testing.assert_array_equal(gap[:, 100:], threatened[:, 100:])  # unprotected East: every threatened species
    assert np.nanmax(gap[:, :100]) == 0  # the West is protected
    protection = pd.read_csv(run / "results/indicators/protection.csv")
    assert protection["protected_share_current_none"].is_monotonic_increasing
    maps = run / "results/maps"
    index = (maps / "index.html").read_text()
    for page in ("species.html", "regions.html", "protection.html", "threatened_rise_agreement.html",
                 "threatened_unprotected.html"):
        assert (maps / page).is_file() and page in index
    assert "Configuration" in index and "both_ssps" in index
    explorer = (maps / "species.html").read_text()
    species = pd.read_parquet(run / "results/occurrences.parquet")["species"].unique()
    assert all(f'"name":"{name}"' in explorer for name in species)


def test_second_run_has_nothing_to_do(run):
    result = snakemake(run, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_adding_a_scenario_reruns_only_what_depends_on_it(run):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["climate"]["scenarios"]["extra_2070"] = "results/demo/climate/ssp585_2070.tif"
    extra = run / "config_extra.yaml"
    extra.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(run),
           "--configfile", str(extra), "--cores", "2", "--dry-run"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE))
    jobs.pop("total", None)
    assert jobs == {"ingest_climate": "1", "predict": "1", "range_sums": "1", "species_features": "2",
                    "predict_status": "2", "indicators_future": "1", "status_table": "1", "protection_gap": "2",
                    "protection_table": "1", "region_summary": "1", "maps": "1", "all": "1"}, out[-3000:]


def dry_run(workdir: Path, config: dict) -> subprocess.CompletedProcess:
    path = workdir / "config_dry.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(path), "--cores", "2", "--dry-run"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["sdm"].update(epoch=3), "config key sdm: unknown key(s) ['epoch']"),
    (lambda c: c["sdm"].update(epochs="ten"), "config key sdm.epochs: 'ten' is not of type 'integer'"),
    (lambda c: c["occurrences"].update(path="nowhere/occurrence.txt"),
     "config key occurrences.path: file not found: nowhere/occurrence.txt"),
    (lambda c: c["climate"]["scenarios"].update(ssp245="missing.tif"),
     "config key climate.scenarios.ssp245: file not found: missing.tif"),
])
def test_bad_config_stops_before_any_work_naming_the_key(tmp_path, change, message):
    config = json.loads(json.dumps(CONFIG))
    change(config)
    result = dry_run(tmp_path, config)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_user_config_runs_on_its_inputs_only(run, tmp_path):
    """A --configfile without a demo section: no demo job, only the user's scenario."""
    data = tmp_path / "mydata"
    data.mkdir()
    for name in ("occurrences.csv", "redlist.csv", "climate/current.tif", "climate/ssp585_2070.tif"):
        (data / Path(name).name).write_bytes((run / "results/demo" / name).read_bytes())
    config = {"occurrences": {"path": str(data / "occurrences.csv")}, "redlist": {"path": str(data / "redlist.csv")},
              "climate": {"current": str(data / "current.tif"), "scenarios": {"hot": str(data / "ssp585_2070.tif")}}}
    result = dry_run(tmp_path, config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout + result.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE))
    assert "demo" not in jobs
    assert jobs["ingest_climate"] == "2" and jobs["predict"] == "2"
    assert jobs["indicators_current"] == "1" and jobs["indicators_future"] == "1"  # one pass per scenario
    assert jobs["range_sums"] == "2"  # the present and the scenario
    assert "ssp126" not in out and "results/demo" not in out


def test_without_redlist_the_run_stops_after_richness(tmp_path):
    config = {"demo": {"rows": 40, "cols": 40, "species": 8, "seed": 5,
                       "scenarios": {"warm": {"warming": 2.0, "precip_change": -0.1}}},
              "occurrences": {"path": "results/demo/occurrences.csv"},
              "climate": {"current": "results/demo/climate/current.tif",
                          "scenarios": {"warm": "results/demo/climate/warm.tif"}},
              "sdm": {"epochs": 3, "hidden": 16, "blocks": 1, "baseline": "none", "block_cells": 8},
              "dispersal": ["none"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No redlist.path in the config" in result.stdout + result.stderr
    assert not (tmp_path / "results/iucn").exists()
    assert sorted(p.name for p in (tmp_path / "results/indicators/warm_none").glob("*.tif")) == [
        "mess.tif", "richness.tif", "richness_change.tif"]
    maps = {p.name for p in (tmp_path / "results/maps").glob("*.html")}
    assert maps == {"index.html", "richness.html", "richness_change.html", "mess.html", "species.html"}


def test_fused_mode_stores_no_species_cube(tmp_path):
    config = {"demo": {"rows": 40, "cols": 40, "species": 8, "seed": 5,
                       "scenarios": {"warm": {"warming": 2.0, "precip_change": -0.1}}},
              "occurrences": {"path": "results/demo/occurrences.csv"},
              "redlist": {"path": "results/demo/redlist.csv"},
              "climate": {"current": "results/demo/climate/current.tif",
                          "scenarios": {"warm": "results/demo/climate/warm.tif"}},
              "sdm": {"epochs": 3, "hidden": 16, "blocks": 1, "baseline": "none", "block_cells": 8},
              # the range pass on the model's device (here the CPU): the accelerator's path, end to end
              "prediction": {"fused": True, "chunk": 16, "reductions": "device"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reductions on cpu" in (tmp_path / "logs/range_sums/all.log").read_text()
    # every job's log ends with its kernel-measured peak memory, which the scale benchmark reads beside the
    # sampled one of the benchmark files
    spec = importlib.util.spec_from_file_location("scale_global", ROOT / "benchmarks" / "scale_global.py")
    scale_global = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale_global)
    jobs = scale_global.jobs(tmp_path)
    assert {"train_sdm", "range_sums", "indicators"} <= set(jobs["rule"]) and jobs["peak_mb"].notna().all()
    assert (jobs["peak_mb"] > 50).all() and (jobs["peak_mb"] < 8192).all()
    assert not (tmp_path / "results/predictions").exists()
    # presence as bits, one store per scenario, written by the range pass and read by the indicator pass
    assert sorted(p.name for p in (tmp_path / "results/sdm/presence").iterdir()) == ["current.zarr", "warm.zarr"]
    # the default average-K: the present's threshold, computed once, applied by every pass over every scenario
    assert 0 < json.loads((tmp_path / "results/sdm/average_k/current.json").read_text())["code"] < 255
    assert sorted(p.name for p in (tmp_path / "results/sdm/average_k").iterdir()) == ["current.json"]
    features = pd.read_parquet(tmp_path / "results/iucn/features_warm_none.parquet")
    assert (features["range_km2"] <= features["current_range_km2"]).all()  # no dispersal: inside the current range
    for name in ("richness", "threatened_share_change", "mess"):
        with rasterio.open(tmp_path / f"results/indicators/warm_full/{name}.tif") as src:
            assert src.crs.to_epsg() == 3035
    assert (tmp_path / "results/maps/index.html").exists() and (tmp_path / "results/maps/mess.html").exists()
    # one range-sums job and one indicators job for all runs (each a single pass: the present's forward serves all)
    benchmarks = tmp_path / "logs/benchmarks"
    assert [p.name for p in (benchmarks / "range_sums").iterdir()] == ["all.tsv"]
    assert [p.name for p in (benchmarks / "indicators").iterdir()] == ["all.tsv"]
    # a second scenario: still one job each
    config["climate"]["scenarios"]["hot"] = "results/demo/climate/warm.tif"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.MULTILINE))
    assert jobs["range_sums"] == "1" and jobs["indicators"] == "1", result.stdout[-3000:]


def test_a_failed_job_prints_its_reason_first_on_the_console(tmp_path):
    """A GBIF file whose longitude header is misspelt: the console (not only the log) names the file and the column;
    the default profile (workflow/profiles/default) shows the failed job's log too."""
    bad = tmp_path / "occurrence.csv"
    bad.write_text("species\tdecimalLongitud\tdecimalLatitude\nAus aus\t1.0\t2.0\n")
    config = json.loads(json.dumps(CONFIG))
    config["demo"].update(rows=60, cols=60, species=5, scenarios={})
    config["climate"]["scenarios"] = {}
    config["climate"].pop("ensembles")
    config.pop("maps")
    config["occurrences"]["path"] = str(bad)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--until", "ingest_occurrences")
    assert result.returncode != 0
    console = result.stdout + result.stderr
    errors = [line for line in console.splitlines() if line.startswith("ERROR: ")]
    assert errors, console[-3000:]
    assert str(bad) in errors[0] and "no longitude column" in errors[0] and "decimalLongitud" in errors[0]
    assert "Logfile logs/ingest_occurrences.log:" in console  # show-failed-logs, from the default profile
    assert "Traceback" in (tmp_path / "logs" / "ingest_occurrences.log").read_text()


def test_lint_is_clean_and_the_conda_env_has_the_package_pins(tmp_path):
    import tomllib

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(ROOT / "config" / "config.yaml"), "--lint", "--cores", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[-3000:]
    assert "Lints for" not in out
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "sdm.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == pins


def test_every_layer_the_indicators_rule_writes_is_declared(run):
    from sdm.ensembles import ensemble_layer_names
    from sdm.indicators import layer_names

    for name in RUNS + ENSEMBLE_RUNS:
        layers = ensemble_layer_names(True) if name in ENSEMBLE_RUNS else layer_names(name != "current_none", True)
        declared = {f"{layer}.tif" for layer in layers + ["threatened_unprotected"]}  # + the protection gap
        written = {p.name for p in (run / "results" / "indicators" / name).glob("*.tif")}
        assert written == declared, name
    maps = {p.name for p in (run / "results" / "maps").iterdir()}
    assert {"index.html", "lib", "richness.html", "mess.html", "richness_change.html"} <= maps


def test_report_is_self_contained_and_opens_offline(run, tmp_path):
    """snakemake --report report.zip: the metrics, the status table and every map inside; report.html renders in
    headless Chromium from file:// with the network refused."""
    import zipfile

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory",
           str(run), "--configfile", str(run / "config.yaml"), "--cores", "1", "--report", str(tmp_path / "r.zip")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with zipfile.ZipFile(tmp_path / "r.zip") as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    for expected in ("status.csv", "metrics.json", "cv_metrics.json", "index.html", "richness.html", "mess.html",
                     "leaflet.js", "report.html"):
        assert any(n.endswith("/" + expected) for n in names), expected
    html = next((tmp_path / "unzipped").rglob("report.html"))
    assert not re.search(r'(src|href)="https?://', html.read_text())
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("/usr/bin/chromium not installed")
    dom = subprocess.run(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000",
         "--dump-dom", html.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    for category in ("Maps", "Red List status", "Skill", "status.csv"):
        assert category in dom, category
