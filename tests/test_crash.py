"""Kill and resume: SIGKILL the whole Snakemake process group while a job writes, run `snakemake --cores 2` again,
and get exactly the outputs of an uninterrupted run (every GeoTIFF and Zarr array, status.csv)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "demo": {"rows": 40, "cols": 40, "species": 6, "seed": 5, "scenarios": {}},
    "occurrences": {"path": "results/demo/occurrences.csv"},
    "redlist": {"path": "results/demo/redlist.csv"},
    "climate": {"current": "results/demo/climate/current.tif", "scenarios": {}},
    "sdm": {"epochs": 4, "hidden": 32, "blocks": 1, "baseline": "none", "patience": 2},
    "prediction": {"chunk": 16},
    "dispersal": ["none"],
}


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2"]


def _run(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(workdir), capture_output=True, text=True, timeout=900)


def _run_and_kill(workdir: Path, started: str, writing: str) -> str:
    """Start the workflow, SIGKILL its whole process group once ``writing`` (a partial store) exists, or at the
    latest 2 s after ``started`` (the job's log) appears. Returns which happened."""
    process = subprocess.Popen(_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    begun = None
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            if (workdir / writing).exists():
                return "killed while writing"
            if begun is None and (workdir / started).exists():
                begun = time.time()
            if begun is not None and time.time() - begun > 2:
                return "killed while running"
            time.sleep(0.005)
        pytest.fail(f"the job did not start: {started}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _outputs(workdir: Path) -> dict:
    results = workdir / "results"
    out = {}
    for tif in sorted(results.rglob("*.tif")):
        with rasterio.open(tif) as src:
            out[str(tif.relative_to(results))] = src.read()
    for store in sorted(p for p in results.rglob("*.zarr") if p.is_dir() and "truth" not in p.parts):
        ds = xr.open_zarr(store, consolidated=False)
        for name, variable in ds.data_vars.items():
            out[f"{store.relative_to(results)}:{name}"] = variable.values
    out["status"] = pd.read_csv(results / "iucn" / "status.csv")
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key], b[key])
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return _outputs(workdir)


@pytest.mark.parametrize("job, started, writing", [
    ("predict", "logs/predict/current.log", "results/predictions/.current.zarr.partial"),
    ("ingest_climate", "logs/ingest_climate/current.log", "results/cubes/.current.zarr.partial"),
])
def test_kill_and_resume_gives_the_uninterrupted_outputs(reference, tmp_path, job, started, writing):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    _run_and_kill(tmp_path, started, writing)
    assert not (tmp_path / "results" / "iucn" / "status.csv").exists()  # it really stopped part-way
    result = _run(tmp_path)  # the plain command: stale lock and incomplete job handled by the workflow
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    _assert_same(reference, _outputs(tmp_path))
    assert not list((tmp_path / "results").rglob(".*.partial"))


def test_two_runs_side_by_side_on_read_only_inputs_one_through_remote_storage(reference, tmp_path_factory):
    """Two runs in different --directory at the same time: one reads its inputs from a read-only folder, the other
    stages every file through Snakemake's fs storage plugin (declared outputs; s3 works the same way). Both give
    the uninterrupted outputs, and nothing is written beside the read-only inputs."""
    import shutil

    source = tmp_path_factory.getbasetemp() / "inputs"
    first = tmp_path_factory.mktemp("side_a")
    (first / "config.yaml").write_text(yaml.safe_dump({**CONFIG}))
    # the demo's inputs, made once, then used read-only by both runs
    subprocess.run(_command(first) + ["--until", "demo"], check=True, capture_output=True, timeout=300)
    (first / "results" / "demo").rename(source)
    config = {k: v for k, v in CONFIG.items() if k != "demo"}
    config["occurrences"] = {"path": str(source / "occurrences.csv")}
    config["redlist"] = {"path": str(source / "redlist.csv")}
    config["climate"] = {"current": str(source / "climate" / "current.tif"), "scenarios": {}}
    workdirs = [tmp_path_factory.mktemp("side_b"), tmp_path_factory.mktemp("side_c")]
    (workdirs[0] / "config.yaml").write_text(yaml.safe_dump(config))
    # the remote run keeps everything in storage, its inputs too: it makes them with the demo rule
    (workdirs[1] / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    store = tmp_path_factory.mktemp("store")
    remote = []
    try:
        import snakemake_storage_plugin_fs  # noqa: F401

        if shutil.which("rsync"):
            remote = ["--default-storage-provider", "fs", "--default-storage-prefix", str(store)]
    except ImportError:
        pass
    for path in [source, *source.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in source.rglob("*"))
    try:
        processes = [subprocess.Popen(_command(w) + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for w, extra in zip(workdirs, ([], remote))]
        logs = [p.communicate(timeout=900)[0] for p in processes]
    finally:
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in source.rglob("*")) == before
    def without_demo(outputs):
        return {k: v for k, v in outputs.items() if not k.startswith("demo/")}

    for outputs in (_outputs(workdirs[0]), _outputs(store if remote else workdirs[1])):
        _assert_same(without_demo(reference), without_demo(outputs))
    if not remote:
        pytest.skip("remote storage not tested: snakemake-storage-plugin-fs or rsync missing (apt-get install rsync)")
    assert (store / "results" / "maps" / "index.html").is_file()
