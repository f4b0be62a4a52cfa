"""The accessible area: distances, the distance chosen on training data, and presence restricted to it."""
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from sdm.accessible import (AccessibleArea, EARTH_RADIUS_KM, chord, dispersal_distance_km, great_circle_km, unit_vectors,
                            held_out_distances_km, restrict_presence)


def test_chord_round_trip_and_known_distance():
    assert great_circle_km(chord(1234.5)) == pytest.approx(1234.5)
    # one degree of a great circle on the mean sphere
    area = AccessibleArea([0.0], [0.0], [0], 1, distance_km=np.pi * EARTH_RADIUS_KM / 180 * 1.001)
    assert area.contains([1.0, 0.0, 0.0], [0.0, 1.0, -1.002]).tolist() == [[True, True, False]]


def test_contains_across_the_antimeridian_and_per_species():
    area = AccessibleArea([179.9, 10.0], [0.0, 50.0], [0, 1], 3, distance_km=100)
    inside = area.contains([-179.9, 10.5, 179.9], [0.0, 50.0, 0.0])
    assert inside[0].tolist() == [True, False, True]  # 22 km across the antimeridian
    assert inside[1].tolist() == [False, True, False]  # 36 km east of its record at 50 N
    assert not inside[2].any()  # a species without records has no accessible cell


def test_held_out_distances_pair_records_of_the_same_species_only():
    lon = np.array([0.0, 1.0, 50.0, 2.0])
    lat = np.zeros(4)
    species = np.array([0, 0, 1, 1])
    split = np.array([0, 1, 1, 0])
    distances = held_out_distances_km(lon, lat, species, split)
    one_degree = np.pi * EARTH_RADIUS_KM / 180
    assert sorted(distances) == pytest.approx([one_degree, 48 * one_degree])
    distance, n = dispersal_distance_km(lon, lat, species, split, quantile=0.5)
    assert n == 2 and distance == pytest.approx(24.5 * one_degree)
    assert dispersal_distance_km(lon[:1], lat[:1], species[:1], split[:1]) == (None, 0)


def test_bad_distance_is_refused():
    with pytest.raises(ValueError, match="positive number of km"):
        AccessibleArea([0.0], [0.0], [0], 1, distance_km=0)


def _presence(codes):
    x = np.arange(4, dtype="float64") * 10 + 5  # lon 5..35
    y = np.array([5.0, -5.0])
    out = xr.DataArray(np.asarray(codes, dtype="uint8"), dims=("species", "y", "x"),
                       coords={"species": ["a", "b"], "y": y, "x": x})
    return out.rio.write_crs("EPSG:4326").chunk({"species": 1, "y": 1, "x": 2})


def test_restrict_presence_keeps_presence_near_records_and_no_data():
    codes = np.ones((2, 2, 4), dtype="uint8")
    codes[:, 1, 3] = 255
    codes[1, 0, 0] = 0
    area = AccessibleArea([5.0, 35.0], [5.0, -5.0], [0, 1], 2, distance_km=1600)
    restricted = restrict_presence(_presence(codes), area)
    assert restricted.chunks == ((2,), (1, 1), (2, 2))
    got = restricted.values
    # species a: within 1,600 km of (5, 5): lon 5 and 15 (both rows, 1,570 km at most); lon 25 is 2,200 km away
    assert got[0, :, 0].tolist() == [1, 1] and got[0, :, 1].tolist() == [1, 1]
    assert got[0, 0, 2:].tolist() == [0, 0]
    assert got[:, 1, 3].tolist() == [255, 255]  # no data stays no data
    assert got[1, 0, 0] == 0 and got[1, 0, 3] == 1 and got[1, 0, 1] == 0
    assert restricted.attrs["accessible_area_km"] == 1600
    assert restrict_presence(_presence(codes), None).values.tolist() == codes.tolist()


def test_restrict_presence_in_a_projected_crs():
    presence = _presence(np.ones((2, 2, 4))).rio.write_crs("EPSG:4326")
    projected = presence.copy()
    projected["x"], projected["y"] = presence["x"] * 111_319.49, presence["y"] * 110_574.0
    projected = projected.rio.write_crs("EPSG:3857")  # the same places, near the equator
    area = AccessibleArea([5.0], [5.0], [0], 2, distance_km=1200)
    assert (restrict_presence(projected, area).values == restrict_presence(presence, area).values).all()


def test_contains_with_the_bounding_sphere_equals_cell_by_cell():
    """The shortcut (whole blocks decided from their centre) gives what a lookup of every cell gives."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(4)
    records_lon, records_lat = rng.uniform(-20, 40, 60), rng.uniform(-30, 30, 60)
    species = rng.integers(0, 4, 60)
    area = AccessibleArea(records_lon, records_lat, species, 5, 700.0)  # species 4 has no records
    for lon0, lat0, size in ((10.0, 0.0, 2.0), (10.0, 0.0, 30.0), (120.0, 60.0, 5.0), (-19.0, -29.0, 1.0)):
        lon, lat = np.meshgrid(np.linspace(lon0, lon0 + size, 25), np.linspace(lat0, lat0 + size, 20))
        fast = area.contains(lon.ravel(), lat.ravel())
        cells = unit_vectors(lon.ravel(), lat.ravel())
        for s in range(5):
            mine = species == s
            if not mine.any():
                assert not fast[s].any()
                continue
            nearest = cKDTree(unit_vectors(records_lon[mine], records_lat[mine])).query(cells)[0]
            np.testing.assert_array_equal(fast[s], nearest <= chord(700.0) * (1 + 1e-12))
        wanted = np.random.default_rng(1).random(fast.shape) < 0.3
        np.testing.assert_array_equal(area.contains(lon.ravel(), lat.ravel(), wanted=wanted), fast & wanted)


def test_restrict_block_in_place_equals_the_copying_restriction_and_refuses_a_strided_block():
    """The prediction task's in-place restriction gives the codes of :func:`restrict_presence` in the task's own
    array; a block it cannot change in place (not contiguous) is an error, not a silently lost write."""
    from sdm.accessible import restrict_block_

    codes = np.ones((2, 2, 4), dtype="uint8")
    codes[:, 1, 3] = 255
    area = AccessibleArea([5.0, 35.0], [5.0, -5.0], [0, 1], 2, distance_km=1600)
    expected = restrict_presence(_presence(codes), area).values
    block = codes.copy()
    out = restrict_block_(block, np.arange(4) * 10 + 5.0, np.array([5.0, -5.0]), "EPSG:4326", area)
    assert out is block and block.tolist() == expected.tolist() and (block != codes).any()
    with pytest.raises(ValueError, match="copy"):
        restrict_block_(np.ones((2, 2, 8), "uint8")[:, :, :4], np.arange(4) * 10 + 5.0, np.array([5.0, -5.0]),
                        "EPSG:4326", area)
