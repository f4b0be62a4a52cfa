"""Throughput of the predict stage against the bare model, the machine's matmul limit, MaxEnt and scikit-learn
(issue 6, item 5).

    python benchmarks/throughput.py                 # 1e6 cells x 19 variables; 100, 1,000, 10,000 species (~10 min)
    python benchmarks/throughput.py --quick         # a tiny cube: checks that every row runs (seconds)
    python benchmarks/throughput.py --cells 4e6 --species 1000 --json out.json

One generated climate cube (19 variables, smooth fields, 10 % of the cells no data) is written as Zarr like
``results/cubes/*.zarr``; for each species count a checkpoint of ``ResidualMLP(19, S, hidden=256, blocks=1)``
(19 -> 256 -> [256 -> 256 -> 256, residual] -> S: the 19 -> 256 -> 256 -> S MLP plus one 256 x 256 layer, the closest
our architecture gets: ``blocks=0`` would drop the middle layer) with spread-out, mostly low probabilities like a
trained model's. Every configuration runs in a fresh Python process, which reports its own peak RSS
(``getrusage``). Rows:

- **sdm predict stage**: ``sdm.predict.predict_scenario`` end to end: read the cube's Zarr chunks, standardise,
  forward, per-species thresholds, write suitability + presence Zarr; wall time from the call (checkpoint loading
  included) to the store on disk, after a warm-up call on a 32 x 32 window (Python's lazy imports); the fastest of
  three runs (repeated runs vary by about 15 % here).
- **bare forward**: ``model(x)`` on an in-memory float32 tensor of standardised cells (no I/O, no sigmoid, no
  output kept), on a sample of the cube's cells, in batches of 1,024, 4,096 and 16,384 cells, with torch's threads
  or with one thread per core (torch single-threaded in each): the fastest of the six counts.
- **numpy matmul limit**: the float32 GEMM rate of numpy (2048^3, all cores) divided by the model's FLOPs per
  species-cell: the rate a perfect implementation of the same FLOPs would reach.
- **elapid MaxEnt / scikit-learn RandomForest / HistGradientBoosting, per species**: each fitted on a small sample
  (300 presences, 5,000 background), then ``predict`` timed on a sample of cells; one model per species, so the rate
  per species-cell is independent of the species count and the whole-cube time is extrapolated from a few species.

Species-cells count valid cells only (no-data cells cost nothing). A grid-scaling table repeats the predict stage at
1x, 4x and 16x the cells with a fixed species count: peak RSS must stay flat.

**Fused mode** (``prediction.fused``): 1,000 species over a 1e7-cell cube (``--fused-cells``), nothing stored: the
lazy predictions of :func:`sdm.fused.lazy_predictions` reduced in one streaming pass to per-cell richness and
per-species predicted area and suitability sum (the reductions the fused workflow feeds to the features and
indicators). Its wall time is extrapolated to the published global case, 14,129 species x 1e8 land cells at 30
arc-seconds, in proportion to species-cells (an upper bound: the shared layers cost less per species with more
species).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_VARIABLES = 19
HIDDEN = 256
BLOCKS = 1
FORWARD_BATCHES = (1024, 4096, 16384)  # cells; the bare forward row takes the fastest
SEA_SHARE = 0.1  # the western 10 % of columns are no data
PREDICT_REPEATS = 3  # timed runs of the predict stage; the fastest counts (runs vary by ~15 % on this machine)
GLOBAL_CASE = (14_129, 1e8)  # published global orchid maps: species, land cells at 30 arc-seconds
TARGETS = {"vs_forward": 0.6, "vs_matmul": 0.3, "rss_ratio": 1.5, "rss_max_gib": 4.0}


# --- data ---------------------------------------------------------------------------------------------------------

def grid_shape(cells: float) -> tuple[int, int]:
    side = max(16, int(round(float(cells) ** 0.5)))
    return side, side


def valid_cells(shape) -> int:
    ny, nx = shape
    return ny * (nx - int(nx * SEA_SHARE))


def _climate_block(block_info=None):
    """Smooth, correlated climate-like fields for one (variable, y, x) block; NaN in the sea columns."""
    info = block_info[None]
    (y0, y1), (x0, x1) = info["array-location"][1:]
    ny, nx = info["shape"][1:]
    yy, xx = np.meshgrid(np.arange(y0, y1) / ny, np.arange(x0, x1) / nx, indexing="ij")
    rng = np.random.default_rng(7)
    base = np.stack([yy, xx, np.sin(6 * xx) * np.cos(4 * yy), np.cos(9 * yy + 2 * xx), (xx - 0.5) ** 2 + yy ** 3])
    mix = rng.normal(size=(N_VARIABLES, len(base)))
    scale = rng.uniform(1, 1000, N_VARIABLES)
    noise = np.random.default_rng(y0 * 100003 + x0).normal(0, 0.02, (N_VARIABLES, *yy.shape))
    out = ((np.tensordot(mix, base, axes=1) + noise) * scale[:, None, None]).astype("float32")
    out[:, :, xx[0] < SEA_SHARE] = np.nan
    return out


def make_cube(path: Path, cells: float) -> dict:
    """Write a (variable, y, x) float32 cube of about ``cells`` cells as Zarr (512 x 512 chunks), with a CRS."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    from sdm.climate import write_cube

    ny, nx = grid_shape(cells)
    data = da.map_blocks(_climate_block, dtype="float32", chunks=((N_VARIABLES,), _chunks(ny), _chunks(nx)))
    cube = xr.DataArray(
        data, dims=("variable", "y", "x"), name="climate",
        coords={"variable": [f"bio{i + 1}" for i in range(N_VARIABLES)],
                "y": 3_000_000 - 1000 * (np.arange(ny) + 0.5), "x": 4_000_000 + 1000 * (np.arange(nx) + 0.5)},
    ).rio.write_crs("EPSG:3035")
    write_cube(cube, path)
    sample = cube.isel(y=slice(0, 512), x=slice(0, 512)).values.reshape(N_VARIABLES, -1)
    return {"path": str(path), "shape": [ny, nx], "valid_cells": valid_cells((ny, nx)),
            "mean": np.nanmean(sample, axis=1).tolist(), "std": (np.nanstd(sample, axis=1) + 1e-6).tolist()}


