"""The fused range pass on the model's device against the host pass of a finished band run: same numbers, and time.

Usage::

    python benchmarks/device_pass.py --run /work/scale/f16 [--device cuda] [--out /tmp/device_pass]

Reads a finished fused band run of ``scale_global.py`` (``f{n}``: its config, climate cubes, model, average-K
codes, protected-area layer, and the range tables and presence stores its ``range_sums`` job wrote on the host),
runs :func:`sdm.device_pass.device_scenario_ranges` on the same inputs with ``--device`` (default: the CPU, where
torch runs the device code), writes its presence stores under ``--out``, and prints the wall time, the largest
relative difference of every range table from the host's, whether the stores are equal, and the host job's wall
time from its benchmark file for comparison.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished fused band run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("device_pass_stores"))
    args = parser.parse_args()

    from sdm.climate import open_cube
    from sdm.device_pass import device_scenario_ranges
    from sdm.fused import read_average_k
    from sdm.grid import cell_area_km2
    from sdm.packed import open_presence_store
    from sdm.threats import PROTECTED, threat_layers

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    results = args.run / "results"
    scenarios = ["current", *config["climate"]["scenarios"]]
    cubes = {name: open_cube(results / "cubes" / f"{name}.zarr") for name in scenarios}
    grid = cubes["current"].isel(variable=0, drop=True)
    threats = config.get("threats") or {}
    protected = threat_layers({PROTECTED: threats[PROTECTED]} if threats.get(PROTECTED) else None,
                              grid).get(PROTECTED)
    codes = {}
    for name in scenarios:
        path = results / "sdm" / "average_k" / f"{name}.json"
        if path.exists():
            codes[name] = read_average_k(path)
    prediction = {"chunk": None, "batch_size": 65536, "assemblage": "average_k", "k": "auto",
                  "precision": "float32"} | (config.get("prediction") or {})
    shutil.rmtree(args.out, ignore_errors=True)
    stores = {name: args.out / f"{name}.zarr" for name in scenarios}
    dispersals = config.get("dispersal", ["full", "none"])
    start = time.perf_counter()
    tables = device_scenario_ranges(results / "sdm" / "model.pt", cubes, prediction, dispersals, cell_area_km2(grid),
                                    protected, presence_stores=stores, average_k=codes, device=args.device,
                                    threads=args.threads)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # before the comparison's reads
    host_seconds = pd.read_csv(args.run / "logs" / "benchmarks" / "range_sums" / "all.tsv", sep="\t")["s"].iloc[0]
    print(f"device pass on {args.device}: {seconds:.0f} s, peak memory {peak_gb:.2f} GB (the run's host range_sums "
          f"job: {host_seconds:.0f} s, "
          f"{len(tables['current'][dispersals[0]])} species, {', '.join(scenarios)})")
    for name in scenarios:
        host = pd.read_parquet(results / "iucn" / f"ranges_{name}.parquet")
        for dispersal, frame in host.groupby("dispersal", sort=False):
            got = tables[name][dispersal if name != "current" else dispersals[0]]
            expected = frame.drop(columns="dispersal").loc[got.index, got.columns]
            a, b = got.to_numpy(dtype="float64"), expected.to_numpy(dtype="float64")
            finite = np.isfinite(b) & (b != 0)
            worst = float(np.max(np.abs(a - b)[finite] / np.abs(b[finite]), initial=0.0))
            same_nan = bool((np.isnan(a) == np.isnan(b)).all())
            print(f"  {name} {dispersal}: largest relative difference {worst:.1e}, NaN where the host's: {same_nan}")
        host_store, device_store = (open_presence_store(results / "sdm" / "presence" / f"{name}.zarr"),
                                    open_presence_store(stores[name]))
        print(f"  {name} presence store: {'identical to' if same_store(device_store, host_store) else 'DIFFERS FROM'}"
              " the host's")


def same_store(a, b, rows: int = 512) -> bool:
    """Whether two presence stores hold the same layers, attributes and coordinates, compared a band of rows at a
    time (a whole band's stores at once would take several GB)."""
    if a.attrs != b.attrs or set(a.data_vars) != set(b.data_vars) or a.rio.crs != b.rio.crs:
        return False
    if not all(np.array_equal(a[c].values, b[c].values) for c in ("y", "x")):
        return False
    for start in range(0, a.sizes["y"], rows):
        band = slice(start, start + rows)
        for var in a.data_vars:
            if not np.array_equal(a[var].isel(y=band).values, b[var].isel(y=band).values, equal_nan=var == "mess"):
                return False
    return True


if __name__ == "__main__":
    main()
