"""The global 30 arc-second orchid run (``config/examples/orchids_global_30s.yaml``) on latitude bands: per-job wall
time and peak memory at each size, and the scaling law per stage.

Usage::

    python benchmarks/scale_global.py --run 64 16 --root /work/scale    # run the 1/64 and 1/16 bands, then report
    python benchmarks/scale_global.py --root /work/scale                # report the runs already there

A band of 1/f of the globe is the full longitude range times 180/f degrees of latitude, from the equator south
(the orchid-rich tropics; bands of different sizes are nested). Each run is ``snakemake --cores 2`` in
``{root}/f{f}`` with the example's config and ``grid.bounds`` set to the band. The report reads Snakemake's
benchmark files (``logs/benchmarks/``: wall seconds ``s`` and peak resident memory ``max_rss``, MB, sampled) and the
run's metrics (valid cells, species trained), and for each stage the exponent b of ``time ~ size^b`` between the
two largest sizes, the size being cells for the climate stages and trained species x cells for the model stages.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sdm.fused import AVERAGE_K_CELLS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "examples" / "orchids_global_30s.yaml"
STAGES = {
    # stage: (rules whose jobs it sums, what its size is)
    "ingest_climate": (["ingest_climate"], "cells"),
    "ingest_occurrences": (["ingest_occurrences", "ingest_redlist"], "records"),
    "train_sdm": (["train_sdm"], "species x cells"),
    "average_k_threshold": (["average_k_threshold"], "species x cells"),
    "range_sums": (["range_sums"], "species x cells"),
    "species_features + status": (["species_features", "train_iucn", "predict_status", "status_table"], "species"),
    "indicators": (["indicators"], "species x cells"),
    "maps": (["maps"], "species x cells"),
}


def band_bounds(fraction: int) -> list[float]:
    return [-180.0, -180.0 / fraction, 180.0, 0.0]


def run_band(fraction: int, root: Path) -> float:
    """Run the example on the band in ``root/f{fraction}``; returns the wall time (s) of the whole workflow."""
    workdir = root / f"f{fraction}"
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CONFIG.read_text())
    config = json.loads(json.dumps(config).replace('"../shared/', f'"{ROOT.parent / "shared"}/'))
    config["grid"]["bounds"] = band_bounds(fraction)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    with open(workdir / "snakemake.out", "w") as out:
        result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
                                 "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
                                 "--cores", "2"], stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    (workdir / "wall_seconds.txt").write_text(f"{wall:.1f}\n")
    if result.returncode:
        raise SystemExit(f"the 1/{fraction} band failed: see {workdir / 'snakemake.out'}")
    return wall


PEAK = re.compile(r"^peak memory \(kernel high-water mark of the job's process\): (\d+) MB$", re.MULTILINE)
"""The last line of a job's log (``workflow/scripts/common.py``)."""


def jobs(workdir: Path) -> pd.DataFrame:
    """One row per job: rule, job, wall seconds and peak memory sampled by Snakemake (``max_rss_mb``, from the
    benchmark file), and the kernel's high-water mark of the job's process (``peak_mb``, from the last line of its
    log; NaN for logs of releases before it)."""
    rows = []
    for path in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t")
        rule = path.parent.name if path.parent.name != "benchmarks" else path.stem
        log = workdir / "logs" / path.relative_to(workdir / "logs" / "benchmarks").with_suffix(".log")
        peaks = PEAK.findall(log.read_text()) if log.is_file() else []
        rows.append({"rule": rule, "job": path.stem, "s": float(bench["s"].max()),
                     "max_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").max()),
                     "peak_mb": float(peaks[-1]) if peaks else float("nan")})
    return pd.DataFrame(rows)


def size_of(workdir: Path) -> dict:
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    xmin, ymin, xmax, ymax = config["grid"]["bounds"]
    res = config["grid"]["resolution"]
    cells = round((xmax - xmin) / res) * round((ymax - ymin) / res)
    metrics = json.loads((workdir / "results/sdm/metrics.json").read_text())
    return {"cells": cells, "species": metrics["n_species"], "species x cells": metrics["n_species"] * cells,
            "records": json.loads((workdir / "results/ingest_report.json").read_text())["records_kept"]}


def report(root: Path) -> None:
    runs = sorted((d for d in root.glob("f*") if (d / "results/sdm/metrics.json").is_file()),
                  key=lambda d: -int(d.name[1:]))
    if not runs:
        raise SystemExit(f"no finished runs under {root}")
    sizes = {d.name: size_of(d) for d in runs}
    print("run   cells        species  end to end")
    for d in runs:
        wall = (d / "wall_seconds.txt").read_text().strip() if (d / "wall_seconds.txt").is_file() else "?"
        print(f"1/{d.name[1:]:<4} {sizes[d.name]['cells']:.3e}  {sizes[d.name]['species']:7d}  {wall} s")
    print()
    table = {d.name: jobs(d) for d in runs}
    print(f"{'stage':28} " + "  ".join(f"{'1/' + d.name[1:]:>44}" for d in runs) + "   exponent b")
    for stage, (rules, unit) in STAGES.items():
        cells, times = [], []
        for d in runs:
            part = table[d.name][table[d.name]["rule"].isin(rules)]
            if part.empty:
                cells.append(f"{'-':>44}")
                times.append(None)
                continue
            exact = part["peak_mb"].max()  # NaN when no log has the line
            cells.append(f"{part['s'].sum():6.0f} s {part['max_rss_mb'].max() / 1024:5.2f} GB sampled"
                         + (f", {exact / 1024:5.2f} GB peak" if exact == exact else ""))
            times.append(part["s"].sum())
        exponent = ""
        if len(runs) >= 2 and times[-1] and times[-2]:
            grow = sizes[runs[-1].name][unit] / sizes[runs[-2].name][unit]
            if grow > 1:
                exponent = f"{math.log(times[-1] / times[-2]) / math.log(grow):.2f} ({unit})"
        print(f"{stage:28} " + "  ".join(cells) + f"   {exponent}")
    worst = {d.name: table[d.name]["max_rss_mb"].max() / 1024 for d in runs}
    print("\npeak RSS of any job, sampled: " + ", ".join(f"1/{k[1:]} {v:.2f} GB" for k, v in worst.items()))
    exact = {d.name: table[d.name]["peak_mb"].max() / 1024 for d in runs}
    print("peak RSS of any job, high-water mark: " + ", ".join(f"1/{k[1:]} {v:.2f} GB" for k, v in exact.items()))


