"""The two real-data example configurations, run end to end on the files in ../shared/data (as users download them).

The orchid run uses fewer epochs, a narrower model, 5 status folds instead of 10 and the two SSP5-8.5 climate models
only (one ensemble) here (test overrides, not the example's settings) to fit CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from sdm.climate import open_cube

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    pytest.skip(f"real data not found at {SHARED}", allow_module_level=True)


def absolute(config: dict) -> dict:
    """The example's ../shared paths made absolute, so that the run can happen in a temporary directory."""
    text = json.dumps(config).replace('"../shared/', f'"{ROOT.parent / "shared"}/')
    return json.loads(text)


def run_example(name: str, workdir: Path, overrides: dict | None = None) -> subprocess.CompletedProcess:
    config = absolute(yaml.safe_load((ROOT / "config/examples" / f"{name}.yaml").read_text()))
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return result


@pytest.fixture(scope="module")
def myrcia(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("myrcia")
    run_example("myrcia_cmip6", workdir, {"sdm": {"baseline": "logistic"}})
    return workdir


@pytest.fixture(scope="module")
def orchids(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("orchids")
    example = yaml.safe_load((ROOT / "config/examples/orchids_global.yaml").read_text())
    scenarios = {name: path for name, path in example["climate"]["scenarios"].items() if "ssp585" in name}
    run_example("orchids_global", workdir, {"sdm": {"epochs": 4, "hidden": 64, "blocks": 2}, "iucn": {"folds": 5},
                                            "climate": {"scenarios": absolute(scenarios),
                                                        "ensembles": {"ssp585_2080": sorted(scenarios)}}})
    return workdir


def test_myrcia_reads_worldclim_current_and_cmip6_futures(myrcia):
    current = open_cube(myrcia / "results/cubes/current.zarr")
    assert list(current["variable"].values) == ["bio1", "bio7", "bio12", "bio15"]  # bio_1 and bio01 harmonised
    assert current.shape == (4, 52, 40) and current.rio.crs.to_epsg() == 4326
    future = open_cube(myrcia / "results/cubes/MIROC6_ssp585_2081-2100.zarr")
    assert list(future["variable"].values) == list(current["variable"].values)
    # MIROC6 SSP5-8.5 late century is warmer than the present on every common land cell
    warming = (future.sel(variable="bio1") - current.sel(variable="bio1")).values
    assert np.nanmin(warming) > 0
    report = json.loads((myrcia / "results/ingest_report.json").read_text())
    assert report["records_read"] == 51
    assert report["records_kept"] + sum(report["dropped"].values()) == 51
    assert report["species_kept"] == 1


def test_myrcia_has_every_future_run_without_red_list(myrcia):
    runs = sorted(p.name for p in (myrcia / "results/indicators").iterdir())
    assert len(runs) == 1 + 8 * 2
    for run in runs:
        with rasterio.open(myrcia / "results/indicators" / run / "richness.tif") as src:
            assert src.crs.to_epsg() == 4326
            values = src.read(1)
        assert set(np.unique(values[np.isfinite(values)])) <= {0.0, 1.0}  # one species: present or not
    assert not (myrcia / "results/iucn").exists()  # no Red List in this example
    assert (myrcia / "results/maps/richness_change.html").exists()


def test_orchids_every_species_has_a_status_or_a_reason(orchids):
    status = pd.read_csv(orchids / "results/iucn/status.csv")
    report = json.loads((orchids / "results/ingest_report.json").read_text())
    labels = pd.read_csv(SHARED / "iucnn_orchids/training_labels.csv")
    species_in = set(pd.read_parquet(SHARED / "iucnn_orchids/training_occ.parquet")["species"]) | set(
        pd.read_parquet(SHARED / "iucnn_orchids/prediction_occ.parquet")["species"])
    assert len(species_in) == 989
    accounted = set(status["species"]) | set(report["species_lost"])
    assert species_in <= accounted, sorted(species_in - accounted)[:10]
    assert all(report["species_lost"].values())  # each with its reason
    runs = {(s, d) for s, d in zip(status["scenario"], status["dispersal"])}
    assert len(runs) == 1 + 2 * 2 + 1 * 2  # present, 2 scenarios x 2 dispersal, 1 GCM ensemble x 2 dispersal
    # the not-evaluated species get a predicted status with probabilities
    unassessed = status[(status["scenario"] == "current") & ~status["species"].isin(labels["species"])]
    assert len(unassessed) >= 95
    assert unassessed["category"].isin(["LC", "NT", "VU", "EN", "CR"]).all()


def test_orchids_classifier_and_sdm_metrics(orchids):
    cv = json.loads((orchids / "results/iucn/cv_metrics.json").read_text())
    assert cv["n_species"] >= 880 and cv["folds"] == 5  # the test's override of the example's 10
    assert cv["binary_accuracy"] > 0.6  # far above chance (0.5) even with the test's short SDM training
    sdm = json.loads((orchids / "results/sdm/metrics.json").read_text())
    assert sdm["test"]["deep_sdm"]["mean_auc"] > 0.7
    assert sdm["test"]["baseline"]["mean_auc"] is not None
    with rasterio.open(orchids / "results/indicators/ukesm1-0-ll_ssp585_2080_none/threatened_share_change.tif") as src:
        assert src.crs.to_epsg() == 4326 and (src.height, src.width) == (360, 720)


def test_orchids_maps_for_planners(orchids):
    """The explorer covers every species, the GCM ensembles have agreement layers, TDWG regions are summarised."""
    status = pd.read_csv(orchids / "results/iucn/status.csv")
    explorer = (orchids / "results/maps/species.html").read_text()
    assert all(f'"name":"{name}"' in explorer for name in status["species"].unique())
    assert len(list((orchids / "results/maps/species").glob("*.js"))) == status["species"].nunique()
    for run in ("ssp585_2080_full", "ssp585_2080_none"):
        with rasterio.open(orchids / f"results/indicators/{run}/threatened_rise_agreement.tif") as src:
            agreement = src.read(1)
        assert set(np.unique(agreement[np.isfinite(agreement)])) <= {0.0, 0.5, 1.0}  # two GCMs
    regions = pd.read_csv(orchids / "results/indicators/regions.csv")
    assert regions["region"].nunique() > 300 and "ssp585_2080_full" in set(regions["run"])
    brazil = regions.query("region == 'Brazil Southeast' and run == 'current_none' and indicator == 'richness'")
    assert brazil["mean"].iloc[0] > 0  # an orchid hotspot
    assert (orchids / "results/indicators/protection.csv").is_file()
    if Path("/usr/bin/chromium").exists():  # the README's screenshots (SDM_SCREENSHOT_DIR=docs/screenshots)
        from test_browser import dump_dom, js_errors, screenshot

        maps = orchids / "results/maps"
        views = {"explorer": ("species.html", "species=Anacamptis%20boryi"),
                 "agreement": ("threatened_rise_agreement.html", "layer=ssp585_2080_full&z=2&lat=0&lon=-60"),
                 "regions": ("regions.html", "indicator=threatened_count_change%7Cssp585_2080_full&z=1&lat=10&lon=0")}
        for name, (page, view) in views.items():
            assert js_errors(dump_dom(orchids, maps / page, fragment=view)) == "", page
            screenshot(orchids, maps / page, f"orchids_{name}", fragment=view)


@pytest.fixture(scope="module")
def europe_window(tmp_path_factory) -> Path:
    """The European 30 arc-second configuration on a 4 x 3 degree window of the Alps (480 x 360 cells)."""
    workdir = tmp_path_factory.mktemp("europe")
    run_example("orchids_europe_1km", workdir, {"grid": {"bounds": [5.0, 44.0, 9.0, 47.0], "chunk": 256},
                                                "sdm": {"epochs": 3, "block_cells": 60},
                                                "prediction": {"chunk": 128}})
    return workdir


def test_europe_1km_window_runs_fused_with_human_footprint(europe_window):
    cube = open_cube(europe_window / "results/cubes/current.zarr")
    assert cube.shape[1:] == (360, 480) and cube.rio.crs.to_epsg() == 4326
    assert {"built2009_wgs84", "lights2009_wgs84"} <= set(cube["variable"].values)
    # the 1 km night lights keep their detail on the 1 km grid (not smoothed to the 0.5 degree climate)
    lights = cube.sel(variable="lights2009_wgs84").values
    assert np.nanstd(lights) > 0 and len(np.unique(lights[np.isfinite(lights)])) > 5
    assert not (europe_window / "results/predictions").exists()  # fused: no species cube
    features = pd.read_parquet(europe_window / "results/iucn/features_current_none.parquet")
    assert "niche_mean_lights2009_wgs84" in features.columns  # mean pressure at the species' records
    report = json.loads((europe_window / "results/ingest_report.json").read_text())
    assert report["dropped"]["outside_grid"] > 100_000  # the global records outside the window, counted
    with rasterio.open(europe_window / "results/indicators/ukesm1-0-ll_ssp585_2080_full/richness_change.tif") as src:
        assert (src.height, src.width) == (360, 480)
