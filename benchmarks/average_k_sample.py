"""The fused average-K threshold chosen on a sample of cells against the one chosen on every cell.

For a finished fused run whose threshold files were computed on every valid cell (``prediction.average_k_cells:
null``, or a release before the sample), recomputes each scenario's threshold on seeded uniform samples of
``--cells`` valid cells and prints the codes, their probabilities and the time of each:

    python benchmarks/average_k_sample.py --run scale_runs/f4 --cells 1000000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from sdm.climate import open_cube
from sdm.fused import average_k_threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's working directory")
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    k = config.get("prediction", {}).get("k", "auto")
    for path in sorted((args.run / "results" / "sdm" / "average_k").glob("*.json")):
        exact = json.loads(path.read_text())
        cube = open_cube(args.run / "results" / "cubes" / f"{path.stem}.zarr")
        print(f"{path.stem}: every valid cell: code {exact['code']} (p {exact['probability']:.4f})")
        for seed in args.seeds:
            start = time.perf_counter()
            sampled = average_k_threshold(cube, args.run / "results" / "sdm" / "model.pt", scenario=path.stem, k=k,
                                          sample_cells=args.cells, seed=seed, threads=2)
            print(f"  {sampled['cells']:,} cells, seed {seed}: code {sampled['code']} "
                  f"(p {sampled['probability']:.4f}), {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