MODEL_RULES = ("average_k_threshold", "range_sums", "indicators")
"""Rules whose jobs pass over every climate's grid (fused mode): the threshold and range-sums jobs run the model
forward; the indicator job ran it too until it read the range pass's presence stores instead, and its time is still
fitted per climate and cell."""


def forwards(workdir: Path, rule: str, job: str) -> int:
    """Model forwards over the grid in one job: a threshold job and the present's jobs one; the fused job of all
    runs (``all``) one per scenario, the present included; a future scenario's own range sums and indicators job
    (releases before the all-runs job) two, its climate and the present's."""
    if job == "all":
        return 1 + len(yaml.safe_load((workdir / "config.yaml").read_text())["climate"].get("scenarios") or {})
    return 1 if job in ("current", "current_none") or rule == "average_k_threshold" else 2


def forwarded_cells(workdir: Path, rule: str, job: str, metrics: dict) -> int:
    """Cells one forward of a job runs on: every cell with data, but for a threshold job that chose its threshold
    on a sample (the ``cells`` its file records; files of releases before the sample hold none)."""
    if rule == "average_k_threshold":
        path = workdir / "results" / "sdm" / "average_k" / f"{job}.json"
        if path.is_file():
            return json.loads(path.read_text()).get("cells", metrics["background"]["valid_cells"])
    return metrics["background"]["valid_cells"]


def extrapolate(root: Path, globe_cells: float, globe_species: float, futures: int) -> None:
    """Fit seconds per forward per cell with data = c0 + c1 x species on the two largest bands, per model rule,
    and print the whole globe's model passes for ``futures`` future scenarios (2 dispersal modes)."""
    runs = sorted((d for d in root.glob("f*") if (d / "results/sdm/metrics.json").is_file()),
                  key=lambda d: -int(d.name[1:]))[-2:]
    if len(runs) < 2:
        return
    print(f"\nextrapolation to {globe_cells:.2e} cells with data, {globe_species:.0f} species, {futures} future(s):")
    metrics = {d: json.loads((d / "results/sdm/metrics.json").read_text()) for d in runs}
    table = {d: jobs(d) for d in runs}
    total = 0.0
    for rule in MODEL_RULES:
        species, seconds = [], []  # per band: species, seconds per forward per cell forwarded
        for d in runs:
            part = table[d][table[d]["rule"] == rule]
            forwarded = sum(forwards(d, rule, job) * forwarded_cells(d, rule, job, metrics[d]) for job in part["job"])
            species.append(metrics[d]["n_species"])
            seconds.append(part["s"].sum() / forwarded)
        c1, c0 = np.polyfit(species, seconds, 1)
        # one pass over every scenario per rule (the all-runs jobs of fused mode); 1 + 2 futures with the
        # per-scenario jobs of earlier releases, which forwarded the present again for each scenario
        merged = rule == "average_k_threshold" or "all" in set(table[runs[-1]].loc[table[runs[-1]]["rule"] == rule,
                                                                                    "job"])
        n_globe = 1 + futures if merged else 1 + 2 * futures
        cells = min(globe_cells, AVERAGE_K_CELLS) if rule == "average_k_threshold" else globe_cells
        hours = n_globe * cells * (c0 + c1 * globe_species) / 3600
        total += hours
        print(f"  {rule:22} c0 {c0 * 1e6:6.2f} us, c1 {c1:.2e} s per species-cell; {n_globe} climates: {hours:5.1f} h")
    print(f"  model passes in all: {total:.1f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=int, nargs="*", default=[], help="bands to run: 1/f of the globe for each f")
    parser.add_argument("--root", type=Path, default=Path("scale_runs"))
    parser.add_argument("--globe-cells", type=float, default=2.4e8, help="cells with data on the whole globe")
    parser.add_argument("--globe-species", type=float, default=580,
                        help="species trained on the whole globe (the orchids with records in >= 5 cells)")
    parser.add_argument("--futures", type=int, default=1)
    args = parser.parse_args()
    for fraction in args.run:
        print(f"1/{fraction} band: {run_band(fraction, args.root):.0f} s", flush=True)
    report(args.root)
    extrapolate(args.root, args.globe_cells, args.globe_species, args.futures)


if __name__ == "__main__":
    main()
