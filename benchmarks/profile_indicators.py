"""Where the fused indicator pass spends its time: one window of a finished global band run, every step timed.

Usage::

    python benchmarks/profile_indicators.py --run /work/scale/f16                 # columns 12480-26208 (the
    python benchmarks/profile_indicators.py --run /work/scale/f16 --cols 0 43200  # tropics' land), or the band

Runs :func:`sdm.indicators.all_indicators` (the ``indicators`` job of fused mode: every run of the band's scenarios)
on the run's cubes, model, thresholds and status tables, cut to ``--cols`` (columns of the grid), writing into a
temporary folder, with Dask's synchronous scheduler (one thread: the steps' times add up to the wall time) under
:mod:`cProfile`. Prints the cumulative seconds of each step of the pass: model forward, MESS, decoding, presence,
accessible area, indicator sums, Zarr writes and GeoTIFF writes, and the wall time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import dask
import yaml

STEPS = {  # step: (module file suffix, function) whose cumulative time it is
    "model forward (predict_block)": ("sdm/predict.py", "predict_block"),
    "MESS (novelty.mess)": ("sdm/novelty.py", "mess"),
    "decode codes to probabilities": ("sdm/codes.py", "decode"),
    "presence from codes": ("sdm/assemblage.py", "_presence_block"),
    "accessible area in the prediction task": ("sdm/accessible.py", "restrict_block_"),
    "accessible area": ("sdm/accessible.py", "_restrict_block"),
    "indicator sums": ("sdm/indicators.py", "_indicators_block"),
    "GeoTIFF layers (write_layer)": ("sdm/indicators.py", "write_layer"),
}


def profile(run: Path, cols: tuple[int, int], dump: Path | None = None) -> dict:
    from sdm.fused import scenario_predictions
    from sdm.indicators import all_indicators, run_name

    config = yaml.safe_load((run / "config.yaml").read_text())
    results = run / "results"
    scenarios = ["current", *(config["climate"].get("scenarios") or {})]
    prediction = {"chunk": None, "batch_size": 65536, "assemblage": "average_k", "k": "auto",
                  **config.get("prediction", {})}
    predictions = scenario_predictions(
        results / "sdm" / "model.pt", {s: results / "cubes" / f"{s}.zarr" for s in scenarios}, prediction,
        {s: results / "sdm" / "average_k" / f"{s}.json" for s in scenarios}, "cpu", 1)
    predictions = {s: ds.isel(x=slice(*cols)) for s, ds in predictions.items()}
    current = predictions.pop("current")
    keys = ["current"] + [(s, d) for s in predictions for d in config["dispersal"]]
    names = {key: run_name(key) for key in keys}
    names["current"] = "current_none"  # the workflow's name of the present's run
    statuses = {key: results / "iucn" / "status" / f"{name}.csv" for key, name in names.items()}
    with tempfile.TemporaryDirectory() as out, dask.config.set(scheduler="synchronous"):
        dirs = {key: Path(out) / name for key, name in names.items()}
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        all_indicators(current, predictions, dirs, statuses, statuses["current"])
        profiler.disable()
        wall = time.perf_counter() - start
    if dump:
        profiler.dump_stats(dump)
    stats = pstats.Stats(profiler).stats
    seconds = {}
    for step, (suffix, name) in STEPS.items():
        seconds[step] = sum(entry[3] for (path, _, function), entry in stats.items()
                            if path.endswith(suffix) and function == name)
    return {"wall": wall, "steps": seconds,
            "cells": current.sizes["y"] * current.sizes["x"], "species": current.sizes["species"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished band run (scale_global.py's f{n})")
    parser.add_argument("--cols", type=int, nargs=2, default=(12480, 26208), help="columns of the grid to profile")
    parser.add_argument("--dump", type=Path, help="also write the whole profile here (pstats; snakeviz opens it)")
    args = parser.parse_args()
    result = profile(args.run, tuple(args.cols), args.dump)
    print(f"{args.run}: {result['cells']:.3e} cells, {result['species']} species, columns {args.cols[0]}-"
          f"{args.cols[1]}, one thread")
    for step, seconds in result["steps"].items():
        print(f"  {step:34} {seconds:7.1f} s  {100 * seconds / result['wall']:5.1f} %")
    print(f"  {'wall':34} {result['wall']:7.1f} s")


if __name__ == "__main__":
    main()