def _chunks(n: int, size: int = 512) -> tuple[int, ...]:
    return tuple(min(size, n - i) for i in range(0, n, size))


def make_model(path: Path, n_species: int, cube: dict) -> None:
    """A checkpoint of ResidualMLP(19, S, 256, blocks=1) whose outputs look trained: mostly low probabilities,
    each species high in part of the climate space."""
    import torch

    from sdm.model import ResidualMLP, save_checkpoint

    torch.manual_seed(n_species)
    model = ResidualMLP(N_VARIABLES, n_species, hidden=HIDDEN, blocks=BLOCKS, dropout=0.0)
    with torch.no_grad():
        model.head.weight.mul_(4.0)
        model.head.bias.copy_(torch.empty(n_species).uniform_(-6.0, -1.0))
    thresholds = np.random.default_rng(n_species).uniform(0.2, 0.6, n_species)
    save_checkpoint(path, model, species=[f"species_{i:05d}" for i in range(n_species)],
                    variables=[f"bio{i + 1}" for i in range(N_VARIABLES)], mean=cube["mean"], std=cube["std"],
                    thresholds=thresholds, config={"benchmark": "throughput"})


def flops_per_species_cell(n_species: int) -> float:
    """FLOPs (2 per multiply-add of the linear layers) of one cell's forward, divided by the species."""
    macs = N_VARIABLES * HIDDEN + BLOCKS * 2 * HIDDEN * HIDDEN + HIDDEN * n_species
    return 2.0 * macs / n_species


