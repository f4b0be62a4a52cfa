"""The work after the model forward, per species-cell: what stays on the host when the forward runs on a GPU.

Usage::

    python benchmarks/host_work.py --run /work/scale/f16 --blocks 6

Takes the ``--blocks`` prediction blocks with the most cells with data of a finished fused band run
(``scale_global.py``'s ``f{n}``), makes each block's codes and presence for the present and the run's first future
scenario once (the forward, not timed), then times, one thread, each step that follows the forward in the fused
passes: the accessible area (:func:`sdm.accessible.restrict_block_`), presence as booleans (the ``presence == 1`` of
:func:`sdm.fused.lazy_predictions`), the range sums of every run (:func:`sdm.features._block_sums`), presence
packed as bits for the presence stores (:func:`sdm.packed.pack_presence`) and the indicators of every run from the
packed presence (:func:`sdm.indicators._indicators_block`). Prints nanoseconds per species-cell (species x
cells of the block, both climates) of each step, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished fused band run")
    parser.add_argument("--blocks", type=int, default=6, help="blocks with the most cells with data to time")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from sdm.accessible import AccessibleArea, restrict_block_
    from sdm.climate import open_cube
    from sdm.codes import NODATA
    from sdm.features import _block_sums
    from sdm.fused import read_average_k
    from sdm.grid import cell_area_km2
    from sdm.indicators import _indicators_block, _status_arrays, read_status
    from sdm.model import load_checkpoint, with_coordinate_layers
    from sdm.packed import pack_presence
    from sdm.predict import chunk_cells, predict_block

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    results = args.run / "results"
    future = next(iter(config["climate"]["scenarios"]))
    model, checkpoint = load_checkpoint(results / "sdm" / "model.pt", torch.device("cpu"))
    area = AccessibleArea.from_checkpoint(checkpoint)
    species = list(checkpoint["species"])
    side = chunk_cells(len(species), len(checkpoint["variables"]))
    cubes = {name: with_coordinate_layers(open_cube(results / "cubes" / f"{name}.zarr"), checkpoint["variables"])
             .sel(variable=checkpoint["variables"]) for name in ("current", future)}
    codes = {name: np.full(len(species), read_average_k(results / "sdm" / "average_k" / f"{name}.json"), "uint8")
             for name in cubes}
    # the blocks with the most cells with data, from a coarse look at the first variable
    first = cubes["current"].isel(variable=0)
    ny, nx = first.sizes["y"] // side, first.sizes["x"] // side
    counts = [(int(np.isfinite(first.isel(y=slice(r * side, (r + 1) * side), x=slice(c * side, (c + 1) * side))
                               [::8, ::8].values).sum()), r, c) for r in range(ny) for c in range(nx)]
    chosen = [(r, c) for _, r, c in sorted(counts, reverse=True)[:args.blocks]]
    statuses = {run: _status_arrays(species, read_status(results / "iucn" / "status" / f"{run}.csv"))
                for run in ("current_none", f"{future}_full", f"{future}_none")}
    runs = ((("full", statuses[f"{future}_full"]), ("none", statuses[f"{future}_none"])),)
    crs = cubes["current"].rio.crs.to_wkt()
    seconds = dict.fromkeys(["accessible area", "presence as booleans", "range sums", "presence packed",
                             "indicator sums"], 0.0)
    species_cells = 0
    for r, c in chosen:
        window = dict(y=slice(r * side, (r + 1) * side), x=slice(c * side, (c + 1) * side))
        made = {}
        for name, cube in cubes.items():
            block = cube.isel(**window)
            made[name] = (predict_block(block.values, model, checkpoint["mean"], checkpoint["std"],
                                        torch.device("cpu"), threshold_codes=codes[name],
                                        precision=config.get("prediction", {}).get("precision", "float32")),
                          block["x"].values, block["y"].values)
        cell_area = cell_area_km2(cubes["current"].isel(variable=0, **window)).values
        best = dict.fromkeys(seconds, np.inf)
        for _ in range(args.repeat):
            layers = {name: (m[0].copy(), m[1], m[2]) for name, m in made.items()}
            start = time.perf_counter()
            for name, (block, xs, ys) in layers.items():
                restrict_block_(block[1], xs, ys, crs, area)
            best["accessible area"] = min(best["accessible area"], time.perf_counter() - start)
            start = time.perf_counter()
            present = {name: block[1] == 1 for name, (block, _, _) in layers.items()}
            best["presence as booleans"] = min(best["presence as booleans"], time.perf_counter() - start)
            suit = {name: block[0] for name, (block, _, _) in layers.items()}
            start = time.perf_counter()
            _block_sums(present["current"], suit["current"], cell_area, present[future], suit[future],
                        n_futures=1, dispersals=("full", "none"), has_share=False, coded=True)
            best["range sums"] = min(best["range sums"], time.perf_counter() - start)
            start = time.perf_counter()
            packed = {name: pack_presence(p) for name, p in present.items()}
            best["presence packed"] = min(best["presence packed"], time.perf_counter() - start)
            valid = (suit["current"][0] != NODATA)[None]
            start = time.perf_counter()
            _indicators_block(valid, packed["current"], packed[future], runs=runs,
                              current_status=statuses["current_none"], present=True, packed=True)
            best["indicator sums"] = min(best["indicator sums"], time.perf_counter() - start)
        for step in seconds:
            seconds[step] += best[step]
        species_cells += 2 * made["current"][0][0].size  # both climates
    print(f"{args.run}: {len(chosen)} blocks of {side} x {side} cells, {len(species)} species, "
          f"{species_cells:.3e} species-cells (both climates), one thread")
    for step, s in seconds.items():
        print(f"  {step:22} {1e9 * s / species_cells:6.2f} ns per species-cell")
    print(f"  {'in all':22} {1e9 * sum(seconds.values()) / species_cells:6.2f} ns per species-cell")


if __name__ == "__main__":
    main()
