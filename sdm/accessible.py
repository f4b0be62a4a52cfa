"""The accessible area of each species: predicted presence only within a dispersal distance of its own records.

A climate model says where a species *could* live; it cannot know that an orchid of the Andes never reached the
Congo basin, whose climate is alike. Ecologists restrict the suitable area to the area the species could have
reached, M in the BAM diagram (Barve et al. 2011, Ecological Modelling 222:1810), often as a distance around its
records (Mendes et al. 2020, Ecological Modelling 431:109180, "occurrence-based" constraints). Here:

- the distance is chosen on training data only (:func:`dispersal_distance_km`): the ``QUANTILE`` (99 %) of the
  great-circle distance from each validation-block record to the nearest training-block record of the same
  species, so that about 99 % of a species' records in blocks the model did not fit on lie in its accessible area;
- a cell is accessible to a species when its centre lies within that distance of a cell holding a record of it;
- it applies to presence, now and in every future scenario (so "full dispersal" means anywhere in the species'
  accessible area, and "no dispersal" within its current range); suitability is left as the model gave it.

Distances are chords between unit vectors (``scipy.spatial.cKDTree``), converted from great-circle distances on a
sphere of the Earth's mean radius: exact for the sphere, whatever the grid's CRS.
"""
from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import xarray as xr
from scipy.spatial import cKDTree

from sdm.grid import EARTH_RADIUS_KM


log = logging.getLogger(__name__)

QUANTILE = 0.99
"""Share of held-out (validation-block) records that must fall within the dispersal distance."""
PROBE_CELLS = 4096
"""Cells per query to the per-species trees (bounds the temporary arrays of a block)."""


def unit_vectors(lon, lat) -> np.ndarray:
    """(n, 3) points on the unit sphere of WGS84 longitudes and latitudes (degrees)."""
    lon, lat = np.radians(np.asarray(lon, dtype="float64")), np.radians(np.asarray(lat, dtype="float64"))
    return np.c_[np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]


def chord(distance_km: float) -> float:
    """Straight-line distance on the unit sphere of a great-circle distance (km)."""
    return float(2 * np.sin(min(distance_km / EARTH_RADIUS_KM, np.pi) / 2))


def great_circle_km(chords: np.ndarray) -> np.ndarray:
    """Great-circle distances (km) of unit-sphere chords (inverse of :func:`chord`)."""
    return 2 * np.arcsin(np.clip(np.asarray(chords, dtype="float64") / 2, 0, 1)) * EARTH_RADIUS_KM


def held_out_distances_km(lon, lat, species, split, train: int = 0, held_out: int = 1) -> np.ndarray:
    """Great-circle distance (km) from each record in the ``held_out`` split to the nearest record of the same
    species in the ``train`` split (species with records in both only); ``species`` and ``split`` are per record."""
    points, species, split = unit_vectors(lon, lat), np.asarray(species), np.asarray(split)
    out = []
    for s in np.unique(species):
        mine = species == s
        fitted, held = points[mine & (split == train)], points[mine & (split == held_out)]
        if len(fitted) and len(held):
            out.append(great_circle_km(cKDTree(fitted).query(held, k=1)[0]))
    return np.concatenate(out) if out else np.empty(0)


def dispersal_distance_km(lon, lat, species, split, quantile: float = QUANTILE) -> tuple[float | None, int]:
    """The accessible area's distance (km) chosen on training data: the ``quantile`` of
    :func:`held_out_distances_km` (validation-block records to the training blocks). Returns (distance, number of
    held-out records it rests on); the distance is None when no species has records in both splits."""
    distances = held_out_distances_km(lon, lat, species, split)
    if not len(distances):
        return None, 0
    return float(np.quantile(distances, quantile)), int(len(distances))


