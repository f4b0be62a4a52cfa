"""The range pass with every step after the climate read on the model's device (an accelerator under CUDA).

In fused mode the range pass (:func:`sdm.features.all_scenario_ranges`) makes each block's codes and presence on
the device, brings them to the host as uint8 (a byte per species and cell), and there restricts presence to the
accessible areas, sums it per species and packs it as bits. On 2 CPU cores those host steps cost about as much as
the forward itself; on one accelerator they would cost far more (about 3 ns per species-cell and host core against
a forward of well under 1 ns). Here one task per block of cells runs every climate's forward, presence, the
accessible area (:class:`sdm.accessible.DeviceArea`), the per-species sums of every run and the packing on the
device, and only the sums (a few numbers per species) and the packed presence (a bit per species and cell) leave
it. The numbers are those of the host pass (tests compare both on the CPU, where torch runs the same code).

Which pass runs is ``prediction.reductions``: ``host``, ``device``, or ``auto`` (the device pass when the model's
device is CUDA). The device pass needs an assemblage that compares each species' code with a known one
(``threshold``, or ``average_k``, whose code fused mode fixes on the present first).
"""
from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import torch
import xarray as xr
from dask.base import tokenize

from sdm.codes import NODATA, PROBABILITY
from sdm.packed import WORD_DTYPE, n_words
from sdm.predict import _n_species, _prepare, batch_cells, code_batches
from sdm.storage import dask_blocks

REDUCTIONS = ("auto", "host", "device")
"""Values of ``prediction.reductions``."""
SPARSE_ENTRIES = 1 << 24
"""Species x cells entries of a presence mask scanned at once on the device by :func:`mask_sums_on_device` (bounds
its index tensors: 16 bytes per present entry; as the host's :data:`sdm.features.SPARSE_ENTRIES`)."""


DEVICE_ASSEMBLAGES = ("threshold", "average_k")
"""Assemblages the device pass makes: presence by a known code per species (fused mode fixes average-K's first)."""


def use_device_pass(reductions: str, device: torch.device | str, assemblage: str) -> bool:
    """Whether the range pass runs its reductions on the device: ``reductions`` ``device`` (an assemblage it cannot
    make is then an error, see :func:`device_scenario_ranges`), or ``auto`` with a CUDA device and one of
    :data:`DEVICE_ASSEMBLAGES` (``top_k`` keeps the host pass)."""
    if reductions not in REDUCTIONS:
        raise ValueError(f"prediction.reductions must be one of {', '.join(REDUCTIONS)}, got {reductions!r}")
    if reductions == "auto":
        return torch.device(device).type == "cuda" and assemblage in DEVICE_ASSEMBLAGES
    return reductions == "device"


def block_codes(block: np.ndarray, model, mean, std, device: torch.device, batch_size: int | None,
                precision: str) -> torch.Tensor:
    """(variable, y, x) climate -> uint8 tensor (species, cells) on ``device``: the codes of
    :func:`sdm.predict.predict_block` (the same batches and arithmetic), 255 where any variable is missing."""
    n_species = _n_species(model)
    x, valid = _prepare(block, mean, std, device)
    out = torch.full((n_species, block.shape[1] * block.shape[2]), NODATA, dtype=torch.uint8, device=device)
    dense = out if valid is None else torch.empty((n_species, len(x)), dtype=torch.uint8, device=device)
    for start, stop, codes in code_batches(x, model, batch_cells(device, batch_size, n_species), precision):
        dense[:, start:stop] = codes  # whole numbers 0..254: the cast is exact
    if valid is not None and len(x):
        out[:, torch.as_tensor(np.flatnonzero(valid), device=device)] = dense
    return out


