"""Zarr v3 stores written one way everywhere: no consolidated metadata, fresh encodings, portable string labels."""

from __future__ import annotations

from pathlib import Path

import xarray as xr


def write_zarr(ds: xr.Dataset, path: str | Path, mode: str = "w") -> None:
    """Write ``ds`` as Zarr v3 without consolidated metadata (read back with ``consolidated=False``).

    Text coordinates (``species``, ``variable``) are stored as variable-length strings, which Zarr v3 specifies,
    instead of numpy's fixed-width unicode, which it does not (other readers could not open it).
    """
    ds = ds.copy()
    for name, coord in ds.coords.items():
        if coord.dtype.kind == "U":
            ds = ds.assign_coords({name: coord.astype(object)})
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(path, mode=mode, consolidated=False)
