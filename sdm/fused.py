"""Fused mode: predictions that are never stored, for runs too big to keep a species cube on disk.

The species cube (species x cells) is the only product whose size grows with species times cells. In fused mode
it is a lazy Dask graph: each chunk's model forward is computed, reduced to per-species sums (range area,
suitability, overlap of current and future ranges), and dropped. The reductions are the same functions as in the
materialised mode (:func:`sdm.features.range_features`, :func:`sdm.indicators.indicator_layers`) fed with lazy
instead of stored predictions, so both modes give the same numbers. Two streaming passes are needed, not one: the
indicators need each species' status, and the status needs the per-species sums. The first pass (range sums) also
stores each scenario's presence as bits (:mod:`sdm.packed`: one bit per species and cell, LZ4-compressed; about
4.4-4.7 bytes per cell with data for 151-319 species on the global bands), and the second pass (indicators) counts
from those stores, so each scenario's model forward runs once. The uint8 codes would be 8 bits per species-cell and
compress 2.7x; presence is all the indicators need.

With ``average_k``, the single threshold needs code histograms of the present's predictions: they are computed
once (:func:`average_k_threshold` on the present, written by the workflow as a small JSON file), from a seeded
uniform sample of the valid cells when the grid is large (:data:`AVERAGE_K_CELLS`), and given to every pass over
every scenario (the workflow applies the present's threshold to the futures too, as stored mode does), which would
otherwise each stream over the grid for it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from sdm.climate import check_variables, open_cube
from sdm.model import load_checkpoint, resolve_device, with_coordinate_layers
from sdm.predict import chunk_cells, decode_suitability, extrapolation_layers, lazy_codes, suitability_cube


def _prepared(cube: xr.DataArray, model_path: str | Path, scenario: str, chunk: int | None, device: str,
              threads: int | None):
    """(cube chunked for the forward, model, checkpoint, device) of a lazy pass over ``cube``."""
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    model, checkpoint = load_checkpoint(model_path, dev)
    cube = with_coordinate_layers(cube, checkpoint["variables"])
    check_variables(cube, checkpoint["variables"], scenario)
    if chunk is None:
        chunk = chunk_cells(len(checkpoint["species"]), len(checkpoint["variables"]))
    return cube.chunk({"variable": -1, "y": chunk, "x": chunk}), model, checkpoint, dev


def lazy_predictions(cube: xr.DataArray, model_path: str | Path, *, scenario: str, chunk: int | None = None,
                     batch_size: int = 65536, assemblage: str = "threshold", k: float = 5,
                     device: str = "auto", threads: int | None = None, average_k: int | None = None,
                     precision: str = "float32") -> xr.Dataset:
    """Decoded predictions (``suitability`` float32 in [0, 1] with NaN no data, ``presence`` bool, and the uint8
    ``suitability_code`` they decode, for reductions that need few of them) as a lazy graph,
    with the MESS layers (``mess``, ``most_dissimilar``) of the climate cube when the checkpoint holds its reference.

    Identical, value for value, to :func:`sdm.predict.open_predictions` on a store written by
    :func:`sdm.predict.predict_scenario` with the same settings (both go through the uint8 codes). ``average_k``
    first streams once over the grid for the code histograms that fix its single threshold, unless that threshold
    is given (``average_k``: the code of :func:`average_k_threshold`). ``chunk`` None: the side of
    :func:`sdm.predict.chunk_cells`. ``precision``: the forward's matrix products (``prediction.precision``).
    """
    cube, model, checkpoint, dev = _prepared(cube, model_path, scenario, chunk, device, threads)
    codes, presence = lazy_codes(cube, model, checkpoint, assemblage=assemblage, k=k, batch_size=batch_size,
                                 device=dev, average_k=average_k, precision=precision)
    novelty = extrapolation_layers(cube, checkpoint, scenario)
    decoded = xr.Dataset({
        "suitability": decode_suitability(codes),
        "suitability_code": codes,
        "presence": presence == 1,
        **({} if novelty is None else dict(novelty.data_vars)),
    })
    return decoded.rio.write_crs(cube.rio.crs)


AVERAGE_K_CELLS = 1_000_000
"""Valid cells on which the average-K threshold is chosen, at most: a seeded uniform sample of a larger grid. The
threshold is one of 255 codes chosen from mean set sizes, which a sample of a million cells estimates to well
under the step between two codes; a sampled threshold costs a forward of the sample instead of the whole grid."""


def average_k_threshold(cube: xr.DataArray, model_path: str | Path, *, scenario: str, k: float | str,
                        chunk: int | None = None, batch_size: int = 65536, device: str = "auto",
                        threads: int | None = None, sample_cells: int | None = AVERAGE_K_CELLS,
                        seed: int = 0, precision: str = "float32") -> dict:
    """The ``average_k`` code threshold of one scenario (:func:`sdm.assemblage.average_k_code`):
    ``{"scenario", "k", "code", "probability", "cells"}`` (``code`` 255 and ``probability`` None when no species
    is present anywhere; ``cells`` the valid cells it was chosen on), for :func:`write_average_k`.

    From one model forward over every valid cell when the grid has at most ``sample_cells`` of them (None: always),
    else over a seeded uniform sample of that many valid cells, read chunk by chunk from the cube
    (:func:`sdm.train.sample_valid`, :func:`sdm.train.cells_of`) and forwarded a batch at a time.
    """
    from sdm.assemblage import average_k_from_histograms, code_histograms, species_histograms
    from sdm.climate import valid_mask
    from sdm.codes import NODATA, decode
    from sdm.predict import predict_block
    from sdm.train import cells_of, sample_valid

    source = cube
    cube, model, checkpoint, dev = _prepared(cube, model_path, scenario, chunk, device, threads)
    # samples read in the cube's own chunks: the prediction chunks (another side) would read each stored chunk for
    # every prediction chunk it overlaps (the 1/4 global band's job: 3.6 GB, where the cube's chunks need 1.6 GB)
    inputs = with_coordinate_layers(source, checkpoint["variables"]).sel(variable=checkpoint["variables"])
    # the valid mask (a read of the cube) only where the grid could hold more valid cells than the sample
    large = sample_cells is not None and inputs.sizes["y"] * inputs.sizes["x"] > sample_cells
    valid = valid_mask(inputs) if large else None
    if valid is None or valid.sum() <= sample_cells:
        histograms = species_histograms(suitability_cube(cube, model, checkpoint, batch_size=batch_size, device=dev,
                                                         precision=precision))
    else:
        rows, cols = np.divmod(sample_valid(valid, sample_cells, seed), valid.shape[1])
        # every sampled cell in one read (each chunk of the cube once: 76 MB for 1e6 cells x 19 variables), where
        # a read per forward batch read most chunks again for every batch (16 reads of the cube)
        values = cells_of(inputs, rows, cols)
        histograms = np.zeros((len(checkpoint["species"]), 256), dtype="int64")
        for start in range(0, sample_cells, batch_size):
            block = predict_block(values[start:start + batch_size].T[:, None, :], model, checkpoint["mean"],
                                  checkpoint["std"], dev, batch_size, precision=precision)
            histograms += code_histograms(block[0])
    code = average_k_from_histograms(histograms, k, checkpoint["thresholds"])
    cells = int(histograms[0, :NODATA].sum())  # valid cells counted (the sample's size when sampled)
    probability = None if code == NODATA else float(decode(np.array([code], dtype="uint8"))[0])
    return {"scenario": scenario, "k": k, "code": int(code), "probability": probability, "cells": cells}


def write_average_k(threshold: dict, path: str | Path) -> None:
    """Write :func:`average_k_threshold`'s result as JSON."""
    Path(path).write_text(json.dumps(threshold, indent=1) + "\n")