def pack_on_device(presence: torch.Tensor) -> np.ndarray:
    """Bool tensor (species, cells) -> the words (word, cells) of :func:`sdm.packed.pack_presence` (bit ``i`` of
    word ``w`` is species ``64 w + i``), packed on the tensor's device; only the words leave it."""
    n_species, n_cells = presence.shape
    words = n_words(n_species)
    if not n_cells:
        return np.zeros((words, 0), dtype=WORD_DTYPE)
    rows = torch.zeros((words * 64, n_cells), dtype=torch.uint8, device=presence.device)
    rows[:n_species] = presence
    rows = rows.view(words * 8, 8, n_cells)  # byte b of the packing: species 8 b .. 8 b + 7
    packed = rows[:, 0].clone()
    for bit in range(1, 8):
        packed |= rows[:, bit] << bit
    # (word, cell, byte of the word), little-endian: the byte order of WORD_DTYPE
    # flattened before the view: a 1-cell block keeps a stride of 1 on its size-1 axis, which a view to int64 rejects
    as_words = packed.view(words, 8, n_cells).permute(0, 2, 1).reshape(-1).view(torch.int64).view(words, n_cells)
    return as_words.cpu().numpy().view(WORD_DTYPE)


def mask_sums_on_device(mask: torch.Tensor, codes: torch.Tensor, weight: torch.Tensor,
                        protected: torch.Tensor | None) -> list[np.ndarray]:
    """Per-species (area, suitability sum, cell count[, protected area]) of a bool presence mask (species, cells)
    on the device, as :func:`sdm.features._mask_sums` computes them on the host: the present entries found in one
    pass over the mask (a group of species at a time), every sum a float64 ``bincount`` over them alone, the
    suitability decoded from the ``codes`` there with the same table. On the CPU the sums equal the host's; CUDA's
    ``bincount`` adds with atomics, in no fixed order, so there they equal them within float64 rounding. About a byte read per species and cell,
    where dense float64 products would move tens."""
    n_species, n_cells = mask.shape
    table = torch.as_tensor(PROBABILITY.astype("float64"), device=mask.device)
    sums = torch.zeros((3 if protected is None else 4, n_species), dtype=torch.float64, device=mask.device)
    group = max(1, SPARSE_ENTRIES // max(n_cells, 1))
    for first in range(0, n_species, group):
        rows, cols = torch.nonzero(mask[first:first + group], as_tuple=True)
        n = min(group, n_species - first)
        values = table[codes[first:first + group][rows, cols].long()]
        sums[0, first:first + n] = torch.bincount(rows, weights=weight[cols], minlength=n)
        sums[1, first:first + n] = torch.bincount(rows, weights=values, minlength=n)
        sums[2, first:first + n] = torch.bincount(rows, minlength=n).to(torch.float64)
        if protected is not None:
            sums[3, first:first + n] = torch.bincount(rows, weights=protected[cols], minlength=n)
    return list(sums.cpu().numpy())


_AREAS: dict = {}
_AREAS_LOCK = threading.Lock()


def _device_area(area, device: torch.device):
    """The :class:`sdm.accessible.DeviceArea` of ``area`` on ``device``, made once per process."""
    from sdm.accessible import DeviceArea

    key = (id(area), str(device))
    with _AREAS_LOCK:
        if key not in _AREAS:
            _AREAS.clear()
            _AREAS[key] = (area, DeviceArea(area, device))  # holds ``area``: its id stays its own
        return _AREAS[key][1]


def _keep_accessible_(presence: list, accessible, device: torch.device, shape: tuple, block_info) -> None:
    """In place: every climate's presence (bool tensors (species, cells)) kept to the species' accessible areas,
    decided on the device at the cells where some species is present in some climate."""
    from pyproj import Transformer

    from sdm.accessible import unit_vectors

    area, x, y, crs = accessible
    anywhere = presence[0].any(dim=0)
    for other in presence[1:]:
        anywhere |= other.any(dim=0)
    cells = torch.nonzero(anywhere).flatten()
    if not len(cells):
        return
    (y0, y1), (x0, x1) = block_info[0]["array-location"][-2:]
    rows, cols = np.divmod(cells.cpu().numpy(), shape[1])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x[x0:x1][cols], y[y0:y1][rows])
    keep = _device_area(area, device).keep(unit_vectors(lon, lat), rows, cols)
    for layer in presence:
        layer[:, cells] &= keep


