"""Per-rule memory and run time from the size of the run: the measurements and the fit behind sdm/resources.py.

Data (``MEASURED``): peak RSS (MB) and wall time (s) per job from Snakemake's benchmark files (``logs/benchmarks/``)
of three examples on this 2-core machine:

- ``demo``: ``config/config.yaml`` (200 x 200 cells, 6 variables, 40 species), 2026-11-30;
- ``orchids``: ``config/examples/orchids_global.yaml`` (720 x 360 cells at 0.5 degree, 19 variables, 983 species
  of which 464 trained), 2026-12-01;
- ``europe``: ``config/examples/orchids_europe_1km.yaml`` (5,580 x 4,560 cells, 21 variables, 48 species of which
  39 trained, fused), 2026-11-29, as recorded in the README's Performance section.

For each rule the largest job of each example is kept. The model of a rule is ``intercept + slope x size`` for the
size that drives it (``SIZES``); the slope is the least-squares fit through the examples (at least 0) and the
intercept is then raised until every example's measurement is covered with a 10 % margin, so the functions never
ask for less than what was measured. ``python benchmarks/resources.py`` prints the fit; its coefficients are those
of ``sdm.resources.MODELS`` (a test checks both the coverage and that the two agree).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdm.resources import MODELS, SIZES, size_of  # noqa: E402

EXAMPLES = {
    # cells of the grid, climate variables, species in the occurrences, species trained
    "demo": {"cells": 200 * 200, "variables": 6, "species": 40, "trained": 40, "fused": False},
    "orchids": {"cells": 720 * 360, "variables": 19, "species": 983, "trained": 464, "fused": False},
    "europe": {"cells": 5580 * 4560, "variables": 21, "species": 48, "trained": 39, "fused": True},
}

MEASURED = {
    # rule: {example: (peak RSS MB, wall s)}
    "ingest_climate": {"demo": (220.8, 3.4), "orchids": (361.1, 2.9), "europe": (5800.0, 64.0)},
    "ingest_occurrences": {"demo": (239.0, 2.1), "orchids": (366.4, 4.6), "europe": (600.0, 12.0)},
    "train_sdm": {"demo": (736.6, 107.1), "orchids": (1111.6, 263.0), "europe": (5500.0, 132.0)},
    "predict": {"demo": (525.0, 5.2), "orchids": (863.6, 13.7)},
    "species_features": {"demo": (438.0, 5.1), "orchids": (1305.9, 25.3), "europe": (2700.0, 188.0)},
    "train_iucn": {"demo": (246.8, 4.6), "orchids": (357.7, 66.1), "europe": (300.0, 25.0)},
    "indicators": {"demo": (418.7, 5.3), "orchids": (748.3, 7.2), "europe": (3400.0, 120.0)},
    "maps": {"demo": (240.1, 7.4), "orchids": (318.9, 13.8), "europe": (1400.0, 22.0)},
}
MARGIN = 1.1


def fit(rule: str, quantity: int) -> tuple[float, float]:
    """(intercept, slope) of ``quantity`` (0 memory, 1 time) over the rule's size, covering every example."""
    names = list(MEASURED[rule])
    x = np.array([size_of(rule, **EXAMPLES[n]) for n in names], dtype=float)
    y = np.array([MEASURED[rule][n][quantity] for n in names], dtype=float) * MARGIN
    slope = max(0.0, float(np.polyfit(x, y, 1)[0])) if len(set(x)) > 1 else 0.0
    intercept = float(np.max(y - slope * x))
    return intercept, slope


def main() -> int:
    print(f"{'rule':20s} {'size':34s} {'memory MB = a + b x size':>34s} {'time s = a + b x size':>30s}")
    for rule in MEASURED:
        (ma, mb), (ta, tb) = fit(rule, 0), fit(rule, 1)
        print(f"{rule:20s} {SIZES[rule]:34s} {ma:12.0f} + {mb:12.4g} x size {ta:10.0f} + {tb:10.4g} x size")
        print(f"{'':20s} shipped: {MODELS[rule]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