class AccessibleArea:
    """Per-species record locations and one dispersal distance: which cells each species can occupy."""

    def __init__(self, lon, lat, species_index, n_species: int, distance_km: float):
        if not np.isfinite(distance_km) or distance_km <= 0:
            raise ValueError(f"accessible-area distance must be a positive number of km, got {distance_km}")
        points, species_index = unit_vectors(lon, lat), np.asarray(species_index, dtype="int64")
        self.n_species, self.distance_km = int(n_species), float(distance_km)
        self._radius = chord(self.distance_km)
        self._trees = [cKDTree(points[species_index == s]) if (species_index == s).any() else None
                       for s in range(self.n_species)]
        from dask.base import tokenize

        self._token = tokenize(points, species_index, self.n_species, self.distance_km)

    def __dask_tokenize__(self):
        """The records, species and distance: names the Dask tasks that restrict presence to this area."""
        return self._token

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "AccessibleArea | None":
        """The checkpoint's accessible area, or None when it has none (off in the config, or trained before)."""
        stored = checkpoint.get("accessible")
        if not stored:
            return None
        lonlat = np.asarray(stored["lonlat"], dtype="float64").reshape(-1, 2)
        return cls(lonlat[:, 0], lonlat[:, 1], np.asarray(stored["species_index"]), len(checkpoint["species"]),
                   float(stored["distance_km"]))

    def decisions(self, points: np.ndarray) -> np.ndarray:
        """Per species, for a set of points (unit vectors): 1 when every point is accessible, 0 when none is, -1
        when they must be looked up one by one (:meth:`accessible_points`).

        The points are bounded by one sphere (their centre and the largest chord to it): a species whose nearest
        record to the centre lies beyond the distance plus that bound has no accessible point among them, one whose
        nearest record lies within the distance minus the bound has all of them (chords obey the triangle
        inequality). A species without records has none."""
        out = np.zeros(self.n_species, dtype="int8")
        if not len(points):
            return out
        centre = points.mean(axis=0)
        centre = centre / (np.linalg.norm(centre) or 1.0)
        bound = float(np.sqrt(((points - centre) ** 2).sum(axis=1)).max())
        for s, tree in enumerate(self._trees):
            if tree is None:
                continue
            out[s] = self._decide(tree.query(centre, k=1)[0], bound)
        return out

    def _decide(self, nearest, bound):
        """1 where a sphere of chord radius ``bound`` whose centre has its nearest record at chord ``nearest`` lies
        wholly within the distance, 0 where wholly beyond it, -1 where it may be cut (elementwise)."""
        return np.where(nearest > self._radius + bound, 0, np.where(nearest + bound <= self._radius, 1, -1))

    def accessible_points(self, species: int, points: np.ndarray) -> np.ndarray:
        """Bool per point (unit vectors): within the distance of a record of ``species``."""
        tree, inside = self._trees[species], np.zeros(len(points), dtype=bool)
        if tree is None:
            return inside
        for start in range(0, len(points), PROBE_CELLS):
            # distance_upper_bound: the tree stops searching beyond the radius (inf = none within it)
            distance, _ = tree.query(points[start:start + PROBE_CELLS], k=1,
                                     distance_upper_bound=self._radius * (1 + 1e-12))
            inside[start:start + PROBE_CELLS] = np.isfinite(distance)
        return inside

    def outside(self, species: int, points: np.ndarray, where: np.ndarray, tiles) -> np.ndarray:
        """The indices in ``where`` (into ``points``, unit vectors) of the points outside ``species``' accessible
        area, deciding whole tiles (``tiles`` of :func:`_tiles`) where their sphere allows, as
        :meth:`decisions` does for a whole set, and looking up only the points of the other tiles."""
        tree = self._trees[species]
        if tree is None:
            return where
        tile, centres, bounds = tiles
        # every tile of the block: a few hundred queries
        decision = self._decide(tree.query(centres, k=1)[0], bounds).astype("int8")[tile[where]]
        look = where[decision == -1]
        return np.concatenate([where[decision == 0], look[~self.accessible_points(species, points[look])]])

    def contains(self, lon, lat, wanted: np.ndarray | None = None) -> np.ndarray:
        """Bool (species, cells): the cell centre (WGS84 degrees) lies within the distance of a record of the
        species. A species without records has no accessible cell. ``wanted`` (bool (species, cells)): only these
        pairs are needed (the others come out False), e.g. the cells where a species is predicted present. Whole
        sets of cells are decided at once where they can be (:meth:`decisions`)."""
        points = unit_vectors(np.ravel(lon), np.ravel(lat))
        out = np.zeros((self.n_species, len(points)), dtype=bool)
        for s, decision in enumerate(self.decisions(points)):
            cells = np.flatnonzero(wanted[s]) if wanted is not None else np.arange(len(points))
            if decision == 1:
                out[s, cells] = True
            elif decision == -1 and len(cells):
                out[s, cells] = self.accessible_points(s, points[cells])
        return out