def _block_pass(*blocks, model, mean, std, device, batch_size, precision, thresholds, accessible, n_futures,
                dispersals, has_share, packed=(), block_info=None) -> dict:
    """One block of cells through the whole range pass on the device: ``blocks`` are the climate of the present
    and of each future scenario (variable, y, x), the cell areas (y, x) and, with ``has_share``, the protected
    share (y, x). Returns ``sums`` (species, statistic, 1, 1: the present's, then every scenario's and dispersal
    assumption's, as :func:`sdm.features._block_sums`), ``words`` (climate index -> its presence as bits, word, y,
    x, for the climates in ``packed``) and ``valid`` (climate index -> y, x: its cells with data, for the same
    climates)."""
    from sdm.predict import _cached_model

    device = torch.device(device)
    if isinstance(model, (str, Path)):
        model = _cached_model(str(model), str(device))
    climates, area_km2 = blocks[:1 + n_futures], np.asarray(blocks[1 + n_futures], dtype="float64")
    shape = climates[0].shape[1:]
    n_species = _n_species(model)
    n_stats = 4 if has_share else 3
    with torch.inference_mode():
        codes = [block_codes(np.asarray(block), model, mean, std, device, batch_size, precision)
                 for block in climates]
        presence = [(layer >= torch.as_tensor(limit, device=device)[:, None]) & (layer != NODATA)
                    for layer, limit in zip(codes, thresholds)]
        if accessible is not None:
            _keep_accessible_(presence, accessible, device, shape, block_info)
        valid = codes[0][0] != NODATA
        sums = np.zeros((n_species, n_stats * (1 + n_futures * len(dispersals)), 1, 1))
        if bool(valid.any()):
            weight = torch.as_tensor(np.nan_to_num(area_km2).ravel(), device=device)
            protected = None
            if has_share:
                share = np.nan_to_num(np.asarray(blocks[2 + n_futures], dtype="float64")).ravel()
                protected = weight * torch.as_tensor(share, device=device)
            current = presence[0] & valid
            columns = mask_sums_on_device(current, codes[0], weight, protected)
            for future, future_codes in zip(presence[1:], codes[1:]):
                # no data in this scenario where the present has some: the present's state, as on the host
                unknown = valid & (future_codes[0] == NODATA)
                if bool(unknown.any()):
                    future = torch.where(unknown, current, future)
                    future_codes = torch.where(unknown[None, :], codes[0], future_codes)
                for dispersal in dispersals:
                    mask = future & valid if dispersal == "full" else future & current
                    columns += mask_sums_on_device(mask, future_codes, weight, protected)
            sums[:, :, 0, 0] = np.stack(columns, axis=1)
        words = {index: pack_on_device(presence[index]).reshape(-1, *shape) for index in packed}
        # each stored climate's own cells with data (a scenario's land mask may lack some of the present's)
        valids = {index: (codes[index][0] != NODATA).cpu().numpy().reshape(shape) for index in packed}
        return {"sums": sums, "words": words, "valid": valids}


def _part(result: dict, key: str, index: int | None = None) -> np.ndarray:
    """One output of :func:`_block_pass`."""
    value = result[key]
    return value if index is None else value[index]


