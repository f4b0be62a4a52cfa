"""The stored suitability scale (sdm.codes): logit-spaced uint8 codes, their decoding table and thresholds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sdm.codes import (
    ATTRS,
    CODES_PER_LOGIT,
    HIGH,
    LOW,
    NODATA,
    PROBABILITY,
    STEP,
    TOP,
    decode,
    encode,
    encode_logits,
    threshold_codes,
)

ALL_CODES = np.arange(256, dtype="uint8")


def _logit(p):
    p = np.asarray(p, dtype="float64")
    return np.log(p) - np.log1p(-p)


def test_the_scale_constants_agree():
    assert (NODATA, TOP) == (255, 254)
    assert HIGH == pytest.approx(LOW + TOP * STEP) and CODES_PER_LOGIT * STEP == pytest.approx(1)
    assert np.float32(LOW) == LOW and np.float32(CODES_PER_LOGIT) == CODES_PER_LOGIT  # exact in the float32 path
    assert ATTRS["encoding"] == "logit" and (ATTRS["logit_low"], ATTRS["logit_high"]) == (LOW, HIGH)
    assert ATTRS["nodata"] == NODATA


def test_edges_and_no_data():
    codes = encode(np.array([0.0, 1.0, np.nan, 0.5, -0.1, 1.3, 1e-12, 1 - 1e-9]))
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, [0, 254, 255, 160, 0, 254, 0, 254])  # 0.5 is logit 0: (0 + 16) x 10
    np.testing.assert_array_equal(encode_logits([-np.inf, np.inf, np.nan, 0.0, -16.0, 9.4, -100.0, 100.0]),
                                  [0, 254, 255, 160, 0, 254, 0, 254])


def test_round_trip():
    # every code decodes to a probability that encodes back to it; no data stays no data
    np.testing.assert_array_equal(encode(decode(ALL_CODES)), ALL_CODES)
    # every probability in the scale's range decodes within half a code (in logit) of where it was
    p = 1 / (1 + np.exp(-np.linspace(LOW, HIGH, 20_001)))
    moved = np.abs(_logit(decode(encode(p))) - _logit(p))
    assert moved.max() <= STEP / 2 + 1e-4  # float32 decoding table: 1e-4 logit at most near the top
    # so the largest move in probability is half a code at p = 0.5
    assert np.abs(decode(encode(p)) - p).max() <= STEP / 8 + 1e-6


def test_codes_are_monotonic_and_the_table_strictly_increasing():
    p = np.sort(np.random.default_rng(0).random(100_000) ** 8)  # many small values
    assert (np.diff(encode(p).astype(int)) >= 0).all()
    assert (np.diff(PROBABILITY[:TOP + 1]) > 0).all()  # float32 keeps every code distinct, top end included
    assert 0 < PROBABILITY[0] < 1e-6 and 1 - 1e-4 < PROBABILITY[TOP] < 1


def test_rank_is_kept_at_the_low_end():
    probabilities = np.array([1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1.1e-2])
    codes = encode(probabilities).astype(int)
    assert (np.diff(codes) > 0).all(), codes  # distinct and increasing, 1e-2 and 1.1e-2 included (10 % apart)
    assert (np.rint(probabilities[:5] * 254) == 0).all()  # what the former linear codes made of them


def test_decode_is_the_table_lookup_of_the_arithmetic_decoding():
    expected = (1 / (1 + np.exp(-(LOW + STEP * np.arange(TOP + 1))))).astype("float32")
    table = decode(ALL_CODES)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table[:TOP + 1], expected)
    assert np.isnan(table[NODATA])
    codes = np.random.default_rng(1).integers(0, 256, size=(3, 7, 5)).astype("uint8")
    np.testing.assert_array_equal(decode(codes), table[codes])  # any shape


def test_encode_from_probabilities_and_from_logits_agree():
    logits = np.random.default_rng(2).normal(-5, 6, 50_000).astype("float32")
    from_logits = encode_logits(logits)
    from_probabilities = encode(1 / (1 + np.exp(-logits.astype("float64"))))
    diff = np.abs(from_logits.astype(int) - from_probabilities.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # a float32 rounding at a half code, rarely


def test_threshold_code_is_the_first_code_decoding_at_or_above_the_threshold():
    thresholds = np.r_[0.0, 1e-9, PROBABILITY[:TOP + 1], np.random.default_rng(3).random(500) ** 4, 0.99995, 1.0]
    codes = threshold_codes(thresholds)
    assert codes.dtype == np.int16 and codes.min() >= 0 and codes.max() <= TOP
    for t, c in zip(thresholds, codes):
        present = ALL_CODES[:TOP + 1] >= c
        if t <= PROBABILITY[TOP]:
            # counted present exactly where the decoded suitability reaches the threshold
            np.testing.assert_array_equal(present, PROBABILITY[:TOP + 1] >= t)
        else:  # above the scale: the top code, like encode clips such probabilities to it
            assert c == TOP
    np.testing.assert_array_equal(threshold_codes(PROBABILITY[:TOP + 1]), np.arange(TOP + 1))
    assert threshold_codes(np.nan) == threshold_codes(0.5) == 160


def test_threshold_on_codes_matches_the_threshold_on_probabilities_but_within_half_a_code():
    rng = np.random.default_rng(4)
    p = 1 / (1 + np.exp(-rng.normal(-3, 4, 200_000)))
    for t in (1e-4, 0.05, 0.3, 0.5, 0.9):
        on_codes = encode(p) >= threshold_codes(t)
        disagree = on_codes != (p >= t)
        # only probabilities near the threshold move across it: within one code of logit
        assert (np.abs(_logit(p[disagree]) - _logit(t)) <= STEP).all()
        assert disagree.mean() < 0.01


def test_the_module_imports_nothing_from_sdm():
    done = subprocess.run([sys.executable, "-c", "import sys, sdm.codes; "
                           "print(sorted(m for m in sys.modules if m.startswith('sdm')))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['sdm', 'sdm.codes']"