def read_average_k(path: str | Path) -> int:
    """The code threshold of a file of :func:`write_average_k`; a one-line error naming the file otherwise."""
    try:
        code = json.loads(Path(path).read_text())["code"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an average-K threshold file ({type(error).__name__}: {error}); delete it "
                         "and rerun") from None
    if not isinstance(code, int) or not 0 <= code <= 255:
        raise ValueError(f"{path}: average-K code must be an integer in 0-255, got {code!r}; delete it and rerun")
    return code


def run_predictions(inputs, scenario: str, prediction: dict, device: str = "auto", threads: int | None = None):
    """(current, future) decoded predictions of one run; ``future`` is None for the present.

    ``inputs`` maps ``current`` / ``future`` to prediction stores, or, with ``prediction["fused"]``, to climate
    cubes, plus ``model`` (the checkpoint): the predictions are then the lazy graphs of :func:`lazy_predictions`,
    with the average-K thresholds of ``average_k_current`` / ``average_k_future`` (files of
    :func:`write_average_k`) when given.
    """
    from sdm.predict import open_predictions

    def load(role, name):
        if not prediction.get("fused"):
            return open_predictions(inputs[role])
        code = inputs.get(f"average_k_{role}")
        return scenario_predictions(inputs["model"], {name: inputs[role]}, prediction,
                                    None if code is None else {name: code}, device, threads)[name]

    current = load("current", "current")
    future = None if scenario == "current" else load("future", scenario)
    return current, future


def scenario_predictions(model: str | Path, cubes: dict, prediction: dict, thresholds: dict | None = None,
                         device: str = "auto", threads: int | None = None) -> dict[str, xr.Dataset]:
    """Lazy predictions (:func:`lazy_predictions`) of every scenario of a fused pass: ``cubes`` maps scenario ->
    climate cube (path), ``thresholds`` scenario -> average-K threshold file (:func:`write_average_k`), when the
    assemblage has them."""
    thresholds = thresholds or {}
    return {name: lazy_predictions(open_cube(path), model, scenario=name, chunk=prediction["chunk"], device=device,
                                   threads=threads, **prediction_options(prediction),
                                   average_k=read_average_k(thresholds[name]) if name in thresholds else None)
            for name, path in cubes.items()}


def prediction_options(prediction: dict) -> dict:
    """The keyword arguments of :func:`lazy_predictions` that the config's ``prediction`` section sets (but the
    chunk side): one place, so that a fused pass cannot leave a setting out."""
    return {"batch_size": prediction["batch_size"], "assemblage": prediction["assemblage"], "k": prediction["k"],
            "precision": prediction.get("precision", "float32")}
