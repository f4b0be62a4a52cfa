"""Presence as bits: the packing's definition, the per-cell counts, and the round trip."""

from __future__ import annotations

import numpy as np
import pytest

from sdm.packed import (WORD_DTYPE, any_present, count_present, n_words, pack_presence, species_words,
                        unpack_presence)


@pytest.mark.parametrize("n_species", [1, 7, 8, 63, 64, 65, 130])
@pytest.mark.parametrize("cells", [(1,), (5,), (3, 7), (16, 16), (9, 13)])
def test_bit_i_of_word_w_is_species_64w_plus_i(n_species, cells):
    rng = np.random.default_rng(n_species * 100 + len(cells))
    presence = rng.random((n_species, *cells)) < 0.3
    bits = pack_presence(presence)
    assert bits.shape == (n_words(n_species), *cells) and bits.dtype == WORD_DTYPE
    flat, words = presence.reshape(n_species, -1), bits.reshape(len(bits), -1)
    expected = np.zeros_like(words)
    for species, cell in zip(*np.nonzero(flat)):
        expected[species // 64, cell] |= np.uint64(1) << np.uint64(species % 64)
    np.testing.assert_array_equal(words, expected)  # the bits past the last species are 0
    np.testing.assert_array_equal(unpack_presence(bits, n_species), presence)


def test_counts_and_any_are_those_of_the_booleans():
    rng = np.random.default_rng(3)
    presence = rng.random((200, 24, 17)) < 0.05
    selected = rng.random(200) < 0.4
    bits, mask = pack_presence(presence), species_words(selected)
    np.testing.assert_array_equal(count_present(bits), presence.sum(axis=0))
    np.testing.assert_array_equal(count_present(bits, mask), presence[selected].sum(axis=0))
    np.testing.assert_array_equal(any_present(bits, mask), presence[selected].any(axis=0))
    assert count_present(bits).dtype == np.int32
    # no dispersal is the future inside the present: the same on bits as on booleans
    future = rng.random(presence.shape) < 0.05
    np.testing.assert_array_equal(unpack_presence(pack_presence(future) & bits, 200), future & presence)


def test_only_booleans_are_packed():
    with pytest.raises(TypeError, match="bool"):
        pack_presence(np.ones((3, 4), dtype="uint8"))