class DeviceArea:
    """An :class:`AccessibleArea` as torch tensors on a device, deciding every (species, cell) pair of a block at
    once (for the range pass on an accelerator, :mod:`sdm.device_pass`): the same cells as the trees of
    :class:`AccessibleArea` (chords within the distance, the same ``1e-12`` margin), computed with dense distance
    matrices instead of per-species lookups.

    Per block: the block's cells are cut into tiles (:func:`_tiles`); the chord from each tile's centre to each
    record near the block gives, per tile and species, the nearest record, and so (by the triangle inequality, as
    :meth:`AccessibleArea.decisions`) whether the species reaches all of the tile, none of it, or part of it; only
    the records that may reach a tile a species only partly reaches are compared with that tile's cells."""

    PAIRS = 4096
    """(tile, record) pairs compared with their tile's cells per step (bounds the step's distance array)."""
    RECORDS = 1 << 16
    """Records compared with the tile centres per step."""
    tile_cells = 32
    """Side (cells) of the tiles."""

    def __init__(self, area: AccessibleArea, device):
        import torch

        self.device, self.n_species = torch.device(device), area.n_species
        points = [tree.data for tree in area._trees if tree is not None]
        species = [np.full(len(tree.data), s) for s, tree in enumerate(area._trees) if tree is not None]
        self.records = torch.as_tensor(np.concatenate(points) if points else np.zeros((0, 3)),
                                       dtype=torch.float64, device=self.device)
        self.species = torch.as_tensor(np.concatenate(species) if species else np.zeros(0), dtype=torch.int64,
                                       device=self.device)
        self.radius = area._radius

    def keep(self, points: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        """Bool tensor (species, points): the point (unit vectors, at block ``rows`` / ``cols``) lies in the
        species' accessible area."""
        import torch

        dev, n_points = self.device, len(points)
        keep = torch.zeros((self.n_species, n_points), dtype=torch.bool, device=dev)
        if not n_points or not len(self.records):
            return keep
        tile, centres, bounds = _tiles(points, rows, cols, self.tile_cells)
        pts = torch.as_tensor(points, dtype=torch.float64, device=dev)
        centres = torch.as_tensor(centres, dtype=torch.float64, device=dev)
        bounds = torch.as_tensor(bounds, dtype=torch.float64, device=dev)
        tile = torch.as_tensor(tile, dtype=torch.int64, device=dev)
        # records that can reach the block: within the distance plus the block's bounding sphere of its centre
        centre = pts.mean(dim=0)
        centre = centre / torch.linalg.vector_norm(centre).clamp_min(1e-300)  # as decisions(): 0 stays 0
        margin = self.radius * (1 + 1e-12)  # as the trees' upper bound
        # (a further 1e-12 on the bounds: rounding never drops a record that can reach a cell)
        reach = _chords(centre[None], self.records)[0] <= margin + float(_chords(centre[None], pts).max()) + 1e-12
        records, species = self.records[reach], self.species[reach]
        if not len(records):
            return keep
        # the nearest record of each species to each tile's centre
        nearest = torch.full((len(centres), self.n_species), float("inf"), dtype=torch.float64, device=dev)
        for start in range(0, len(records), self.RECORDS):
            chords = _chords(centres, records[start:start + self.RECORDS])
            nearest.scatter_reduce_(1, species[start:start + self.RECORDS].expand_as(chords), chords, "amin")
        whole = nearest + bounds[:, None] <= self.radius  # (tile, species): every cell of the tile
        cut = ~whole & (nearest <= margin + bounds[:, None] + 1e-12)
        keep |= whole[tile].T
        if not bool(cut.any()):
            return keep
        # cells of each tile, padded with -1 to the largest tile
        order = torch.argsort(tile, stable=True)
        counts = torch.bincount(tile, minlength=len(centres))
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(int(counts.max()), device=dev)
        members = torch.where(slot[None] < counts[:, None], order[(starts[:, None] + slot[None]).clamp(max=n_points - 1)],
                              torch.full((), -1, device=dev))
        for start in range(0, len(records), self.RECORDS):
            part, part_species = records[start:start + self.RECORDS], species[start:start + self.RECORDS]
            chords = _chords(centres, part)
            # (tile, record) pairs where the record's species partly reaches the tile and the record may reach it
            t, r = torch.nonzero(cut[:, part_species] & (chords <= margin + bounds[:, None] + 1e-12),
                                 as_tuple=True)
            for first in range(0, len(t), self.PAIRS):
                cells = members[t[first:first + self.PAIRS]]  # (pair, cell of its tile)
                # strictly within, as the trees' upper bound
                near = torch.linalg.vector_norm(pts[cells.clamp(min=0)] - part[r[first:first + self.PAIRS], None],
                                                dim=-1) < margin
                near &= cells >= 0
                pair, k = torch.nonzero(near, as_tuple=True)
                keep[part_species[r[first:first + self.PAIRS]][pair], cells[pair, k]] = True
        return keep


def _chords(a, b):
    """(len(a), len(b)) chords between two sets of unit vectors (torch, float64), by the difference of each pair,
    as the per-cell test computes them (the matrix-product form of ``torch.cdist`` rounds differently, and its
    direct form on CUDA is slow for 3-vectors)."""
    import torch

    return torch.linalg.vector_norm(a[:, None] - b[None], dim=-1)


def _outside(block: np.ndarray, xs: np.ndarray, ys: np.ndarray, crs, area: AccessibleArea
             ) -> list[tuple[int, np.ndarray]]:
    """(species, flat cell indices) of every presence of a block of presence codes (species, y, x; cell centres
    ``xs`` / ``ys`` in ``crs``) that lies outside its species' accessible area. Species whose accessible area holds
    every cell of the block that has a presence are passed at once (:meth:`AccessibleArea.decisions`), so most
    cost nothing; the others are looked up at their present cells only."""
    from pyproj import Transformer

    if not block.size or (block[0] == 255).all():  # no cell with data (sea): nothing to restrict
        return []
    flat = block.reshape(block.shape[0], -1)
    # only cells with a presence need the trees: codes are 0 / 1, or 255 in every species at a no-data cell, so
    # the largest code is 1 exactly where some species is present (2x faster than any() over a boolean copy)
    present = flat.max(axis=0) == 1
    if not present.any():
        return []
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xx.ravel()[present],
                                                                                 yy.ravel()[present])
    points, columns = unit_vectors(lon, lat), np.flatnonzero(present)
    # the index into ``points`` of every cell with a presence: a species' present cells are found in its whole
    # row, a contiguous pass (gathering the row at ``columns`` first was 3x slower on a tropical block)
    point_of_cell = np.full(flat.shape[1], -1, dtype="int64")
    point_of_cell[columns] = np.arange(len(columns))
    tiles, out = None, []
    for s in np.flatnonzero(area.decisions(points) != 1):
        where = point_of_cell[np.flatnonzero(flat[s] == 1)]
        if not len(where):
            continue
        if tiles is None:
            tiles = _tiles(points, *np.divmod(columns, len(xs)))
        outside = area.outside(s, points, where, tiles)
        if len(outside):
            out.append((int(s), columns[outside]))
    return out


