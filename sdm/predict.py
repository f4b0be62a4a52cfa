"""Prediction over a cube with Dask: one batched model forward per chunk, never the whole grid in memory.

Stored compactly: suitability as uint8 codes on the logit scale of :mod:`sdm.codes` (0.1 logit per code, 255 = no
data; ranks kept down to p ~ 1e-7), presence as uint8 (0/1, 255 = no data). :func:`open_predictions` decodes them
back to float probabilities and booleans. Beside them, one (y, x) layer per store says where the model
extrapolates: MESS (:mod:`sdm.novelty`, float32) and its most dissimilar variable (int8), from the same climate chunks.

Speed (measured with ``benchmarks/throughput.py``; see the README's Performance section):

- the head runs as ``W @ h.T``, so each batch's output is already (species, cells), the layout of the stores: no
  (cells, species) array, no transpose, no float (species, cells) array for the whole chunk;
- the codes come from the logits directly (shift, scale, clamp, round: no sigmoid); they, the cast to uint8 and the
  per-species threshold (``predict_block``) run on one batch at a time (1,024-4,096 cells, about 4 MB of output:
  see :func:`batch_cells`), writing into the chunk's uint8 output (numpy for the uint8 steps: 3-8x faster than
  torch);
- no-data cells are skipped and the valid cells put back by runs (numpy's boolean-mask assignment on the cell axis
  cost a third of the forward pass);
- the stores use LZ4 (bit-shuffled for suitability) and ``write_empty_chunks``: zarr's default zstd and its
  empty-chunk check together cost as much as the forward pass.

Memory: a chunk's side comes from :func:`chunk_cells` (its float32 output at most ``CHUNK_BYTES``), so peak memory
depends on chunk size x species, not on the grid.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from dask.base import tokenize

from sdm.codes import ATTRS, CODES_PER_LOGIT, LOW, NODATA, TOP, decode
from sdm.model import COORDINATE_PREFIX, ResidualMLP, standardise
from sdm.progress import compute_on, shown

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
CHUNK_BYTES = 256 * 2**20  # one chunk's float32 (species, cells) output at most; see chunk_cells
# cells per forward pass. CPU: 1,024-16,384 cells run within ~10 % of each other for 100-10,000 species, 65,536 up to
# 50 % slower (the activations leave the caches); GPU: large, the outputs stay on the device until the chunk is done
CPU_BATCH = 4096
CPU_BATCH_MIN = 1024
# 1,000 species, one thread, a 238 x 238 chunk: predict_block 0.40 s with 1,024-cell batches (4 MB of output), 0.44 s
# with 4,096 (16 MB), for a 0.34-0.36 s forward; the bare forward is also fastest at 1,024 cells from 1,000 species
CPU_BATCH_BYTES = 4 * 2**20
CUDA_BATCH = 65536


def _codecs() -> dict:
    """Zarr v3 codecs of the stored cubes, timed on one 1,000-species chunk of a trained-like model's codes (ns per
    species-cell, one thread; compression ratio):

    - suitability: zarr's default (zstd level 3) 6.7 ns, half the forward pass; bit-shuffled LZ4 level 1 0.96 ns,
      2.7x (level 5: 1.07 ns, 2.7x; LZ4 without shuffle 1.1 ns, 2.0x);
    - presence (0/1 bytes): LZ4 without shuffle 0.11 ns, 92x; bit-shuffled LZ4 1.0 ns, 125x, a tenth of the
      forward pass for a store that is small either way.
    """
    from zarr.codecs import BloscCodec

    return {
        "suitability": {"compressors": [BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle", typesize=1)]},
        "presence": {"compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)]},
    }


def chunk_cells(n_species: int, n_variables: int, memory_bytes: int = CHUNK_BYTES) -> int:
    """Side (cells) of a square spatial chunk whose float32 input and (species, cells) output fit in
    ``memory_bytes`` (bytes); a multiple of 16, at least 16.

    Peak memory of the predict stage is about (Dask workers) x (a few chunks' worth), whatever the grid size.
    """
    per_cell = 4 * (int(n_species) + int(n_variables))
    side = math.isqrt(max(int(memory_bytes) // per_cell, 1))
    return max(16, side // 16 * 16)


def _even_side(ny: int, nx: int, cap: int, workers: int) -> int:
    """A chunk side <= ``cap`` that cuts the grid into equal chunks (zarr pads a partial edge chunk to full size: an
    allocation, a fill and a copy) and into at least 2 chunks per worker, so that none idles at the end."""
    side = cap
    while side > 16 and math.ceil(ny / side) * math.ceil(nx / side) < 2 * workers:
        side = max(16, side // 2)
    longest = max(ny, nx)
    return min(side, math.ceil(longest / math.ceil(longest / side)))


def batch_cells(device: torch.device | str = "cpu", batch_size: int | None = None,
                n_species: int | None = None) -> int:
    """Cells per forward pass: ``CUDA_BATCH`` on CUDA; on CPU ``CPU_BATCH``, or fewer cells (down to
    ``CPU_BATCH_MIN``) so that a batch's (species, cells) float32 output stays within ``CPU_BATCH_BYTES`` and the
    steps after the forward (uint8 codes, thresholds) run in cache. ``batch_size`` (cells) caps it."""
    if torch.device(device).type == "cuda":
        auto = CUDA_BATCH
    else:
        auto = CPU_BATCH
        if n_species:
            auto = int(min(CPU_BATCH, max(CPU_BATCH_MIN, 2 ** int(np.log2(CPU_BATCH_BYTES / (4 * n_species))))))
    return auto if batch_size is None else max(1, min(int(batch_size), auto))


def _n_species(model) -> int:
    hparams = getattr(model, "hparams", None)
    if hparams and "n_species" in hparams:
        return int(hparams["n_species"])
    return int(model.head.out_features)


def _prepare(block: np.ndarray, mean, std, device: torch.device):
    """(variable, y, x) -> float32 (valid cells, variable) z-scores on ``device``, and the valid mask (None when
    every cell is valid)."""
    n_var = block.shape[0]
    cells = np.asarray(block).reshape(n_var, -1)
    valid = np.isfinite(cells).all(axis=0)
    if valid.all():
        valid = None
    else:
        cells = cells[:, valid]
    # float64 arithmetic keeps z exact; one variable's row at a time (contiguous), then one transpose to cell-major
    # (arithmetic on the strided (cells, variables) view took 28 ms of a 624 x 624 block, this 16 ms)
    mean, std = np.asarray(mean, dtype="float64"), np.asarray(std, dtype="float64")
    by_variable = np.empty(cells.shape, dtype="float32")
    for v in range(n_var):
        by_variable[v] = standardise(cells[v], mean[v], std[v])
    z = np.ascontiguousarray(by_variable.T)
    x = torch.from_numpy(z)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x, valid


def _logits_t(model, x: torch.Tensor) -> torch.Tensor:
    """(species, cells) logits; the head as ``W @ h.T`` so the output is already species-major (no transpose)."""
    head, encoder = getattr(model, "head", None), getattr(model, "encoder", None)
    if isinstance(head, torch.nn.Linear) and encoder is not None:
        hidden = encoder(x)
        if head.bias is None:
            return torch.mm(head.weight, hidden.T)
        return torch.addmm(head.bias.unsqueeze(1), head.weight, hidden.T)
    return model(x).T


def _logits(x: torch.Tensor, model, batch: int, precision: str, as_computed: bool = False):
    """Yield (start, stop, float32 logits (species, stop - start)) over the rows of ``x``, batch by batch
    (``as_computed``: in the dtype the forward gave them, bfloat16 under ``precision="bfloat16"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    for start in range(0, len(x), batch):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits = _logits_t(model, x[start:start + batch])
        if not as_computed and logits.dtype != torch.float32:
            logits = logits.float()
        yield start, start + logits.shape[1], logits


def _expand(values: np.ndarray, valid: np.ndarray, fill) -> np.ndarray:
    """(..., valid cells) -> (..., cells), ``fill`` where not valid.

    Copies runs of valid cells as slices (no-data comes in runs: sea, outside the study area), which is ~10x faster
    than numpy's boolean-mask assignment on the last axis; a fragmented mask falls back to torch's index_copy_.
    """
    out = np.full(values.shape[:-1] + (valid.size,), fill, dtype=values.dtype)
    edges = np.flatnonzero(np.diff(np.r_[0, valid.view(np.int8), 0]))
    starts, stops = edges[::2].tolist(), edges[1::2].tolist()
    if len(starts) * 64 <= valid.size:  # runs of >= 64 cells on average
        done = 0
        for start, stop in zip(starts, stops):
            out[..., start:stop] = values[..., done:done + stop - start]
            done += stop - start
    else:
        torch.from_numpy(out).index_copy_(out.ndim - 1, torch.from_numpy(np.flatnonzero(valid)),
                                          torch.from_numpy(np.ascontiguousarray(values)))
    return out


def forward_block(block: np.ndarray, model: ResidualMLP, mean: np.ndarray, std: np.ndarray,
                  device: torch.device, batch_size: int | None = None, *, precision: str = "float32",
                  logits: bool = False) -> np.ndarray:
    """(variable, y, x) climate -> (species, y, x) float32 probabilities (``logits``: the logits), NaN where any
    variable is missing.

    ``batch_size``: cells per forward pass at most (see :func:`batch_cells`). ``precision="bfloat16"`` runs the
    matrix products under bfloat16 autocast (faster on CPUs with AVX512-BF16 / AMX and on GPUs; probabilities
    within ~1e-2). On CUDA the result leaves the device once per block.
    """
    device = torch.device(device)
    n_var, ny, nx = block.shape
    n_species = _n_species(model)
    x, valid = _prepare(block, mean, std, device)
    if device.type == "cpu" and valid is None:
        result = np.empty((n_species, ny * nx), dtype="float32")
        dense = torch.from_numpy(result)
    else:
        dense = torch.empty((n_species, len(x)), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start, stop, logit in _logits(x, model, batch_cells(device, batch_size, n_species), precision):
            dense[:, start:stop] = logit if logits else logit.sigmoid_()
        if device.type == "cpu" and valid is None:
            return result.reshape(n_species, ny, nx)
        host = dense.cpu().numpy()  # one host transfer per block
    return _expand(host, valid, np.nan).reshape(n_species, ny, nx)


def predict_block(block: np.ndarray, model: ResidualMLP, mean: np.ndarray, std: np.ndarray, device: torch.device,
                  batch_size: int | None = None, *, threshold_codes=None, precision: str = "float32") -> np.ndarray:
    """(variable, y, x) climate -> uint8 (layer, species, y, x): layer 0 the suitability codes (those of
    :func:`sdm.codes.encode_logits` on the logits), layer 1, when ``threshold_codes`` (uint8 per species, see
    :func:`sdm.codes.threshold_codes`) is given, presence (1 where code >= the species' code, else 0); 255 where any
    variable is missing.

    The fast path of the predict stage: no float (species, cells) array is built for the chunk, only one cached
    batch at a time; on CUDA the codes stay on the device and leave it once per block.
    """
    device = torch.device(device)
    n_var, ny, nx = block.shape
    n_species = _n_species(model)
    layers = 1 if threshold_codes is None else 2
    x, valid = _prepare(block, mean, std, device)
    batches = code_batches(x, model, batch_cells(device, batch_size, n_species), precision)
    with torch.inference_mode():
        if device.type == "cpu":
            # numpy for the uint8 steps: its strided float->uint8 cast and uint8 compare are 3-8x faster than torch's
            dense = np.empty((layers, n_species, len(x)), dtype="uint8")
            if threshold_codes is not None:
                thresholds = np.asarray(threshold_codes).astype("uint8")[:, None]
                presence = dense[1].view(bool)  # writes 0/1 bytes into the uint8 layer
            for start, stop, values in batches:
                codes = dense[0, :, start:stop]
                # the float32 steps of sdm.codes.encode_logits, bit for bit; with the cast 1.8 ns per species-cell
                # (1,000 species x 1,024 cells, one thread), the former sigmoid x 254 2.0 ns
                np.copyto(codes, values.numpy(), casting="unsafe")
                if threshold_codes is not None:
                    np.greater_equal(codes, thresholds, out=presence[:, start:stop])
            host = dense
        else:
            dense = torch.empty((layers, n_species, len(x)), dtype=torch.uint8, device=device)
            if threshold_codes is not None:
                thresholds = torch.as_tensor(np.asarray(threshold_codes).astype("uint8"), device=device)[:, None]
                presence = dense[1].view(torch.bool)
            for start, stop, values in batches:
                codes = dense[0, :, start:stop]
                codes.copy_(values)
                if threshold_codes is not None:
                    torch.ge(codes, thresholds, out=presence[:, start:stop])
            host = dense.cpu().numpy()  # one host transfer per block
    if valid is None:
        return host.reshape(layers, n_species, ny, nx)
    return _expand(host, valid, NODATA).reshape(layers, n_species, ny, nx)


def _code_values_(logit: torch.Tensor) -> torch.Tensor:
    """In place: float32 logits -> code values (whole numbers in 0..254, still float) of :mod:`sdm.codes`; no NaN
    here (no-data cells are never forwarded)."""
    return logit.sub_(LOW).mul_(CODES_PER_LOGIT).clamp_(0, TOP).round_()


def code_batches(x: torch.Tensor, model, batch: int, precision: str):
    """Yield (start, stop, codes (species, stop - start)) over the rows of ``x``, batch by batch: the codes of
    :mod:`sdm.codes` as whole-number floats (:func:`_code_values_` on the float32 logits), or uint8 from
    :func:`code_table`'s lookup where it applies (CUDA, bfloat16); the same codes either way."""
    table = code_table(x.device, precision)
    for start, stop, logit in _logits(x, model, batch, precision, as_computed=table is not None):
        yield start, stop, _code_values_(logit) if table is None else table_codes(logit, table)


def code_table(device: torch.device, precision: str) -> torch.Tensor | None:
    """On CUDA with bfloat16 forwards: the uint8 code of each of the 65,536 bfloat16 values (on ``device``), which
    :func:`table_codes` looks the logits up in; None elsewhere (the arithmetic of :func:`_code_values_`).

    A bfloat16 logit has 65,536 possible values, so its code (the float32 steps of :func:`_code_values_` on it) is
    one lookup: 2 bytes read per species-cell, 4 + 4 for the index and 1 written, against about 45 bytes for the
    conversion to float32 and four passes of float32 arithmetic, on a device bound by memory bandwidth. On this
    project's CPU the arithmetic is faster (0.38 ns per species-cell, one thread, against 1.1 ns for numpy's
    lookup), so the CPU keeps it. Same codes bit for bit (``tests/test_predict.py``)."""
    if torch.device(device).type != "cuda" or precision != "bfloat16":
        return None
    return _table_on(str(torch.device(device)))


@functools.lru_cache(maxsize=4)
def _table_on(device: str) -> torch.Tensor:
    return _bfloat16_code_table().to(device)  # made once per device, not per block


def _bfloat16_code_table() -> torch.Tensor:
    values = torch.from_numpy(np.arange(2**16, dtype=np.uint16).view(np.int16)).view(torch.bfloat16).float()
    return _code_values_(values.nan_to_num_(0.0)).to(torch.uint8)  # NaN: no logit is NaN (never forwarded)


def table_codes(logit: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """bfloat16 logits -> uint8 codes by :func:`code_table`'s lookup; logits of another dtype (a model whose last
    operation autocast keeps in float32) by the arithmetic of :func:`_code_values_`."""
    if logit.dtype != torch.bfloat16:
        return _code_values_(logit.float()).to(torch.uint8)
    return table[logit.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)]


# --- the Dask graph ------------------------------------------------------------------------------------------------

_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(path: str, device: str) -> ResidualMLP:
    """The checkpoint's model, loaded once per process (a Dask worker) and device, reloaded when the file changes."""
    from sdm.model import load_checkpoint

    key = (str(Path(path).resolve()), os.stat(path).st_mtime_ns, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model per process at a time: a new checkpoint replaces the old one
            _MODELS[key] = load_checkpoint(path, device)[0]
        return _MODELS[key]


def _predict_chunk(block, *, model, mean, std, device, batch_size, threshold_codes, precision, accessible=None,
                   block_info=None):
    if isinstance(model, (str, Path)):
        # shipped as a path: each worker process loads the checkpoint once (not pickled into every task)
        # (torch keeps the worker's thread settings: Dask's nanny starts workers with OMP_NUM_THREADS=1)
        device = str(_resolve(device))
        model = _cached_model(str(model), device)
    layers = predict_block(np.asarray(block), model, mean, std, torch.device(device), batch_size,
                           threshold_codes=threshold_codes, precision=precision)
    if accessible is not None:
        # presence kept to the accessible area in the task that made it: the task's own array, changed in place
        # (as a task of its own, the restriction copied every block it changed: 4.7 s of a 118 s indicator pass)
        from sdm.accessible import restrict_block_

        area, x, y, crs = accessible
        (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
        restrict_block_(layers[1], x[x0:x1], y[y0:y1], crs, area)
    return layers


def _resolve(device) -> torch.device:
    from sdm.model import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(str(device))


def _predict_layers(cube: xr.DataArray, model, checkpoint: dict, *, batch_size, device, precision,
                    threshold_codes=None, area=None) -> tuple[xr.DataArray, da.Array]:
    """The cube restricted to the model's variables, and the lazy uint8 (layer, species, y, x) of predict_block;
    with ``area`` (an :class:`sdm.accessible.AccessibleArea`; needs ``threshold_codes``), presence (layer 1) kept to
    each species' accessible area in the same task."""
    variables = checkpoint["variables"]
    cube = cube.sel(variable=variables).chunk({"variable": -1})
    species = checkpoint["species"]
    if isinstance(cube.data, da.Array):
        data = cube.data
    else:
        side = chunk_cells(len(species), len(variables))
        data = da.from_array(cube.values, chunks=(-1, side, side))
    if not isinstance(model, (str, Path)):
        device = _resolve(device)
        model_token = id(model)
    else:
        model_token = (str(model), os.stat(model).st_mtime_ns)
    mean = np.asarray(checkpoint["mean"], dtype="float64")
    std = np.asarray(checkpoint["std"], dtype="float64")
    layers = 1 if threshold_codes is None else 2
    # an explicit name: dask would otherwise hash the model's weights to name the tasks
    accessible = None
    if area is not None:
        from pyproj import CRS

        if threshold_codes is None:
            raise ValueError("the accessible area restricts presence: give threshold_codes too")
        accessible = (area, cube["x"].values, cube["y"].values, CRS.from_user_input(cube.rio.crs).to_wkt())
    name = "predict-" + tokenize(data.name, list(species), model_token, mean, std, str(device), batch_size,
                                 precision, None if threshold_codes is None else np.asarray(threshold_codes),
                                 *(accessible or ()))  # the area and the grid it restricts on (coordinates, CRS)
    out = da.map_blocks(
        _predict_chunk, data, name=name, dtype="uint8", new_axis=0,
        chunks=((layers,), (len(species),), data.chunks[1], data.chunks[2]), meta=np.empty((0, 0, 0, 0), "uint8"),
        model=model, mean=mean, std=std, device=device, batch_size=batch_size, precision=precision,
        threshold_codes=threshold_codes, accessible=accessible,
    )
    return cube, out


def _view_of_layer(blocks: list, layer: int) -> np.ndarray:
    (block,) = blocks  # the layer axis is one chunk
    return block[layer]


def _layer(layers: da.Array, layer: int) -> da.Array:
    """One layer of :func:`_predict_layers`' (layer, species, y, x) blocks, each block a view of the task's array:
    Dask's own indexing copies a selection of half a block or less (2 s of copies in a 102 s indicator pass), and
    so does ``map_blocks`` with ``drop_axis`` (it concatenates along the dropped axis)."""
    return da.blockwise(_view_of_layer, "syx", layers, "lsyx", layer, None, dtype=layers.dtype,
                        name=f"layer-{layer}-" + tokenize(layers.name), meta=np.empty((0, 0, 0), layers.dtype))


def _as_suitability(cube: xr.DataArray, data: da.Array, species) -> xr.DataArray:
    suitability = xr.DataArray(data, dims=("species", "y", "x"),
                               coords={"species": list(species), "y": cube["y"], "x": cube["x"]}, name="suitability")
    suitability.attrs = dict(ATTRS)
    return suitability.rio.write_crs(cube.rio.crs)


def suitability_cube(cube: xr.DataArray, model: ResidualMLP | str | Path, checkpoint: dict, *,
                     batch_size: int | None = None, device: torch.device | str = "cpu",
                     precision: str = "float32") -> xr.DataArray:
    """Lazy uint8 suitability (``species``, ``y``, ``x``) of every species on the cube's grid.

    The cube must hold the checkpoint's variables (any order, extra ones are ignored); it is rechunked so that each
    chunk carries all variables. ``model`` is the model, or the checkpoint's path: then each Dask worker process
    loads it once (for a distributed cluster, whose workers must see that path).
    """
    cube, layers = _predict_layers(cube, model, checkpoint, batch_size=batch_size, device=device,
                                   precision=precision)
    return _as_suitability(cube, layers[0], checkpoint["species"])


def presence_codes(checkpoint: dict, assemblage: str, average_k: int | None = None) -> np.ndarray | None:
    """The uint8 code per species at or above which it is present, where the assemblage is a comparison of each
    species' code with a known one: ``threshold`` (each species' own) and ``average_k`` with its code given (one
    for every species; code 255, no species present anywhere, is above every code a forward makes). None for the
    assemblages that need the codes of every species first (``top_k``, ``average_k`` without its code)."""
    from sdm.codes import threshold_codes

    if assemblage == "threshold":
        return threshold_codes(checkpoint["thresholds"]).astype("uint8")
    if assemblage == "average_k" and average_k is not None:
        return np.full(len(checkpoint["species"]), average_k, dtype="uint8")
    return None


def lazy_codes(cube: xr.DataArray, model: ResidualMLP | str | Path, checkpoint: dict, *, assemblage: str,
               k: float | str = 5, batch_size: int | None = None, device: torch.device | str = "cpu",
               precision: str = "float32", average_k: int | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """Lazy uint8 (suitability, presence) codes (``species``, ``y``, ``x``) of every species on the cube's grid.

    ``threshold``, and ``average_k`` with its code given (``average_k``, as fused passes have it): presence comes
    out of the same pass over each cached batch (:func:`predict_block`'s second layer; on the device under CUDA)
    and is kept to each species' accessible area, when the checkpoint has one, in the same task
    (:func:`sdm.accessible.restrict_block_`). The other assemblages apply :func:`sdm.assemblage.assemble` to the
    suitability codes (``average_k`` without its code streams over them once more for its single threshold), then
    :func:`sdm.accessible.restrict_presence`. Both ways give the same codes.
    """
    from sdm.accessible import AccessibleArea, restrict_presence
    from sdm.assemblage import assemble

    area = AccessibleArea.from_checkpoint(checkpoint)
    codes = presence_codes(checkpoint, assemblage, average_k)
    if codes is None:
        suitability = suitability_cube(cube, model, checkpoint, batch_size=batch_size, device=device,
                                       precision=precision)
        presence = assemble(suitability, assemblage, thresholds=checkpoint["thresholds"], k=k, average_k=average_k)
        return suitability, restrict_presence(presence.rio.write_crs(cube.rio.crs), area)
    cube, layers = _predict_layers(cube, model, checkpoint, batch_size=batch_size, device=device,
                                   precision=precision, threshold_codes=codes, area=area)
    suitability = _as_suitability(cube, _layer(layers, 0), checkpoint["species"])
    presence = xr.DataArray(_layer(layers, 1), dims=suitability.dims, coords=suitability.coords, name="presence")
    presence.attrs = {"long_name": f"predicted presence ({assemblage})", "units": "1 present, 0 absent, 255 no data"}
    if area is not None:  # the attributes restrict_presence gives
        presence.attrs["accessible_area_km"] = round(area.distance_km, 1)
        presence.attrs["long_name"] += f", within {area.distance_km:.0f} km of the species' records"
    return suitability, presence.rio.write_crs(cube.rio.crs)


def extrapolation_layers(cube: xr.DataArray, checkpoint: dict, scenario: str = "") -> xr.Dataset | None:
    """MESS (float32 ``mess``, percent, < 0 = outside the training climate) and the most dissimilar variable (int8
    ``most_dissimilar``) of the cube's cells against the checkpoint's ``reference_quantiles``: lazy (y, x) layers
    chunked like the cube, see :func:`sdm.novelty.novelty_layers`.

    Location inputs (``coord_...``) are left out: they are not climate. The checkpoint's ``categories`` ({variable:
    class codes seen in training}, absent when none was declared) are scored by class, not as numbers
    (:func:`sdm.novelty.mess`). None, and a warning in the log, when the checkpoint has no reference quantiles
    (trained before they were stored): no layer rather than a made-up one.
    """
    from sdm.novelty import novelty_layers

    reference = checkpoint.get("reference_quantiles")
    if reference is None:
        log.warning("%s: no MESS extrapolation layer: the checkpoint has no reference_quantiles (trained before "
                    "they were stored); retrain the model to get one", scenario or "cube")
        return None
    keep = [i for i, v in enumerate(checkpoint["variables"]) if not str(v).startswith(COORDINATE_PREFIX)]
    if not keep:
        log.warning("%s: no MESS extrapolation layer: the model has no climate variable", scenario or "cube")
        return None
    variables = [checkpoint["variables"][i] for i in keep]
    return novelty_layers(cube, np.asarray(reference, dtype="float64")[keep], variables,
                          checkpoint.get("categories"))


def _write(ds: xr.Dataset, path: str | Path, mode: str = "w", compute: bool = True):
    """sdm.storage.write_zarr's conventions (Zarr v3, no consolidated metadata, variable-length string labels) with
    the fast codecs of :func:`_codecs` for the uint8 cubes; with ``compute=False``, the delayed write."""
    from sdm.storage import zarr_ready

    ds = zarr_ready(ds)
    encoding = {k: v for k, v in _codecs().items() if k in ds.data_vars}
    # write_empty_chunks: otherwise zarr compares every chunk with the fill value before writing it (np.array_equal
    # over the whole chunk, 4 ns per value: a third of the predict stage); an all-no-data chunk compresses to ~nothing
    return ds.to_zarr(path, mode=mode, consolidated=False, encoding=encoding, write_empty_chunks=True,
                      compute=compute)


def write_predictions(predictions: xr.Dataset, path: str | Path, progress: bool = True, workers: int = 1,
                      client=None, mode: str = "w", label: str = "predict") -> None:
    """Write suitability / presence (uint8) as Zarr v3, computing chunk by chunk with ``workers`` threads, or on a
    Dask distributed ``client`` when given; with ``progress``, a bar named ``label`` on stderr (either way)."""
    if client is not None:
        compute_on(client, _write(predictions, path, mode=mode, compute=False), label, enabled=progress)
        return
    with dask.config.set(scheduler="threads", num_workers=workers), shown(label, enabled=progress):
        _write(predictions, path, mode=mode)


def decode_suitability(codes: xr.DataArray) -> xr.DataArray:
    """uint8 suitability codes -> float32 probabilities in (0, 1), NaN for no data (lazy when ``codes`` is); see
    :func:`sdm.codes.decode`.

    A table lookup: one pass over the codes (2 ns per value here) where ``where``, the division and the cast took
    three (3.8 ns); the reductions of the fused mode and of the features read every code of every species.
    """
    probability = xr.apply_ufunc(decode, codes, dask="parallelized", output_dtypes=["float32"])
    probability.attrs = {"long_name": "habitat suitability", "units": "probability"}
    return probability


def open_predictions(path: str | Path, decode: bool = True) -> xr.Dataset:
    """Open a predictions store; with ``decode``, suitability as float32 in [0, 1] (NaN = no data; the stored codes
    beside it as ``suitability_code``) and presence as bool (False where no data); the (y, x) ``mess`` and ``most_dissimilar`` layers, when stored, as they are."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions not found: {path}")
    ds = xr.open_zarr(path, consolidated=False, decode_coords="all")
    if not decode:
        return ds
    decoded = xr.Dataset({
        "suitability": decode_suitability(ds["suitability"]),
        "suitability_code": ds["suitability"],
        "presence": ds["presence"] == 1,
        **{name: ds[name] for name in ("mess", "most_dissimilar") if name in ds},
    })
    return decoded.rio.write_crs(ds.rio.crs)


@contextlib.contextmanager
def _distributed(scheduler: str | None, workers: int, threads: int):
    """A Dask distributed client for ``scheduler`` (an address, or ``local`` for a LocalCluster of ``workers``
    processes sharing ``threads`` cores on this machine), or None for the threaded scheduler."""
    if not scheduler:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with LocalCluster(n_workers=workers, threads_per_worker=max(1, threads // workers),
                          dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def shared_average_k(present, k: float | str, thresholds) -> int:
    """The ``average_k`` code threshold chosen on the present's stored suitability (``present``: the uint8 codes,
    or the path of the present's prediction store), which every scenario applies: chosen again on a future's
    suitability, it would follow that future's mean set size, and a cell of the same suitability would be present
    in one scenario and absent in the other."""
    from sdm.assemblage import average_k_code

    if not isinstance(present, xr.DataArray):
        store = xr.open_zarr(present, consolidated=False)
        code = store["presence"].attrs.get("average_k_code") if "presence" in store else None
        if code is not None:  # written by predict_scenario with the present's store
            return int(code)
        present = store["suitability"]
    return int(average_k_code(present, k, thresholds))


def predict_scenario(cube: xr.DataArray, model_path, out_path, *, scenario: str, chunk: int | None = None,
                     batch_size: int | None = None, assemblage: str = "threshold", k: float = 5,
                     workers: int | None = None,
                     threads: int | None = None, device: str = "auto", precision: str = "float32",
                     memory_bytes: int = CHUNK_BYTES, scheduler: str | None = None,
                     progress: bool = True, average_k_from: str | os.PathLike | None = None) -> xr.Dataset:
    """Predict one scenario's cube with a checkpoint and write suitability + presence (Zarr), and the MESS
    extrapolation layers ``mess`` / ``most_dissimilar`` (y, x) of :func:`extrapolation_layers` when the checkpoint
    holds the training climate's quantiles (computed from the same chunks of the cube as the predictions).

    - ``average_k_from``: with the ``average_k`` assemblage, the prediction store of the present whose threshold
      every scenario uses (:func:`shared_average_k`): a cell of equal suitability is present in every scenario or
      in none, as with per-species thresholds. None (the present itself): chosen on this scenario's suitability.

    - ``chunk``: cells per side of a prediction chunk, at most; the side is also capped by :func:`chunk_cells` so
      that a chunk's float32 output stays under ``memory_bytes`` (bytes): peak memory does not grow with the grid.
      None (the default): that cap, evened out over the grid, and at least 2 chunks per worker.
    - ``batch_size``: cells per forward pass, at most (see :func:`batch_cells`).
    - ``threads``: CPU cores to use (default: all this process may run on); ``workers``: Dask workers (default:
      one per core). Torch gets ``threads // workers`` threads per worker so the machine is not oversubscribed; the
      torch thread count is restored afterwards. Peak memory is about ``workers`` x 2.5 x a chunk's uint8 output.
    - ``precision``: ``float32`` or ``bfloat16`` (autocast of the matrix products).
    - ``scheduler``: None for Dask's threaded scheduler; ``local`` for a LocalCluster of ``workers`` processes; or
      a Dask distributed scheduler address (``tcp://host:8786``). On a cluster the model is not shipped in the
      graph: each worker process loads ``model_path`` (which must be readable there) once.
    """
    from sdm.accessible import AccessibleArea, restrict_presence
    from sdm.assemblage import assemble
    from sdm.climate import check_variables
    from sdm.model import load_checkpoint, with_coordinate_layers
    from sdm.storage import replacing

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    threads = threads or len(os.sched_getaffinity(0))
    # one Dask worker per core, one torch thread each: everything after the matrix products (uint8 steps, LZ4,
    # writes) runs in parallel too; measured 1.3x faster than one worker with all cores in torch
    workers = workers or threads
    dev = _resolve(device)
    model, checkpoint = load_checkpoint(model_path, dev)
    cube = with_coordinate_layers(cube, checkpoint["variables"])  # a model trained with sdm.coordinates
    check_variables(cube, checkpoint["variables"], scenario)
    n_species, n_variables = len(checkpoint["species"]), len(checkpoint["variables"])
    side = chunk_cells(n_species, n_variables, memory_bytes)
    if chunk is None:
        side = _even_side(cube.sizes["y"], cube.sizes["x"], side, workers)
    elif chunk < side:
        side = int(chunk)
    elif chunk > side:
        log.info("prediction chunk %d capped to %d cells per side (%d species, %d MiB per chunk)", chunk, side,
                 n_species, memory_bytes // 2**20)
    cube = cube.chunk({"variable": -1, "y": side, "x": side})
    attrs = {"scenario": scenario, "assemblage": assemblage, "model": str(model_path)}
    novelty = extrapolation_layers(cube, checkpoint, scenario)
    novelty = {} if novelty is None else dict(novelty.data_vars)

    previous_threads = torch.get_num_threads()
    with _distributed(scheduler, workers, threads) as client:
        try:
            if client is None:
                torch.set_num_threads(max(1, threads // workers))
            # on a cluster the workers load the checkpoint themselves: an absolute path, not the model, goes in the graph
            source = str(Path(model_path).resolve()) if client is not None else model
            options = {"batch_size": batch_size, "device": device if client is not None else dev,
                       "precision": precision}

            def write(ds, path, mode="w", step=""):
                write_predictions(ds, path, progress=progress, workers=workers, client=client, mode=mode,
                                  label=f"predict {scenario}{step}")

            # the store is built beside out_path and renamed onto it once complete: a killed job leaves no
            # half-written store that looks finished
            with replacing(out_path) as partial:
                if assemblage == "average_k":
                    # the threshold needs a pass over all suitabilities first: store them, then derive presence
                    # from the store (assembling from the lazy cube would run the model over the grid twice)
                    suitability = suitability_cube(cube, source, checkpoint, **options)
                    write(xr.Dataset({"suitability": suitability, **novelty}, attrs=attrs), partial,
                          step=" (suitability)")
                    stored = xr.open_zarr(partial, consolidated=False)["suitability"]
                    code = shared_average_k(stored if average_k_from is None else average_k_from, k,
                                            checkpoint["thresholds"])
                    presence = assemble(stored, assemblage, thresholds=checkpoint["thresholds"], k=k, average_k=code)
                    presence.attrs["average_k_code"] = code
                    presence = restrict_presence(presence.rio.write_crs(cube.rio.crs),
                                                 AccessibleArea.from_checkpoint(checkpoint))
                    write(presence.to_dataset(), partial, mode="a", step=" (presence)")
                else:
                    suitability, presence = lazy_codes(cube, source, checkpoint, assemblage=assemblage, k=k,
                                                       **options)
                    predictions = xr.Dataset({"suitability": suitability, "presence": presence, **novelty},
                                             attrs=attrs)
                    write(predictions.rio.write_crs(cube.rio.crs), partial)
            written = xr.open_zarr(out_path, consolidated=False)
            return xr.Dataset({name: written[name] for name in ("suitability", "presence", *novelty)},
                              attrs=attrs)
        finally:
            torch.set_num_threads(previous_threads)
