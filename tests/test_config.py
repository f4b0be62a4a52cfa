"""Unit tests of sdm.config: schema validation messages and the input checks a schema cannot make."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sdm.config import ConfigError, check_inputs, demo_outputs, run_names, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _real_config(tmp_path: Path) -> dict:
    """A user's own-data config whose input files exist."""
    for name in ("occ.csv", "redlist.csv", "current.tif", "ssp585.tif"):
        (tmp_path / name).write_text("x")
    return {
        "occurrences": {"path": str(tmp_path / "occ.csv")},
        "redlist": {"path": str(tmp_path / "redlist.csv")},
        "climate": {"current": str(tmp_path / "current.tif"), "scenarios": {"ssp585": [str(tmp_path / "ssp585.tif")]}},
    }


def test_default_config_is_valid(config):
    validate_config(config, SCHEMA)


def test_config_examples_are_valid():
    for path in sorted((ROOT / "config").rglob("*.yaml")):
        validate_config(yaml.safe_load(path.read_text()), SCHEMA)


def test_unknown_key_names_the_key_path(config):
    config["sdm"]["epoch"] = 10
    with pytest.raises(ConfigError, match=r"config key sdm: unknown key\(s\) \['epoch'\]") as error:
        validate_config(config, SCHEMA)
    assert "epochs" in str(error.value)  # the allowed keys are listed
    assert "\n" not in str(error.value)


