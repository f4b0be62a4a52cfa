"""Prediction over a cube with Dask: one batched model forward per chunk, never the whole grid in memory.

Stored compactly: suitability as uint8 (probability x 254, rounded; 255 = no data), presence as uint8 (0/1, 255 =
no data). :func:`open_predictions` decodes them back to float probabilities and booleans.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from dask.diagnostics import ProgressBar

from sdm.model import ResidualMLP, standardise
from sdm.storage import write_zarr

NODATA = 255
SCALE = 254


def forward_block(block: np.ndarray, model: ResidualMLP, mean: np.ndarray, std: np.ndarray,
                  device: torch.device, batch_size: int) -> np.ndarray:
    """(variable, y, x) climate -> (species, y, x) float32 probabilities, NaN where any variable is missing."""
    n_var, ny, nx = block.shape
    cells = block.reshape(n_var, -1).T
    valid = np.isfinite(cells).all(axis=1)
    out = np.full((ny * nx, model.hparams["n_species"]), np.nan, dtype="float32")
    if valid.any():
        x = torch.from_numpy(np.ascontiguousarray(standardise(cells[valid], mean, std)))
        probs = []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                probs.append(torch.sigmoid(model(x[start:start + batch_size].to(device, non_blocking=True))))
            out[valid] = torch.cat(probs).float().cpu().numpy()  # one host transfer per chunk
    return out.T.reshape(-1, ny, nx)


def quantise(probability: np.ndarray) -> np.ndarray:
    """float probabilities (NaN = no data) -> uint8 codes (0..254, 255 = no data)."""
    codes = np.where(np.isfinite(probability), np.rint(np.clip(probability, 0, 1) * SCALE), NODATA)
    return codes.astype("uint8")


def suitability_cube(cube: xr.DataArray, model: ResidualMLP, checkpoint: dict, *, batch_size: int = 65536,
                     device: torch.device | str = "cpu") -> xr.DataArray:
    """Lazy uint8 suitability (``species``, ``y``, ``x``) of every species on the cube's grid.

    The cube must hold the checkpoint's variables (any order, extra ones are ignored); it is rechunked so that each
    chunk carries all variables.
    """
    variables = checkpoint["variables"]
    cube = cube.sel(variable=variables).chunk({"variable": -1})
    device = torch.device(device)
    mean, std = checkpoint["mean"], checkpoint["std"]
    species = checkpoint["species"]

    def block_fn(block):
        return quantise(forward_block(np.asarray(block, dtype="float64"), model, mean, std, device, batch_size))

    data = cube.data if isinstance(cube.data, da.Array) else da.from_array(cube.values, chunks=(-1, 512, 512))
    out = da.map_blocks(block_fn, data, dtype="uint8",
                        chunks=((len(species),), data.chunks[1], data.chunks[2]))
    suitability = xr.DataArray(out, dims=("species", "y", "x"),
                               coords={"species": species, "y": cube["y"], "x": cube["x"]}, name="suitability")
    suitability.attrs = {"long_name": "habitat suitability", "units": "probability x 254 (255 = no data)",
                         "scale_factor_note": "probability = value / 254"}
    return suitability.rio.write_crs(cube.rio.crs)


def write_predictions(predictions: xr.Dataset, path: str | Path, progress: bool = True, workers: int = 1) -> None:
    """Write suitability / presence (uint8) as Zarr v3, computing chunk by chunk with ``workers`` threads."""
    with dask.config.set(scheduler="threads", num_workers=workers):
        if progress:
            # dt is also how long the bar's thread may sleep before the write returns: keep it short
            with ProgressBar(minimum=2, dt=0.5):
                write_zarr(predictions, path)
        else:
            write_zarr(predictions, path)


def open_predictions(path: str | Path, decode: bool = True) -> xr.Dataset:
    """Open a predictions store; with ``decode``, suitability as float32 in [0, 1] (NaN = no data) and presence as
    bool (False where no data)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions not found: {path}")
    ds = xr.open_zarr(path, consolidated=False, decode_coords="all")
    if not decode:
        return ds
    suitability = ds["suitability"]
    decoded = xr.Dataset({
        "suitability": (suitability.where(suitability != NODATA) / SCALE).astype("float32"),
        "presence": ds["presence"] == 1,
    })
    return decoded.rio.write_crs(ds.rio.crs)


def predict_scenario(cube: xr.DataArray, model_path, out_path, *, scenario: str, chunk: int = 256,
                     batch_size: int = 65536, assemblage: str = "threshold", k: float = 5, workers: int = 1,
                     threads: int = 1, device: str = "auto") -> xr.Dataset:
    """Predict one scenario's cube with a checkpoint and write suitability + presence (Zarr).

    Torch gets ``threads // workers`` threads per Dask worker so the machine is not oversubscribed.
    """
    from sdm.assemblage import assemble
    from sdm.climate import check_variables
    from sdm.model import load_checkpoint, resolve_device

    dev = resolve_device(device)
    torch.set_num_threads(max(1, threads // workers))
    model, checkpoint = load_checkpoint(model_path, dev)
    check_variables(cube, checkpoint["variables"], scenario)
    cube = cube.chunk({"variable": -1, "y": chunk, "x": chunk})
    suitability = suitability_cube(cube, model, checkpoint, batch_size=batch_size, device=dev)
    attrs = {"scenario": scenario, "assemblage": assemblage, "model": str(model_path)}
    if assemblage == "average_k":
        # the threshold needs a pass over all suitabilities first: store them, then derive presence from the store
        # (assembling from the lazy cube would run the model over the whole grid a second time)
        write_predictions(xr.Dataset({"suitability": suitability}, attrs=attrs), out_path, workers=workers)
        stored = xr.open_zarr(out_path, consolidated=False)["suitability"]
        presence = assemble(stored, assemblage, k=k)
        write_zarr(presence.to_dataset(), out_path, mode="a")
        return xr.Dataset({"suitability": stored, "presence": presence}, attrs=attrs)
    presence = assemble(suitability, assemblage, thresholds=checkpoint["thresholds"], k=k)
    predictions = xr.Dataset({"suitability": suitability, "presence": presence}, attrs=attrs)
    write_predictions(predictions.rio.write_crs(cube.rio.crs), out_path, workers=workers)
    return predictions