def restrict_block_(block: np.ndarray, xs: np.ndarray, ys: np.ndarray, crs, area: AccessibleArea) -> np.ndarray:
    """In place: every presence of a block of presence codes (species, y, x; C-contiguous; cell centres ``xs`` /
    ``ys`` in ``crs``) outside its species' accessible area set to 0. For a block no one else holds (the one a
    prediction task has just made), where :func:`_restrict_block` would copy it."""
    flat = block.reshape(block.shape[0], -1, copy=False)  # a view: raises rather than copy a non-contiguous block
    for s, cells in _outside(block, xs, ys, crs, area):
        flat[s, cells] = 0
    return block


def _restrict_block(block: np.ndarray, x: np.ndarray, y: np.ndarray, crs, area: AccessibleArea,
                    block_info=None) -> np.ndarray:
    """A Dask block of presence codes (species, y, x) with every presence outside its species' accessible area set
    to 0 (:func:`_outside`; ``x`` / ``y`` the whole grid's cell centres). Returns the block itself when nothing
    changes, else a changed copy."""
    (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    outside = _outside(block, x[x0:x1], y[y0:y1], crs, area)
    if not outside:
        return block
    out = np.array(block)  # a C-contiguous copy
    flat = out.reshape(out.shape[0], -1)
    for s, cells in outside:
        flat[s, cells] = 0
    return out


TILE_CELLS = 32
"""Side (cells) of the tiles into which a block's cells are cut for the accessible area: a species undecided for
the whole block is decided tile by tile, and only the cells of tiles cut by its boundary are looked up one by
one (a 30 arc-second block of 432 cells is 360 km wide; the distance is hundreds of km)."""


def _tiles(points: np.ndarray, rows: np.ndarray, cols: np.ndarray, side: int = TILE_CELLS):
    """(tile of each point, each tile's centre (unit vector), each tile's bound: the largest chord from its centre
    to one of its points) of points at block ``rows`` / ``cols``."""
    key = (rows // side) * (int(cols.max()) // side + 1) + cols // side
    _, tile = np.unique(key, return_inverse=True)
    n = int(tile.max()) + 1
    centres = np.stack([np.bincount(tile, weights=points[:, k], minlength=n) for k in range(3)], axis=1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bounds = np.zeros(n)
    np.maximum.at(bounds, tile, np.sqrt(((points - centres[tile]) ** 2).sum(axis=1)))
    return tile, centres, bounds


def restrict_presence(presence: xr.DataArray, area: AccessibleArea | None) -> xr.DataArray:
    """Presence codes (uint8 ``species``, ``y``, ``x``: 1 present, 0 absent, 255 no data) with every presence
    outside its species' accessible area set to absent; lazy, chunked like ``presence``. ``area`` None: unchanged."""
    if area is None:
        return presence
    if presence.sizes["species"] != area.n_species:
        raise ValueError(f"presence has {presence.sizes['species']} species, the accessible area {area.n_species}")
    from pyproj import CRS

    data = presence.data if isinstance(presence.data, da.Array) else da.from_array(presence.values)
    data = data.rechunk({0: -1})
    crs = CRS.from_user_input(presence.rio.crs).to_wkt()
    restricted = da.map_blocks(_restrict_block, data, dtype="uint8", x=presence["x"].values, y=presence["y"].values,
                               crs=crs, area=area, meta=np.empty((0, 0, 0), "uint8"))
    out = presence.copy(data=restricted)
    out.attrs = dict(presence.attrs)
    out.attrs["accessible_area_km"] = round(area.distance_km, 1)
    out.attrs["long_name"] = (presence.attrs.get("long_name", "predicted presence")
                              + f", within {area.distance_km:.0f} km of the species' records")
    return out


def checkpoint_entry(lon, lat, species_index, distance_km: float, quantile: float, held_out_records: int) -> dict:
    """What the checkpoint stores (plain numbers and tensors, loadable with ``weights_only``)."""
    import torch

    return {"distance_km": float(distance_km), "quantile": float(quantile), "held_out_records": int(held_out_records),
            "lonlat": torch.as_tensor(np.c_[lon, lat], dtype=torch.float64),
            "species_index": torch.as_tensor(np.asarray(species_index), dtype=torch.int32)}

