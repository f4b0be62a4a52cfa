"""Memory (``mem_mb``) and run time (``runtime``, minutes) of each rule's job from the size of its input.

A job's size is read from its inputs when it is about to run (Snakemake evaluates resource functions that take
``input`` once the inputs exist): grid cells and climate variables from a cube's Zarr metadata, species from the
training metrics beside a model or from a prediction store's metadata. Each rule's resource is
``intercept + slope x size`` with the coefficients fitted on measured jobs of the demo, the orchids and the Europe
example (``benchmarks/resources.py``, which holds the data and the fit; the fit covers every measurement with a
10 % margin). Run time gets a further factor of :data:`TIME_FACTOR` for slower machines and shared nodes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

SIZES = {
    "ingest_climate": "climate cube, MB (cells x variables x 4)",
    "ingest_occurrences": "grid cells, millions",
    "train_sdm": "climate cube, MB (cells x variables x 4)",
    "predict": "species trained",
    "species_features": "species-cells, millions",
    "train_iucn": "species",
    "indicators": "species-cells, millions",
    "maps": "grid cells, millions",
}
"""The size that drives each rule's memory and time."""

MODELS = {
    # rule: (memory MB intercept, slope; seconds intercept, slope), from benchmarks/resources.py
    "ingest_climate": (341.1, 2.8494, 3.8, 0.03147),
    "ingest_occurrences": (399.7, 12.9639, 5.0, 0.37685),
    "train_sdm": (1176.2, 2.3676, 289.3, 0.0),
    "predict": (542.4, 0.8785, 4.9, 0.02206),
    "species_features": (1168.4, 2.2298, 5.3, 0.20388),
    "train_iucn": (325.3, 0.0992, 24.7, 0.06025),
    "indicators": (455.3, 3.3231, 5.7, 0.13294),
    "maps": (338.2, 48.7462, 15.1, 0.49753),
}
TIME_FACTOR = 3.0
"""Run time asked for = this x the fitted wall time (other CPUs, shared nodes), at least :data:`MIN_RUNTIME`."""
MIN_RUNTIME = 10
"""Minutes: the least run time a job asks for (scheduler granularity)."""


def size_of(rule: str, cells: float, variables: float, species: float, trained: float, **_) -> float:
    """The size (:data:`SIZES`) of a rule's job for a run of ``cells`` grid cells, ``variables`` climate
    variables, ``species`` species with records and ``trained`` species in the SDM."""
    cube_mb = cells * variables * 4 / 1e6
    return {
        "ingest_climate": cube_mb,
        "ingest_occurrences": cells / 1e6,
        "train_sdm": cube_mb,
        "predict": trained,
        "species_features": trained * cells / 1e6,
        "train_iucn": species,
        "indicators": trained * cells / 1e6,
        "maps": cells / 1e6,
    }[rule]


MEMORY_CAP_MB = 8000
"""Memory (MB) no job asks for more than. The linear fits come from runs whose jobs held grid-sized arrays; the
ingest, training and prediction passes now work window by window, block by block and on samples, and every job of
the global 30 arc-second bands stayed under 4 GB up to a quarter of the globe (README Performance), where the fits
would ask for up to 167 GB per job and no cluster node would take it."""


def mem_mb(rule: str, **size) -> int:
    """Memory (MB) to ask for a job of ``rule`` (see :func:`size_of` for ``size``): the linear fit, at most
    :data:`MEMORY_CAP_MB`."""
    intercept, slope, _, _ = MODELS[rule]
    return min(MEMORY_CAP_MB, int(math.ceil(intercept + slope * size_of(rule, **size))))


def runtime(rule: str, **size) -> int:
    """Run time (minutes) to ask for a job of ``rule``. A job reading more than two climate cubes (``climates``:
    fused mode's range sums or indicators of every scenario at once) forwards each of them; the fits are of jobs
    over one scenario and the present, so its time is scaled by ``climates - 1``."""
    _, _, intercept, slope = MODELS[rule]
    seconds = TIME_FACTOR * (intercept + slope * size_of(rule, **size)) * max(1.0, size.get("climates", 1.0) - 1)
    return max(MIN_RUNTIME, int(math.ceil(seconds / 60)))


LIGHT_SPECIES_CELLS = 5e7
"""A per-run job (predict, species features, indicators) over fewer species x cells than this is light: it gets
half the cores, so that two of them run side by side (the demo: 1.6e6; the orchids: 1.2e8)."""
PER_RUN_RULES = ("predict", "species_features", "indicators")


def threads(rule: str, cores: int, cells: float, trained: float, **_) -> int:
    """Threads of a job: every core for a heavy job, half of them for a light per-run job (:data:`PER_RUN_RULES`
    under :data:`LIGHT_SPECIES_CELLS`), so that light jobs run side by side."""
    if rule in PER_RUN_RULES and trained * cells < LIGHT_SPECIES_CELLS:
        return max(1, int(cores) // 2)
    return max(1, int(cores))


def _zarr_shape(store: Path, variable: str) -> list[int] | None:
    meta = Path(store) / variable / "zarr.json"
    return json.loads(meta.read_text())["shape"] if meta.is_file() else None


def job_size(paths, grid_cells: int, grid_variables: int) -> dict:
    """Cells, variables, species, trained species and climate cubes of a job from its input files: a climate cube
    (its shape; ``climates`` counts them), a prediction store (its species), a model (the ``metrics.json`` beside
    it) or an occurrence table; what the inputs do not tell comes from ``grid_cells`` / ``grid_variables`` (the
    config's grid) and is 1 species."""
    size = {"cells": float(grid_cells), "variables": float(grid_variables), "species": 1.0, "trained": 1.0,
            "climates": 0.0}
    for path in map(Path, paths):
        cube = _zarr_shape(path, "climate")
        if cube:
            size["variables"], size["cells"] = float(cube[0]), float(cube[1] * cube[2])
            size["climates"] += 1
        stored = _zarr_shape(path, "suitability")
        if stored:
            size["trained"], size["cells"] = float(stored[0]), float(stored[1] * stored[2])
        if path.name == "model.pt" and (path.parent / "metrics.json").is_file():
            size["trained"] = float(json.loads((path.parent / "metrics.json").read_text())["n_species"])
        if path.suffix == ".parquet" and path.name.startswith("features") and path.is_file():
            import pyarrow.parquet as pq

            size["species"] = float(pq.ParquetFile(path).metadata.num_rows)
    size["species"] = max(size["species"], size["trained"])
    return size