def _sample_cells(cube: dict, n: int) -> np.ndarray:
    """(n, variables) float32 z-scores of valid cells read from the cube (first rows)."""
    from sdm.climate import open_cube

    ny, nx = cube["shape"]
    rows = min(ny, -(-n // max(1, valid_cells((1, nx)))) + 1)
    block = open_cube(cube["path"]).isel(y=slice(0, rows)).values.reshape(N_VARIABLES, -1)
    cells = block[:, np.isfinite(block).all(axis=0)][:, :n].T
    z = (cells - np.asarray(cube["mean"])) / np.asarray(cube["std"])
    return np.ascontiguousarray(z, dtype="float32")


# --- one configuration, in its own process -----------------------------------------------------------------------

def run_predict(spec: dict) -> dict:
    from sdm.climate import open_cube
    from sdm.predict import predict_scenario

    out = Path(spec["out"])
    cube = open_cube(spec["cube"]["path"])
    options = {"scenario": "benchmark", "assemblage": "threshold", "device": "cpu", "threads": spec["threads"],
               "precision": spec["precision"], "progress": False}
    if spec.get("workers"):
        options["workers"] = spec["workers"]
    # warm-up on a 32 x 32 window: Python's lazy imports (~0.5 s) are not throughput
    predict_scenario(cube.isel(y=slice(0, 32), x=slice(-32, None)), spec["model"], out, **options)
    shutil.rmtree(out)
    wall = float("inf")
    for _ in range(spec.get("repeats", PREDICT_REPEATS)):  # the best of three; the bare forward is the best of six
        start = time.perf_counter()
        predict_scenario(cube, spec["model"], out, **options)
        wall = min(wall, time.perf_counter() - start)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": wall, "species_cells": spec["cube"]["valid_cells"] * spec["species"], "store_bytes": size}


def run_forward(spec: dict) -> dict:
    """The model's best: batch sizes x (torch's own threads, or one thread per core each on its share of the
    batches), so that the reference is the fastest bare forward this machine gives, not a handicapped one."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from sdm.model import load_checkpoint

    threads = spec["threads"]
    model, _ = load_checkpoint(spec["model"], "cpu")
    x = torch.from_numpy(_sample_cells(spec["cube"], spec["cells"]))

    def share(first: int, step: int, batch: int) -> None:
        with torch.inference_mode():  # thread-local: entered in each thread
            for i in range(first * batch, len(x), step * batch):
                model(x[i:i + batch])

    best = None
    for mode in ("torch threads", "thread per core"):
        torch.set_num_threads(threads if mode == "torch threads" else 1)
        for batch in FORWARD_BATCHES:
            with torch.inference_mode():
                model(x[:batch])  # warm-up
            start = time.perf_counter()
            if mode == "torch threads":
                share(0, 1, batch)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda k: share(k, threads, batch), range(threads)))
            wall = time.perf_counter() - start
            if best is None or wall < best["seconds"]:
                best = {"seconds": wall, "species_cells": len(x) * spec["species"], "batch": batch, "mode": mode}
    return best


def run_matmul(spec: dict) -> dict:
    n = spec["size"]
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype="float32"), rng.random((n, n), dtype="float32")
    a @ b  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < spec["min_seconds"]:
        a @ b
        calls += 1
    wall = time.perf_counter() - start
    return {"seconds": wall, "flops": 2.0 * n ** 3 * calls}


def _species_sample(cube: dict, n_cells: int, seed: int):
    """Training data of one virtual species: 300 presences from a Gaussian niche, 5,000 background cells."""
    x = _sample_cells(cube, n_cells)
    rng = np.random.default_rng(seed)
    pair, centre = rng.choice(N_VARIABLES, 2, replace=False), rng.normal(0, 0.7, 2)
    suitability = np.exp(-(((x[:, pair] - centre) / 0.5) ** 2).sum(axis=1))
    presence = rng.choice(len(x), 300, p=suitability / suitability.sum())
    background = rng.choice(len(x), min(5000, len(x)), replace=False)
    train = np.r_[x[presence], x[background]]
    labels = np.r_[np.ones(len(presence)), np.zeros(len(background))]
    return x, train, labels


def run_baseline(spec: dict) -> dict:
    method, threads = spec["method"], spec["threads"]
    seconds, species_cells = 0.0, 0
    for s in range(spec["n_fit"]):
        cells, train, labels = _species_sample(spec["cube"], spec["cells"], seed=s)
        if method == "maxent":
            import elapid

            model = elapid.MaxentModel(feature_types=["linear", "quadratic", "hinge"], use_lambdas="best",
                                       n_cpus=threads)
            model.fit(train, labels)
            predict = model.predict
        elif method == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            model = RandomForestClassifier(n_estimators=spec["trees"], n_jobs=threads, random_state=s)
            model.fit(train, labels)
            predict = model.predict_proba
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            model = HistGradientBoostingClassifier(max_iter=spec["trees"], random_state=s)
            model.fit(train, labels)
            predict = model.predict_proba
        predict(cells[:100])  # warm-up
        start = time.perf_counter()
        predict(cells)
        seconds += time.perf_counter() - start
        species_cells += len(cells)
    return {"seconds": seconds, "species_cells": species_cells}


def run_fused(spec: dict) -> dict:
    """Fused reductions over the whole cube: nothing but the reductions is kept."""
    import dask

    from sdm.climate import open_cube
    from sdm.fused import lazy_predictions

    cube = open_cube(spec["cube"]["path"])
    threads = spec["threads"]
    # warm-up on a 32 x 32 window (lazy imports), as for the predict stage
    small = lazy_predictions(cube.isel(y=slice(0, 32), x=slice(-32, None)), spec["model"], scenario="benchmark",
                             assemblage="threshold", device="cpu", threads=1)
    small["presence"].sum().compute()
    start = time.perf_counter()
    predictions = lazy_predictions(cube, spec["model"], scenario="benchmark", assemblage="threshold",
                                   device="cpu", threads=1)
    presence, suitability = predictions["presence"], predictions["suitability"]
    with dask.config.set(scheduler="threads", num_workers=threads):
        richness, area, total = dask.compute(presence.sum("species").data, presence.sum(("y", "x")).data,
                                             suitability.sum(("y", "x")).data)
    wall = time.perf_counter() - start
    valid = spec["cube"]["valid_cells"]
    return {"seconds": wall, "species_cells": valid * spec["species"], "mean_richness": float(richness.sum() / valid),
            "species_present": int((area > 0).sum())}


CHILDREN = {"predict": run_predict, "fused": run_fused, "forward": run_forward, "matmul": run_matmul, "baseline": run_baseline}


def _busy_seconds() -> float:
    """CPU seconds all processes of the machine have run (from /proc/stat; 0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(spec: dict) -> dict:
    """Run one configuration; add peak RSS and how many cores other processes kept busy meanwhile."""
    busy, own, start = _busy_seconds(), _own_seconds(), time.perf_counter()
    result = CHILDREN[spec["kind"]](spec)
    wall = time.perf_counter() - start
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["other_cores"] = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own)) / wall
    return result


def child(spec: dict) -> None:
    print(json.dumps(measured(spec)))


def in_this_process(spec: dict) -> dict:
    """--quick: run in this process (seconds instead of a Python start per row); peak RSS is then cumulative."""
    return measured(spec)


def in_fresh_process(spec: dict) -> dict:
    env = dict(os.environ)
    if spec.get("threads"):  # numpy's and OpenMP's pools size themselves at import: set them before the child starts
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(spec["threads"])
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {spec['kind']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------------------------

def settings(args) -> dict:
    if args.quick:
        return {"cells": 2e4, "species": [10, 40], "grid_species": 40, "grid_cells": [5e3, 2e4, 8e4],
                "forward_sc": 2e6, "matmul_size": 512, "matmul_seconds": 0.1, "baseline_species": 1,
                "baseline_cells": 2000, "trees": 10, "fused_cells": 4e4, "fused_species": 20}
    cells = float(args.cells)
    return {"cells": cells, "species": args.species, "grid_species": args.grid_species,
            "grid_cells": [cells / 4, cells, cells * 4], "forward_sc": 2e8, "matmul_size": 2048,
            "matmul_seconds": 5.0, "baseline_species": args.baseline_species, "baseline_cells": 20_000,
            "trees": 100, "fused_cells": float(args.fused_cells), "fused_species": args.fused_species}


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def benchmark(args) -> dict:
    cfg = settings(args)
    run = in_this_process if args.quick else in_fresh_process
    threads = args.threads or len(os.sched_getaffinity(0))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sdm-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"threads": threads, "workers": args.workers, "quick": bool(args.quick),
              "load_average_start": load_average(), "rows": [],
              "grid": [], "cells": cfg["cells"]}
    started = time.perf_counter()
    try:
        cubes = {}
        for cells in sorted({cfg["cells"], *cfg["grid_cells"], *([cfg["fused_cells"]] if cfg["fused_cells"] else [])}):
            cubes[cells] = make_cube(workdir / f"cube_{int(cells)}.zarr", cells)
        cube = cubes[cfg["cells"]]
        matmul = run({"kind": "matmul", "size": cfg["matmul_size"], "min_seconds": cfg["matmul_seconds"],
                      "threads": threads})
        gemm_flops = matmul["flops"] / matmul["seconds"]
        report["matmul_gflops"] = gemm_flops / 1e9
        baselines = {}
        for method in ("maxent", "random_forest", "hist_gradient_boosting"):
            baselines[method] = run({
                "kind": "baseline", "method": method, "cube": cube, "cells": cfg["baseline_cells"],
                "n_fit": cfg["baseline_species"], "trees": cfg["trees"], "threads": threads})
        precisions = ["float32"] + (["bfloat16"] if args.bfloat16 else [])
        for n_species in cfg["species"]:
            model = workdir / f"model_{n_species}.pt"
            make_model(model, n_species, cube)
            valid = cube["valid_cells"]
            forward_cells = int(min(valid, max(4 * max(FORWARD_BATCHES), cfg["forward_sc"] / n_species)))
            forward = run({"kind": "forward", "model": str(model), "cube": cube, "cells": forward_cells,
                           "species": n_species, "threads": threads})
            forward_rate = forward["species_cells"] / forward["seconds"]
            matmul_rate = gemm_flops / flops_per_species_cell(n_species)
            rows = []
            for precision in precisions:
                done = run({"kind": "predict", "cube": cube, "model": str(model),
                            "out": str(workdir / "predictions.zarr"), "species": n_species, "threads": threads,
                            "workers": args.workers, "precision": precision})
                rows.append({"method": f"sdm predict stage, end to end ({precision})", "rate":
                             done["species_cells"] / done["seconds"], "seconds": done["seconds"],
                             "rss": done["peak_rss_bytes"], "store_bytes": done["store_bytes"],
                             "other_cores": done["other_cores"]})
            rows.append({"method": "bare forward, torch float32 (same model)", "rate": forward_rate,
                         "seconds": valid * n_species / forward_rate, "rss": forward["peak_rss_bytes"],
                         "extrapolated": True, "batch": forward["batch"], "mode": forward["mode"],
                         "other_cores": forward["other_cores"]})
            rows.append({"method": "numpy float32 matmul, same FLOPs (limit)", "rate": matmul_rate,
                         "seconds": valid * n_species / matmul_rate, "rss": matmul["peak_rss_bytes"],
                         "extrapolated": True, "other_cores": matmul["other_cores"]})
            for method, label in (("maxent", "elapid MaxEnt predict, per species"),
                                  ("random_forest", "scikit-learn RandomForest predict, per species"),
                                  ("hist_gradient_boosting", "scikit-learn HistGradientBoosting predict, per species")):
                b = baselines[method]
                rate = b["species_cells"] / b["seconds"]
                rows.append({"method": label, "rate": rate, "seconds": valid * n_species / rate,
                             "rss": b["peak_rss_bytes"], "extrapolated": True, "other_cores": b["other_cores"]})
            for row in rows:
                row.update(species=n_species, cells=valid, vs_forward=row["rate"] / forward_rate,
                           vs_matmul=row["rate"] / matmul_rate)
            report["rows"] += rows
            model.unlink()
        n_species = cfg["grid_species"]
        model = workdir / f"model_{n_species}.pt"
        make_model(model, n_species, cube)
        for cells in cfg["grid_cells"]:
            grid_cube = cubes[cells]
            done = run({"kind": "predict", "cube": grid_cube, "model": str(model),
                        "out": str(workdir / "predictions.zarr"), "species": n_species, "threads": threads,
                        "workers": args.workers, "precision": "float32"})
            report["grid"].append({"cells": grid_cube["valid_cells"], "species": n_species,
                                   "seconds": done["seconds"], "rate": done["species_cells"] / done["seconds"],
                                   "rss": done["peak_rss_bytes"], "other_cores": done["other_cores"]})
        model.unlink()
        if cfg["fused_cells"]:
            n_species = cfg["fused_species"]
            model = workdir / f"model_{n_species}.pt"
            make_model(model, n_species, cube)
            fused_cube = cubes[cfg["fused_cells"]]
            done = run({"kind": "fused", "cube": fused_cube, "model": str(model), "species": n_species,
                        "threads": threads})
            rate = done["species_cells"] / done["seconds"]
            report["fused"] = {"cells": fused_cube["valid_cells"], "species": n_species, "seconds": done["seconds"],
                               "rate": rate, "rss": done["peak_rss_bytes"], "other_cores": done["other_cores"],
                               "mean_richness": done["mean_richness"], "species_present": done["species_present"],
                               "global_species": GLOBAL_CASE[0], "global_cells": GLOBAL_CASE[1],
                               "global_seconds": GLOBAL_CASE[0] * GLOBAL_CASE[1] / rate}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report["load_average_end"] = load_average()
    report["total_seconds"] = time.perf_counter() - started
    return report


def _fmt_rate(rate: float) -> str:
    return f"{rate:.3g}"


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.1f} s"