def test_unknown_top_level_key(config):
    config["ocurrences"] = {"path": "x.csv"}
    with pytest.raises(ConfigError, match=r"config key \(top level\): unknown key\(s\) \['ocurrences'\]"):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    "section, value, key",
    [
        ("sdm", {"epochs": "ten"}, "sdm.epochs"),
        ("sdm", {"epochs": 0}, "sdm.epochs"),
        ("prediction", {"assemblage": "top_5"}, "prediction.assemblage"),
        ("prediction", {"precision": "float16"}, "prediction.precision"),
        ("prediction", {"workers": 0}, "prediction.workers"),
        ("prediction", {"scheduler": 8786}, "prediction.scheduler"),
        ("sdm", {"eval_cells": 10}, "sdm.eval_cells"),
        ("sdm", {"coordinates": -1}, "sdm.coordinates"),
        ("grid", {"bounds": [0, 0, 1]}, "grid.bounds"),
        ("dispersal", ["full", "partial"], "dispersal.1"),
        ("climate", {"current": 3}, "climate.current"),
        ("climate", {"scenarios": {"current": "x.tif"}}, "climate.scenarios"),  # 'current' is reserved
    ],
)
def test_wrong_value_names_the_key(config, section, value, key):
    config[section] = {**config.get(section, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=rf"^config key {key.replace('.', '[.]')}: "):
        validate_config(config, SCHEMA)


def test_missing_required_key(config):
    config["occurrences"] = {"columns": {"species": "taxon"}}
    with pytest.raises(ConfigError, match=r"^config key occurrences: 'path' is a required property"):
        validate_config(config, SCHEMA)


def test_missing_required_section(config):
    del config["climate"]
    with pytest.raises(ConfigError, match="climate"):
        validate_config(config, SCHEMA)


def test_check_inputs_names_the_key_and_the_missing_file(tmp_path):
    cfg = _real_config(tmp_path)
    check_inputs(cfg)
    (tmp_path / "occ.csv").unlink()
    with pytest.raises(ConfigError, match=rf"occurrences\.path.*{tmp_path / 'occ.csv'}"):
        check_inputs(cfg)


def test_check_inputs_missing_scenario_file(tmp_path):
    cfg = _real_config(tmp_path)
    (tmp_path / "ssp585.tif").unlink()
    with pytest.raises(ConfigError, match=r"climate\.scenarios\.ssp585.*ssp585\.tif"):
        check_inputs(cfg)


def test_check_inputs_partial_grid(tmp_path):
    cfg = _real_config(tmp_path)
    cfg["grid"] = {"crs": "EPSG:3035", "resolution": 1000, "bounds": None}
    with pytest.raises(ConfigError, match=r"grid.*bounds"):
        check_inputs(cfg)
    cfg["grid"]["bounds"] = [0, 0, 10, 10]
    check_inputs(cfg)


def test_two_different_protected_area_rasters_are_rejected(tmp_path):
    """maps.protected_areas and threats.protected_areas naming different rasters would give the gap map one and the
    features another: one line naming both keys and files; the same raster under both keys is accepted."""
    cfg = _real_config(tmp_path)
    cfg["maps"] = {"protected_areas": {"path": "wdpa_maps.tif"}}
    cfg["threats"] = {"protected_areas": {"path": "wdpa_threats.tif"}}
    with pytest.raises(ConfigError, match=r"maps\.protected_areas \(wdpa_maps\.tif\) and threats\.protected_areas "
                                          r"\(wdpa_threats\.tif\)") as error:
        validate_config(cfg, SCHEMA)
    assert "\n" not in str(error.value)
    cfg["threats"]["protected_areas"] = {"path": "./wdpa_maps.tif", "band": 2}
    with pytest.raises(ConfigError, match=r"wdpa_maps\.tif band 2"):  # another band of the same file
        validate_config(cfg, SCHEMA)
    cfg["maps"]["protected_areas"]["band"] = "2"
    validate_config(cfg, SCHEMA)  # the same raster and band under both keys
    del cfg["threats"]
    validate_config(cfg, SCHEMA)  # one key alone


def test_demo_outputs_are_exempt(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config paths are relative: run where results/demo/ does not exist
    outputs = demo_outputs(config, "results/demo")
    assert "results/demo/occurrences.csv" in outputs
    assert "results/demo/climate/ssp585_2070.tif" in outputs
    check_inputs(config, generated=outputs)  # nothing exists yet, but the demo rule makes it all
    with pytest.raises(ConfigError, match="occurrences.path"):
        check_inputs(config, generated=[])
    # paths are compared normalised
    check_inputs(config, generated=[f"./{p}" for p in outputs])


def test_run_names():
    assert run_names([], ["full", "none"]) == ["current_none"]
    assert run_names(["ssp126_2070", "ssp585_2070"], ["full", "none"]) == [
        "current_none", "ssp126_2070_full", "ssp126_2070_none", "ssp585_2070_full", "ssp585_2070_none",
    ]


def test_validation_does_not_modify_the_config(config):
    before = copy.deepcopy(config)
    validate_config(config, SCHEMA)
    assert config == before


@pytest.mark.parametrize("prediction", [{"workers": None, "scheduler": None, "chunk": None},
                                        {"workers": 2, "scheduler": "local", "precision": "bfloat16"},
                                        {"scheduler": "tcp://10.0.0.5:8786", "chunk": 512}])
def test_prediction_scheduler_and_auto_sizes_accepted(config, prediction):
    config["prediction"] = prediction
    validate_config(config, SCHEMA)


def test_resource_functions_cover_every_measured_job():
    """Per-rule mem_mb / runtime from the run's size ask for at least the measured peak of each example
    (demo, orchids, Europe), and the shipped coefficients are the fit in benchmarks/resources.py."""
    import importlib.util
    import math
    from pathlib import Path

    from sdm import resources

    spec = importlib.util.spec_from_file_location("bench_resources", Path(__file__).parents[1] / "benchmarks" /
                                                  "resources.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for rule, examples in bench.MEASURED.items():
        for example, (peak_mb, wall_s) in examples.items():
            size = bench.EXAMPLES[example]
            assert resources.mem_mb(rule, **size) >= peak_mb, (rule, example)
            assert resources.runtime(rule, **size) * 60 >= wall_s, (rule, example)
        fitted = (*bench.fit(rule, 0), *bench.fit(rule, 1))
        for shipped, value in zip(resources.MODELS[rule], fitted):
            assert math.isclose(shipped, value, rel_tol=2e-3, abs_tol=0.1), (rule, resources.MODELS[rule], fitted)


def test_memory_asked_for_is_capped_on_the_global_kilometre_grid():
    """A quarter of the global 30 arc-second grid (319 species trained) asks for at most the cap, which is above
    every job's measured peak there (3.6 GB), not the linear fits' 50-170 GB."""
    from sdm import resources

    quarter = {"cells": 43_200 * 5_400, "variables": 19, "species": 600, "trained": 319}
    asked = {rule: resources.mem_mb(rule, **quarter) for rule in resources.MODELS}
    assert max(asked.values()) == resources.MEMORY_CAP_MB == 8000
    assert min(asked[rule] for rule in ("ingest_climate", "train_sdm", "species_features", "indicators")) >= 3620
    assert resources.mem_mb("train_iucn", **quarter) < 1000  # small jobs keep their fit


def test_script_progress_and_warnings_reach_the_console_and_the_log(tmp_path, capfd):
    """workflow/scripts/common.log_to: stderr (tqdm and Dask progress bars, warnings) goes to the rule's log and to
    the console; logging to the log only."""
    import importlib.util
    import logging
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("wf_common", Path(__file__).parents[1] / "workflow" / "scripts" /
                                                  "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    saved_stderr, saved_hook = sys.stderr, sys.excepthook
    try:
        log = common.log_to(tmp_path / "rule.log")
        from tqdm import tqdm

        for _ in tqdm(range(3), desc="epochs", file=sys.stderr):
            pass
        log.info("a line for the log only")
        sys.stderr.flush()
    finally:
        sys.stderr, sys.excepthook = saved_stderr, saved_hook
        logging.basicConfig(force=True)
    console = capfd.readouterr().err
    text = (tmp_path / "rule.log").read_text()
    assert "epochs: 100%" in console and "epochs: 100%" in text
    assert "a line for the log only" in text and "a line for the log only" not in console


def test_light_per_run_jobs_get_half_the_cores():
    from sdm.resources import threads

    demo = {"cells": 200 * 200, "trained": 40}
    orchids = {"cells": 720 * 360, "trained": 464}
    assert threads("species_features", 2, **demo) == 1 and threads("indicators", 8, **demo) == 4
    assert threads("predict", 8, **orchids) == 8 and threads("train_sdm", 8, **demo) == 8


def test_a_fused_job_over_every_scenario_asks_for_the_time_of_its_passes(tmp_path):
    """Fused mode's range sums and indicators forward every scenario's climate in one job: the run time asked for
    grows with the climate cubes it reads (the fits are of jobs over one scenario and the present)."""
    from sdm import resources

    cubes = []
    for name in ("current", "ssp126", "ssp585"):
        meta = tmp_path / f"{name}.zarr" / "climate" / "zarr.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"shape": [19, 2000, 3000]}))
        cubes.append(tmp_path / f"{name}.zarr")
    one = resources.job_size(cubes[:2], 1, 1) | {"trained": 989}
    three = resources.job_size(cubes, 1, 1) | {"trained": 989}
    assert (one["climates"], three["climates"]) == (2, 3)
    assert resources.runtime("indicators", **three) == pytest.approx(2 * resources.runtime("indicators", **one), abs=1)


@pytest.mark.parametrize("key", ["maps", "threats"])
def test_a_protected_area_raster_in_percent_is_caught_when_the_run_starts(tmp_path, key):
    import rasterio
    from rasterio.transform import from_origin

    cfg = _real_config(tmp_path)
    path = tmp_path / "pa_percent.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(0, 8, 1, 1)) as dst:
        dst.write(np.full((1, 8, 8), 37.5, dtype="float32"))
    cfg[key] = {"protected_areas": {"path": str(path)}}
    with pytest.raises(ConfigError, match=rf"config key {key}\.protected_areas: .*values up to 37\.5.*divide a "
                                          r"percentage by 100"):
        check_inputs(cfg)
    cfg[key] = {"protected_areas": {"path": str(tmp_path / "absent.tif")}}
    with pytest.raises(ConfigError, match=rf"config key {key}\.protected_areas\.path: file not found"):
        check_inputs(cfg)


def test_a_protected_area_fraction_stored_with_a_scale_passes_the_start_check(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    cfg = _real_config(tmp_path)
    path = tmp_path / "pa_scaled.tif"  # uint8 0..200 with scale 0.005: fractions 0..1
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(0, 8, 1, 1)) as dst:
        dst.write(np.full((1, 8, 8), 200, dtype="uint8"))
        dst.scales, dst.offsets = (0.005,), (0.0,)
    cfg["threats"] = {"protected_areas": {"path": str(path)}}
    check_inputs(cfg)