def device_scenario_ranges(model_path: str | Path, cubes: dict, prediction: dict, dispersals: list[str],
                           cell_area_km2: xr.DataArray, protected: xr.DataArray | None = None,
                           presence_stores: dict | None = None, average_k: dict | None = None,
                           device: str = "auto", threads: int | None = None) -> dict:
    """:func:`sdm.features.all_scenario_ranges` of a fused pass, computed on the device: ``cubes`` maps scenario
    (``"current"`` first, the present) -> climate cube, ``average_k`` scenario -> its average-K code (fused mode's
    :func:`sdm.fused.read_average_k`), ``prediction`` the config's prediction section. Same tables, same presence
    stores (``presence_stores``: scenario -> path), one task per block of cells for every climate and run."""
    from sdm.accessible import AccessibleArea
    from sdm.features import _check_dispersal, match_coords, run_tables, store_targets, sum_in_batches
    from sdm.fused import _prepared
    from sdm.packed import bits_store
    from sdm.predict import extrapolation_layers, presence_codes

    for dispersal in dispersals:
        _check_dispersal(dispersal)
    names = list(cubes)
    if names[0] != "current":
        raise ValueError(f"the first cube of the pass must be the present ('current'), got {names[0]!r}")
    average_k = average_k or {}
    # each cube chunked for the forward; the models _prepared loads are dropped (each task loads its own once per
    # process, sdm.predict._cached_model), so that no copy stays on the device for the whole pass
    prepared = {}
    for name, climate in cubes.items():
        prepared[name], _, checkpoint, dev = _prepared(climate, model_path, name, prediction["chunk"], device,
                                                       threads)
    cube = prepared["current"]
    species = [str(s) for s in checkpoint["species"]]
    thresholds = []
    for name in names:
        codes = presence_codes(checkpoint, prediction["assemblage"], average_k.get(name))
        if codes is None:
            raise ValueError(f"prediction.reductions: device needs presence by a known code per species (assemblage "
                             f"threshold, or average_k with its code); scenario {name!r} has assemblage "
                             f"{prediction['assemblage']!r} without one: set prediction.reductions: host")
        thresholds.append(codes)
    spatial = cube.data.chunks[1:]
    grid = cube.isel(variable=0, drop=True)
    arrays = []
    for name in names:
        other = match_coords(prepared[name], cube, f"{name} climate cube")
        arrays.append(other.sel(variable=checkpoint["variables"]).data.rechunk((-1, *spatial)))
    area = match_coords(cell_area_km2, grid, "cell_area_km2")
    arrays.append(dask_blocks(area, spatial))
    share = None if protected is None else match_coords(protected, grid, "protected areas")
    if share is not None:
        arrays.append(dask_blocks(share, spatial))
    accessible = None
    reach = AccessibleArea.from_checkpoint(checkpoint)
    if reach is not None:
        from pyproj import CRS

        accessible = (reach, cube["x"].values, cube["y"].values, CRS.from_user_input(cube.rio.crs).to_wkt())
    mean = np.asarray(checkpoint["mean"], dtype="float64")
    std = np.asarray(checkpoint["std"], dtype="float64")
    model_token = (str(model_path), Path(model_path).stat().st_mtime_ns)
    options = {"model": str(model_path), "mean": mean, "std": std, "device": str(dev),
               "batch_size": prediction["batch_size"], "precision": prediction.get("precision", "float32"),
               "thresholds": thresholds, "accessible": accessible, "n_futures": len(names) - 1,
               "dispersals": tuple(dispersals), "has_share": share is not None,
               "packed": tuple(i for i, n in enumerate(names) if n in (presence_stores or {}))}
    name = "device-pass-" + tokenize([a.name for a in arrays], model_token, mean, std, str(dev), thresholds,
                                     *(accessible or ()), options["batch_size"], options["precision"],
                                     options["dispersals"], options["packed"], names)
    raw = da.map_blocks(_block_pass, *arrays, name=name, drop_axis=0, chunks=spatial, dtype=object,
                        meta=np.empty((0, 0), dtype=object), **options)
    n_stats = 4 if share is not None else 3
    rows, cols = len(spatial[0]), len(spatial[1])
    sums = da.map_blocks(_part, raw, key="sums", new_axis=[0, 1], dtype="float64",
                         chunks=((len(species),), (n_stats * len(names[1:]) * len(dispersals) + n_stats,),
                                 (1,) * rows, (1,) * cols), meta=np.empty((0, 0, 0, 0), "float64"))
    runs = ", ".join(["current"] + [f"{n} {d}" for n in names[1:] for d in dispersals])
    with ExitStack() as stack:
        stored = []
        if presence_stores:
            like = grid.rio.write_crs(cube.rio.crs)  # the grid every store is on
            stores = {}
            for index, scenario in enumerate(names):
                if scenario not in presence_stores:
                    continue
                words = da.map_blocks(_part, raw, key="words", index=index, new_axis=0, dtype=WORD_DTYPE,
                                      chunks=((n_words(len(species)),), *spatial),
                                      meta=np.empty((0, 0, 0), WORD_DTYPE))
                valid = da.map_blocks(_part, raw, key="valid", index=index, dtype=bool, chunks=spatial,
                                      meta=np.empty((0, 0), bool))
                novelty = extrapolation_layers(prepared[scenario], checkpoint, scenario)
                stores[scenario] = bits_store(words, species, valid,
                                              None if novelty is None else novelty["mess"], like, spatial)
            stored = store_targets(stores, presence_stores, stack, names)
        try:
            totals = sum_in_batches(sums, label=f"range sums on {dev.type} ({runs})", stored=stored)
        finally:
            with _AREAS_LOCK:
                _AREAS.clear()  # the records leave the device with the pass
    return run_tables(pd.Index(species, name="species"), totals, names[1:], dispersals, n_stats)