def table(report: dict) -> str:
    mib = 2 ** 20
    lines = [
        f"threads {report['threads']}, numpy float32 GEMM {report['matmul_gflops']:.1f} GFLOP/s, "
        f"load average {report['load_average_start']} (start) {report['load_average_end']} (end), "
        f"run {report['total_seconds']:.0f} s"
        + (" (--quick: every row in one process, so peak RSS is cumulative)" if report["quick"] else ""),
        "",
        "| method | species | cells | species-cells/s | time for the cube | peak RSS (MiB) | vs bare forward | "
        "vs matmul limit | other load (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        when = _fmt_seconds(r["seconds"]) + (" (extrapolated)" if r.get("extrapolated") else "")
        lines.append(f"| {r['method']} | {r['species']:,} | {r['cells']:,} | {_fmt_rate(r['rate'])} | {when} | "
                     f"{r['rss'] / mib:,.0f} | {r['vs_forward']:.0%} | {r['vs_matmul']:.0%} | "
                     f"{r['other_cores']:.2f} |")
    lines += [""] + [f"- bare forward, {r['species']:,} species: fastest with {r['mode']}, batches of {r['batch']:,} cells"
                     for r in report["rows"] if "mode" in r]
    lines += ["", "| grid (valid cells) | species | wall | species-cells/s | peak RSS (MiB) | RSS vs smallest grid | "
              "other load (cores) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    base = report["grid"][0]["rss"] if report["grid"] else 1
    for g in report["grid"]:
        lines.append(f"| {g['cells']:,} | {g['species']:,} | {_fmt_seconds(g['seconds'])} | {_fmt_rate(g['rate'])} | "
                     f"{g['rss'] / mib:,.0f} | {g['rss'] / base:.2f}x | {g['other_cores']:.2f} |")
    fused = report.get("fused")
    if fused:
        lines += ["", "| fused mode (no species cube stored) | species | cells | wall | species-cells/s | peak RSS (MiB) | "
                  "other load (cores) |", "|---|---:|---:|---:|---:|---:|---:|",
                  f"| richness + per-species area and suitability sums, one pass | {fused['species']:,} | "
                  f"{fused['cells']:,} | {_fmt_seconds(fused['seconds'])} | {_fmt_rate(fused['rate'])} | "
                  f"{fused['rss'] / mib:,.0f} | {fused['other_cores']:.2f} |",
                  "", f"extrapolated to the published global case ({fused['global_species']:,} species x "
                  f"{fused['global_cells']:.0e} land cells at 30 arc-seconds) on this machine: "
                  f"{fused['global_seconds'] / 3600:,.1f} hours ({fused['global_seconds'] / 86400:,.1f} days) at "
                  f"{_fmt_rate(fused['rate'])} species-cells/s"]
    lines += ["", "targets (issue 6):"]
    for r in report["rows"]:
        if r["method"].startswith("sdm predict stage") and "float32" in r["method"]:
            ok = r["vs_forward"] >= TARGETS["vs_forward"] and r["vs_matmul"] >= TARGETS["vs_matmul"]
            lines.append(f"- {r['species']:,} species: predict stage {r['vs_forward']:.0%} of the bare forward "
                         f"(>= 60 %), {r['vs_matmul']:.0%} of the matmul limit (>= 30 %): {'met' if ok else 'NOT met'}")
    if report["grid"]:
        ratio = max(g["rss"] for g in report["grid"]) / base
        peak = max([g["rss"] for g in report["grid"]]
                   + [r["rss"] for r in report["rows"] if r["method"].startswith("sdm predict stage")]) / 2 ** 30
        ok = ratio <= TARGETS["rss_ratio"] and peak <= TARGETS["rss_max_gib"]
        lines.append(f"- predict stage peak RSS {ratio:.2f}x from the smallest to the largest grid (<= 1.5x), at most "
                     f"{peak:.2f} GiB (<= 4 GiB): {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=float, default=1e6, help="cells of the benchmark cube (default 1e6)")
    parser.add_argument("--species", type=int, nargs="+", default=[100, 1000, 10000], help="species counts")
    parser.add_argument("--grid-species", type=int, default=1000,
                        help="species of the grid-scaling runs (cells/4, cells, 4 x cells)")
    parser.add_argument("--baseline-species", type=int, default=3, help="species fitted per classical baseline")
    parser.add_argument("--threads", type=int, default=None, help="cores to use (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="Dask workers of the predict stage (default: "
                        "the predict stage's own default)")
    parser.add_argument("--no-bfloat16", dest="bfloat16", action="store_false",
                        help="skip the predict stage's bfloat16 rows")
    parser.add_argument("--fused-cells", type=float, default=1e7, help="cells of the fused-mode run (0: skip it)")
    parser.add_argument("--fused-species", type=int, default=1000, help="species of the fused-mode run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every row runs")
    parser.add_argument("--workdir", help="keep the generated cubes here (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    report = benchmark(args)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
