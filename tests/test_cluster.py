"""Cluster execution through Snakemake's executor plugins: the whole workflow through
snakemake-executor-plugin-cluster-generic with the local submit/status/cancel scripts of
workflow/profiles/local-cluster, those scripts on their own, and the SLURM profile parsed by a dry run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "workflow/profiles"
LOCAL_CLUSTER = PROFILES / "local-cluster"

# The smallest world on which every rule runs, Red List included (a 40 x 40 world only yields EN/CR species).
CONFIG = {
    "demo": {"rows": 40, "cols": 40, "species": 8, "seed": 5,
             "scenarios": {"warm": {"warming": 2.0, "precip_change": -0.1}}},
    "occurrences": {"path": "results/demo/occurrences.csv"},
    "redlist": {"path": "results/demo/redlist.csv"},
    "climate": {"current": "results/demo/climate/current.tif",
                "scenarios": {"warm": "results/demo/climate/warm.tif"}},
    "sdm": {"epochs": 3, "hidden": 16, "blocks": 1, "baseline": "none", "block_cells": 8},
    "dispersal": ["none"],
}
RULES = {"demo", "ingest_climate", "ingest_occurrences", "ingest_redlist", "train_sdm", "predict", "range_sums", "species_features",
         "train_iucn", "predict_status", "status_table", "indicators_current", "indicators_future", "maps"}


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SNAKEMAKE_PROFILE", "SDM_LOCAL_CLUSTER_DIR")}
    return env | extra


def snakemake(workdir: Path, profile: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    # the profile as an absolute path: its script names are resolved against it before snakemake enters --directory
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--profile", str(profile), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environment())


@pytest.mark.e2e
def test_whole_workflow_runs_through_cluster_generic_with_the_local_submit_script(tmp_path):
    started = time.monotonic()
    result = snakemake(tmp_path, LOCAL_CLUSTER)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    elapsed = time.monotonic() - started

    spool = tmp_path / ".snakemake/local-cluster"
    submitted = pd.read_csv(spool / "submitted.tsv", sep="\t", names=["jobid", "rule", "threads", "time"])
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log))
    # every job but the target rule `all` (which has nothing to run) went through submit.sh, and nothing else did
    assert finished.pop("all") == 1
    assert Counter(submitted["rule"]) == finished
    assert set(finished) >= RULES
    assert re.findall(r"^localrule (\w+):", log, flags=re.M) == ["all"]
    # snakemake followed each job by the id submit.sh printed, and status.sh saw every one succeed
    assert sorted(re.findall(r"with external jobid '([^']+)'", log)) == sorted(submitted["jobid"])
    for jobid in submitted["jobid"]:
        assert (spool / jobid / "exit").read_text().strip() == "0", (spool / jobid / "log").read_text()[-3000:]
    # the profile's set-threads reached the jobs
    assert set(submitted.loc[submitted["rule"].isin(["train_sdm", "predict"]), "threads"]) == {2}

    status = pd.read_csv(tmp_path / "results/iucn/status.csv")
    assert len(status) == status["species"].nunique() * 2  # current_none and warm_none
    assert (tmp_path / "results/maps/index.html").stat().st_size > 0
    print(f"cluster-generic run: {len(submitted)} jobs in {elapsed:.0f} s")


def run_script(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([str(LOCAL_CLUSTER / name), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, env=environment())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_for_status(jobid: str, cwd: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (status := run_script("status.sh", jobid, cwd=cwd)) == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def test_local_scheduler_scripts_report_success_failure_and_cancel(tmp_path):
    scripts = {"ok": "true", "fails": "exit 3", "sleeps": "sleep 60"}
    jobs = {}
    for name, body in scripts.items():
        jobscript = tmp_path / f"{name}.sh"
        jobscript.write_text(f'#!/bin/sh\n# properties = {{"type": "single", "rule": "{name}", "threads": 1}}\n'
                             f"{body}\n")
        jobs[name] = run_script("submit.sh", str(jobscript), cwd=tmp_path)
    assert len(set(jobs.values())) == 3 and all(re.fullmatch(r"job\.\w+", j) for j in jobs.values())
    assert wait_for_status(jobs["ok"], tmp_path) == "success"
    assert wait_for_status(jobs["fails"], tmp_path) == "failed"
    assert run_script("status.sh", jobs["sleeps"], cwd=tmp_path) == "running"
    run_script("cancel.sh", jobs["sleeps"], cwd=tmp_path)
    assert wait_for_status(jobs["sleeps"], tmp_path) == "failed"
    submitted = (tmp_path / ".snakemake/local-cluster/submitted.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in submitted] == [[jobs[n], n] for n in scripts]


def test_slurm_profile_parses_and_sizes_the_heavy_rules(tmp_path):
    # No SLURM here: a dry run checks that snakemake and the slurm plugin accept every key of the profile.
    result = snakemake(tmp_path, PROFILES / "slurm", "--dry-run", timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    jobs = {m[0]: m[1] for m in re.findall(r"^rule (\w+):\n(.*?)\n\n", log, flags=re.M | re.S)}
    # memory and run time from the rule's own resource functions (sized from the run), not the profile's default
    assert "threads: 8" in jobs["train_sdm"] and "slurm_partition=EDIT-partition" in jobs["train_sdm"]
    from sdm.resources import MIN_RUNTIME, MODELS

    memory = int(re.search(r"mem_mb=(\d+),", jobs["train_sdm"]).group(1))
    assert MODELS["train_sdm"][0] <= memory < 4000  # intercept + slope x (a small demo cube): not the default
    assert int(re.search(r"runtime=(\d+)", jobs["train_sdm"]).group(1)) >= MIN_RUNTIME
    assert "threads: 16" in jobs["predict"]
    assert "runtime=60" in jobs["demo"] and "mem_mb=4000" in jobs["demo"]
