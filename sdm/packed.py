"""Presence as bits: a cell's assemblage of S species in ceil(S / 64) unsigned 64-bit words.

Bit ``i`` of word ``w`` of a cell is species ``64 w + i`` (the order of the model's species); the bits past the
last species are 0. A block of cells is ``uint64`` (word, y, x), an eighth of the bytes of bool presence per word
and species; the per-cell sums of the indicators are popcounts of a cell's words (masked by the species of a
status), 64 species per operation. Fused mode stores each scenario's presence this way in its range pass, so that
the indicator pass reads it instead of running the model again (:func:`sdm.features.all_scenario_ranges`).
"""

from __future__ import annotations

import numpy as np

WORD = 64
"""Species per word."""
WORD_DTYPE = np.dtype("<u8")
"""Little-endian whatever the machine, so the bytes of a word are species 8 j .. 8 j + 7 in order."""

_PACK_CELLS = 65536
"""Cells packed per step of :func:`pack_presence`: the step's temporaries stay in the processor's cache."""


def n_words(n_species: int) -> int:
    """Words per cell for ``n_species`` species."""
    return -(-n_species // WORD)


def pack_presence(presence: np.ndarray) -> np.ndarray:
    """Bool ``presence`` (species, ...) as words (word, ...): bit ``i`` of word ``w`` is species ``64 w + i``.

    Eight species rows are combined at a time as 64-bit views of eight cells each (bit ``k`` of each byte is row
    ``k``: a bool is one byte, 0 or 1), so the packing streams through the rows once: 0.3 ns per species and cell
    on this project's 2-core machine, against 2.9 ns for :func:`numpy.packbits` along the species axis."""
    presence = np.asarray(presence)
    if presence.dtype != bool:
        raise TypeError(f"presence must be bool, got {presence.dtype}")
    n_species, cell_shape = presence.shape[0], presence.shape[1:]
    rows = np.ascontiguousarray(presence).reshape(n_species, -1).view(np.uint8)
    n_cells, n_bytes = rows.shape[1], -(-n_species // 8)
    packed = np.zeros((n_words(n_species) * 8, n_cells), dtype=np.uint8)  # byte b: species 8 b .. 8 b + 7
    whole_groups, whole_cells = n_species // 8, n_cells - n_cells % 8
    if whole_groups and whole_cells:
        groups = rows[:whole_groups * 8, :whole_cells].view(WORD_DTYPE).reshape(whole_groups, 8, -1)
        out = packed[:whole_groups, :whole_cells].view(WORD_DTYPE)
        shifted = np.empty((whole_groups, min(_PACK_CELLS // 8, out.shape[1])), dtype=WORD_DTYPE)
        for start in range(0, out.shape[1], _PACK_CELLS // 8):
            stop = min(start + _PACK_CELLS // 8, out.shape[1])
            target, scratch = out[:, start:stop], shifted[:, :stop - start]
            target[...] = groups[:, 0, start:stop]
            for bit in range(1, 8):
                np.left_shift(groups[:, bit, start:stop], np.uint64(bit), out=scratch)
                np.bitwise_or(target, scratch, out=target)
    # what the 64-bit views leave (the last partial group of species, the last cells): numpy's packbits, one byte
    # per cell from at most 8 rows
    for group in range(n_bytes):
        first = group * 8
        cells = slice(0, n_cells) if first + 8 > n_species else slice(whole_cells, n_cells)
        if cells.start < cells.stop:
            packed[group, cells] = np.packbits(rows[first:first + 8, cells].view(bool), axis=0, bitorder="little")[0]
    words = packed.reshape(-1, 8, n_cells).transpose(0, 2, 1)  # (word, cell, byte of the word)
    return np.ascontiguousarray(words).view(WORD_DTYPE)[..., 0].reshape(-1, *cell_shape)


def species_words(selected: np.ndarray) -> np.ndarray:
    """The words (word,) whose set bits are the ``selected`` species (bool, one per species): a mask for
    :func:`count_present` and :func:`any_present`."""
    return pack_presence(np.asarray(selected, dtype=bool).reshape(-1, 1))[:, 0]


def _masked(bits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return bits
    return bits & mask.reshape(-1, *([1] * (bits.ndim - 1)))


def count_present(bits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Species present per cell (int32, ``bits`` without its word axis), among ``mask``'s species when given
    (:func:`species_words`)."""
    return np.bitwise_count(_masked(bits, mask)).sum(axis=0, dtype="int32")


def any_present(bits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cells (bool) where at least one of ``mask``'s species is present."""
    return _masked(bits, mask).any(axis=0)


def unpack_presence(bits: np.ndarray, n_species: int) -> np.ndarray:
    """Bool presence (species, ...) of words made by :func:`pack_presence`."""
    words = np.ascontiguousarray(bits, dtype=WORD_DTYPE)
    as_bytes = words[..., None].view(np.uint8)  # (word, ..., byte of the word)
    bools = np.unpackbits(as_bytes, axis=-1, bitorder="little")  # (word, ..., 64)
    bools = np.moveaxis(bools, -1, 1).reshape(-1, *bits.shape[1:])
    return bools[:n_species].astype(bool)


PRESENCE_BITS = "presence_bits"
"""The packed presence variable of a presence store (``uint64`` word, y, x)."""


def presence_codecs() -> dict:
    """Zarr v3 codecs of a presence store's packed presence: LZ4 without shuffle, as the stored presence cubes
    (:func:`sdm.predict._codecs`); zarr's default zstd level 3 cost as much time as the packing."""
    from zarr.codecs import BloscCodec

    return {PRESENCE_BITS: {"compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=8)]}}


def presence_store(predictions, valid, spatial: tuple):
    """The lazy dataset of one scenario's presence store, in blocks of ``spatial`` (y chunks, x chunks):
    ``presence_bits`` (``uint64`` word, y, x; :func:`pack_presence` of ``predictions["presence"]``), ``valid``
    (bool y, x: the scenario's cells with data), and the predictions' ``mess`` (y, x) when they have it; the species
    (in bit order) in the attribute ``species``, the predictions' CRS. For :func:`sdm.features.all_scenario_ranges`
    to write and :func:`open_presence_store` to read."""
    import dask.array as da

    from sdm.storage import dask_blocks

    presence = predictions["presence"]
    species = [str(s) for s in presence["species"].to_numpy()]
    bits = da.map_blocks(pack_presence, dask_blocks(presence, ((len(species),), *spatial)),
                         chunks=((n_words(len(species)),), *spatial), dtype=WORD_DTYPE,
                         meta=np.empty((0, 0, 0), WORD_DTYPE))
    return bits_store(bits, species, dask_blocks(valid, spatial),
                      predictions["mess"] if "mess" in predictions else None, presence, spatial)


def bits_store(bits, species: list, valid, mess, like, spatial: tuple):
    """The presence store's dataset (see :func:`presence_store`) of packed presence ``bits`` (Dask ``uint64``
    word, y, x) of ``species``, the Dask bool ``valid`` (y, x) and the ``mess`` layer (a DataArray or None), on the
    grid (y, x coordinates and CRS) of ``like``."""
    import xarray as xr

    from sdm.storage import dask_blocks

    layers = {PRESENCE_BITS: (("word", "y", "x"), bits), "valid": (("y", "x"), valid)}
    if mess is not None:
        layers["mess"] = (("y", "x"), dask_blocks(mess.astype("float32"), spatial))
    store = xr.Dataset(layers, coords={"y": like["y"].to_numpy(), "x": like["x"].to_numpy()})
    store[PRESENCE_BITS].attrs = {"description": f"bit i of word w is species {WORD} w + i (attribute species)"}
    if mess is not None:
        store["mess"].attrs = mess.attrs
    store.attrs = {"species": list(species)}
    return store.rio.write_crs(like.rio.crs)


def open_presence_store(path):
    """A presence store written by :func:`sdm.features.all_scenario_ranges` as a lazy Dataset; a one-line error
    naming the path when it is not one."""
    from pathlib import Path

    import xarray as xr

    try:
        store = xr.open_zarr(Path(path), consolidated=False, decode_coords="all")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a presence store ({type(error).__name__}: {error}); delete it and rerun "
                         "the range pass: snakemake --forcerun range_sums") from None
    if PRESENCE_BITS not in store or "species" not in store.attrs or "valid" not in store:
        raise ValueError(f"{path}: not a presence store (needs {PRESENCE_BITS!r}, 'valid' and the species "
                         "attribute); delete it and rerun the range pass: snakemake --forcerun range_sums")
    return store
