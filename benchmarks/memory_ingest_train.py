"""Peak memory of ingest_climate and of the training table at two grid sizes: roughly flat, not growing with the grid.

Builds a synthetic 19-band float32 GeoTIFF per size (EPSG:4326, a third of the cells no data, as oceans), then runs
each job in a fresh Python process and reports its peak resident memory (``resource.getrusage``, ``ru_maxrss``) and
wall time:

- ``ingest windowed``: :func:`sdm.climate.write_climate_cube` onto a grid offset by half a cell (bilinear, every
  window resampled), as the ``ingest_climate`` rule does;
- ``ingest in memory``: :func:`sdm.climate.ingest_climate` + :func:`sdm.climate.write_cube` (the rule before);
- ``table lazy``: :func:`sdm.train.training_table` from the Zarr cube opened lazily (the ``train_sdm`` rule);
- ``table loaded``: the same from the cube loaded in memory (the rule before).

    .venv/bin/python benchmarks/memory_ingest_train.py [--sizes 2e6 8e6] [--folder /tmp/sdm_memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BANDS = 19
SPECIES, RECORDS = 50, 400  # occurrences: 50 species x 400 record cells

JOB = r"""
import json, resource, sys, time
import numpy as np, pandas as pd
sys.path.insert(0, {root!r})
job, folder = {job!r}, {folder!r}
started = time.perf_counter()
if job.startswith("ingest"):
    from sdm.climate import ingest_climate, open_cube, write_climate_cube, write_cube
    from sdm.grid import make_grid
    meta = json.load(open(folder + "/source.json"))
    step = meta["step"]
    x0, y1 = meta["west"] + step / 2, meta["north"] - step / 2  # half a cell off the source: every cell resampled
    grid = make_grid("EPSG:4326", step, (x0, y1 - step * meta["height"], x0 + step * meta["width"], y1))
    if job == "ingest windowed":
        cube = write_climate_cube(folder + "/source.tif", "current", folder + "/cube.zarr", grid, chunk=512)
    else:
        write_cube(ingest_climate(folder + "/source.tif", "current", grid), folder + "/cube_memory.zarr", chunk=512)
else:
    from sdm.climate import open_cube
    from sdm.train import training_table
    cube = open_cube(folder + "/cube.zarr")
    if job == "table loaded":
        cube = cube.load()
    occurrences = pd.read_parquet(folder + "/occurrences.parquet")
    table = training_table(cube, occurrences, sorted(occurrences["species"].unique()))
    extra = {{"rows": int(len(table.values)), "background": int(len(table.background)),
             "valid_cells": int(table.valid.sum())}}
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
print(json.dumps({{"job": job, "peak_rss_mb": round(peak_mb), "seconds": round(time.perf_counter() - started, 1),
                  **(extra if job.startswith("table") else {{}})}}))
"""


def write_source(folder: Path, cells: float) -> dict:
    """A 19-band GeoTIFF of about ``cells`` cells (2:1 like a global grid), written in row bands (tiled, deflate)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    height = int(round(np.sqrt(cells / 2)))
    width = 2 * height
    step = 360.0 / width
    meta = {"height": height, "width": width, "step": step, "west": -180.0, "north": 90.0}
    profile = dict(driver="GTiff", count=BANDS, height=height, width=width, dtype="float32", crs="EPSG:4326",
                   transform=from_origin(-180, 90, step, step), nodata=np.nan, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", interleave="pixel", BIGTIFF="IF_SAFER")
    lon = -180 + step * (np.arange(width) + 0.5)
    with rasterio.open(folder / "source.tif", "w", **profile) as dst:
        for top in range(0, height, 512):
            rows = min(512, height - top)
            lat = 90 - step * (top + np.arange(rows) + 0.5)
            field = np.cos(np.radians(lat))[:, None] * np.sin(np.radians(3 * lon))[None, :]
            data = np.stack([(b + 1) * field + np.sin(np.radians(lat * (b + 2)))[:, None] for b in range(BANDS)])
            data[:, np.sin(np.radians(2 * lon))[None, :].repeat(rows, 0) + 0.4 * np.cos(np.radians(5 * lat))[:, None]
                 > 0.5] = np.nan  # oceans: about a third of the cells
            dst.write(data.astype("float32"), window=Window(0, top, width, rows))
        for b in range(BANDS):
            dst.set_band_description(b + 1, f"bio{b + 1}")
    (folder / "source.json").write_text(json.dumps(meta))
    return meta


def write_occurrences(folder: Path, meta: dict, seed: int = 0) -> None:
    """Record cells of SPECIES species, RECORDS each, spread over the grid (rows, cols of the cube's grid)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = SPECIES * RECORDS
    pd.DataFrame({"species": np.repeat([f"sp{i:03d}" for i in range(SPECIES)], RECORDS),
                  "row": rng.integers(0, meta["height"], n), "col": rng.integers(0, meta["width"], n)}
                 ).to_parquet(folder / "occurrences.parquet")


def run(job: str, folder: Path) -> dict:
    code = JOB.format(root=str(ROOT), job=job, folder=str(folder))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[2e6, 8e6], help="grid cells per run")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/sdm_memory"))
    parser.add_argument("--skip-in-memory", action="store_true", help="only the out-of-core jobs")
    args = parser.parse_args()
    results = []
    for cells in args.sizes:
        folder = args.folder / f"{int(cells)}"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        meta = write_source(folder, cells)
        write_occurrences(folder, meta)
        print(f"{meta['height']} x {meta['width']} = {meta['height'] * meta['width']:.2e} cells, {BANDS} bands "
              f"({meta['height'] * meta['width'] * BANDS * 4 / 2**30:.2f} GiB as float32); source written in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        jobs = ["ingest windowed", "table lazy"]
        if not args.skip_in_memory:
            jobs += ["ingest in memory", "table loaded"]
        for job in jobs:
            result = {"cells": meta["height"] * meta["width"], **run(job, folder)}
            results.append(result)
            print(json.dumps(result), flush=True)
    print("\ncells       job               peak RSS (MB)  wall (s)")
    for r in results:
        print(f"{r['cells']:<11.2e} {r['job']:<17} {r['peak_rss_mb']:>13} {r['seconds']:>9}")


if __name__ == "__main__":
    main()
