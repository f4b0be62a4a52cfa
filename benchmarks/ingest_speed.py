"""The climate ingest of a finished band run again with this release: time, peak memory, and the cubes compared.

Usage::

    python benchmarks/ingest_speed.py --run /work/scale/f4 [--out /tmp/ingest_speed] [--scenarios current]

Reads the config of a band run of ``scale_global.py`` (``f{n}``), ingests each scenario's climate onto the same
grid with :func:`sdm.climate.write_climate_cube` (Dask's threads, as the ``ingest_climate`` job) into ``--out``,
and prints per scenario the wall time, the process's high-water mark so far, and how the new cube compares with
the band's own (the cells without data, and the largest difference relative to the variable's largest value),
read window by window. Run it with nothing else on the machine; the band's cubes are only read.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import yaml


def compare(new, old, side: int = 2048) -> tuple[int, float]:
    """(cells whose no-data differs, largest |new - old| relative to the largest |old| of its variable), window
    by window."""
    differing, scale, diff = 0, np.zeros(new.sizes["variable"]), np.zeros(new.sizes["variable"])
    for y in range(0, new.sizes["y"], side):
        for x in range(0, new.sizes["x"], side):
            window = {"y": slice(y, y + side), "x": slice(x, x + side)}
            a, b = np.asarray(new.isel(window).values), np.asarray(old.isel(window).values)
            differing += int((np.isnan(a) != np.isnan(b)).any(axis=0).sum())
            both = np.isfinite(a) & np.isfinite(b)
            if both.any():
                scale = np.fmax(scale, np.nanmax(np.abs(np.where(both, b, np.nan)), axis=(1, 2)))
                diff = np.fmax(diff, np.nanmax(np.abs(np.where(both, a - b, np.nan)), axis=(1, 2)))
    return differing, float(np.max(diff / np.where(scale > 0, scale, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a band run of scale_global.py")
    parser.add_argument("--out", type=Path, default=Path("ingest_speed_cubes"))
    parser.add_argument("--scenarios", nargs="*", help="default: every scenario of the run")
    args = parser.parse_args()

    from sdm.climate import open_cube, write_climate_cube
    from sdm.grid import make_grid

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    sources = {"current": config["climate"]["current"]} | dict(config["climate"].get("scenarios") or {})
    grid_config = config["grid"]
    grid = make_grid(grid_config["crs"], grid_config["resolution"], grid_config["bounds"])
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    print(f"grid {grid.sizes['y']} x {grid.sizes['x']} cells, chunk {grid_config['chunk']}")
    names, cubes = args.scenarios or list(sources), {}
    for name in names:  # every ingest first: the high-water mark is the ingests', not the comparison's
        start = time.perf_counter()
        cubes[name] = write_climate_cube(sources[name], name, args.out / f"{name}.zarr", grid, None,
                                         config["climate"].get("categorical"), chunk=grid_config["chunk"])
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name}: {seconds:.1f} s, peak so far {peak_mb:.0f} MB")
    for name in names:
        differing, worst = compare(cubes[name], open_cube(args.run / "results" / "cubes" / f"{name}.zarr"))
        print(f"{name} against the band's cube: {differing} cells differ in no-data, largest difference "
              f"{worst:.1e} of the variable's largest value")


if __name__ == "__main__":
    main()
