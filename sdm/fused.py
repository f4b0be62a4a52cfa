"""Fused mode: predictions that are never stored, for runs too big to keep a species cube on disk.

The species cube (species x cells) is the only product whose size grows with species times cells. In fused mode
it is a lazy Dask graph: each chunk's model forward is computed, reduced to per-species sums (range area,
suitability, overlap of current and future ranges) or per-cell indicators, and dropped. The reductions are the
same functions as in the materialised mode (:func:`sdm.features.range_features`,
:func:`sdm.indicators.indicator_layers`) fed with lazy instead of stored predictions, so both modes give the same
numbers. Two streaming passes are needed, not one: the indicators need each species' status, and the status needs
the per-species sums. Recomputing a forward pass costs far less than storing and re-reading the cube.
"""

from __future__ import annotations

from pathlib import Path

import torch
import xarray as xr

from sdm.climate import check_variables, open_cube
from sdm.model import load_checkpoint, resolve_device, with_coordinate_layers
from sdm.predict import chunk_cells, decode_suitability, extrapolation_layers, lazy_codes


def lazy_predictions(cube: xr.DataArray, model_path: str | Path, *, scenario: str, chunk: int | None = None,
                     batch_size: int = 65536, assemblage: str = "threshold", k: float = 5,
                     device: str = "auto", threads: int | None = None) -> xr.Dataset:
    """Decoded predictions (``suitability`` float32 in [0, 1] with NaN no data, ``presence`` bool, and the uint8
    ``suitability_code`` they decode, for reductions that need few of them) as a lazy graph,
    with the MESS layers (``mess``, ``most_dissimilar``) of the climate cube when the checkpoint holds its reference.

    Identical, value for value, to :func:`sdm.predict.open_predictions` on a store written by
    :func:`sdm.predict.predict_scenario` with the same settings (both go through the uint8 codes). ``average_k``
    first streams once over the grid for the code histograms that fix its single threshold. ``chunk`` None: the
    side of :func:`sdm.predict.chunk_cells`.
    """
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    model, checkpoint = load_checkpoint(model_path, dev)
    cube = with_coordinate_layers(cube, checkpoint["variables"])
    check_variables(cube, checkpoint["variables"], scenario)
    if chunk is None:
        chunk = chunk_cells(len(checkpoint["species"]), len(checkpoint["variables"]))
    cube = cube.chunk({"variable": -1, "y": chunk, "x": chunk})
    codes, presence = lazy_codes(cube, model, checkpoint, assemblage=assemblage, k=k, batch_size=batch_size,
                                 device=dev)
    novelty = extrapolation_layers(cube, checkpoint, scenario)
    decoded = xr.Dataset({
        "suitability": decode_suitability(codes),
        "suitability_code": codes,
        "presence": presence == 1,
        **({} if novelty is None else dict(novelty.data_vars)),
    })
    return decoded.rio.write_crs(cube.rio.crs)


def run_predictions(inputs, scenario: str, prediction: dict, device: str = "auto", threads: int | None = None):
    """(current, future) decoded predictions of one run; ``future`` is None for the present.

    ``inputs`` maps ``current`` / ``future`` to prediction stores, or, with ``prediction["fused"]``, to climate
    cubes, plus ``model`` (the checkpoint): the predictions are then the lazy graphs of :func:`lazy_predictions`.
    """
    from sdm.predict import open_predictions

    def load(path, name):
        if not prediction.get("fused"):
            return open_predictions(path)
        return lazy_predictions(open_cube(path), inputs["model"], scenario=name, chunk=prediction["chunk"],
                                batch_size=prediction["batch_size"], assemblage=prediction["assemblage"],
                                k=prediction["k"], device=device, threads=threads)

    current = load(inputs["current"], "current")
    future = None if scenario == "current" else load(inputs["future"], scenario)
    return current, future
