"""The stored suitability scale: one uint8 code per species and cell, evenly spaced in logit(probability).

``code = round((logit(p) - LOW) / STEP)``, clipped to 0..``TOP`` (254); ``NODATA`` (255) where there is no data.
A code decodes to the probability at its centre, ``sigmoid(LOW + code * STEP)``, by one lookup in
:data:`PROBABILITY`.

Why a logit scale: a presence-only SDM calibrated to a species' prevalence on a kilometre grid gives most cells
probabilities of 1e-6..1e-2, presences included. The former linear codes (probability x 254) put every p < 0.002
on code 0, so held-out presences tied with most background cells and the AUC from stored predictions fell (demo
world, a model with its output bias lowered by 6: held-out mean AUC 0.888 from the floats, 0.809 from linear codes,
0.888 from these; ``tests/test_predict.py``). Even steps in logit keep relative differences everywhere instead.

Why LOW = -16 and STEP = 0.1 (HIGH = LOW + 254 x STEP = 9.4):

- 0.1 logit per code: a code's width is a ~10 % ratio of odds (half a code, the most a value moves, ~5 %) at every
  level; at p = 0.5 that is +-0.0125 in probability (the linear codes had +-0.002 there: the price of the range);
- code 0 holds p < sigmoid(-15.95) ~ 1.2e-7, where cells are certain absences for any species whose presences
  score above it (a 1e7-cell grid at that level expects ~1 presence); code 254 holds p > 1 - 8.7e-5;
- LOW and STEP are exact in float32 and the scale reads without a calculator: logit(p) = code / 10 - 16.

Thresholds keep their meaning: a probability threshold ``t`` is the smallest code whose decoded probability is
>= ``t`` (:func:`threshold_codes`), so "code >= threshold code" is exactly "decoded suitability >= t"; a cell whose
probability lies within half a code of ``t`` may fall either side, as with any rounding.

This module imports nothing from ``sdm``: :mod:`sdm.predict`, :mod:`sdm.assemblage` and :mod:`sdm.evaluate`
import it.
"""

from __future__ import annotations

import numpy as np

NODATA = 255
TOP = 254  # the largest data code
LOW = -16.0  # logit at the centre of code 0
STEP = 0.1  # logit units per code
HIGH = LOW + TOP * STEP  # 9.4: logit at the centre of code 254
CODES_PER_LOGIT = 10.0  # 1 / STEP, exact in float32: encoders multiply by it (x / 0.1 is not x * 10 in floats)

# float32 probability at the centre of each code, NaN for no data: decode is one lookup in it
PROBABILITY = np.append(1.0 / (1.0 + np.exp(-(LOW + STEP * np.arange(TOP + 1)))), np.nan).astype("float32")

# Zarr / netCDF attributes of a stored suitability variable: what the numbers mean, for QGIS and xarray users
# (not CF scale_factor / add_offset, which readers would apply on opening and turn the codes into logits)
ATTRS = {
    "long_name": "habitat suitability",
    "units": f"code: logit(probability) = {LOW:g} + {STEP:g} x code; {NODATA} = no data",
    "encoding": "logit",
    "logit_low": LOW,
    "logit_high": HIGH,
    "logit_step": STEP,
    "code_max": TOP,
    "nodata": NODATA,
    "decoding": f"probability = 1 / (1 + exp(-({LOW:g} + {STEP:g} * code)))",
}


def encode_logits(logits) -> np.ndarray:
    """Logits (float, NaN = no data) -> uint8 codes (0..254, 255 = no data), rounding half to even.

    Computed in float32, step by step as the predict stage's torch path does on its logits (``(logit - LOW) *
    CODES_PER_LOGIT``, clamp, round), so both give the same codes bit for bit.
    """
    x = np.array(logits, dtype="float32")  # a copy, worked on in place
    nodata = np.isnan(x)
    x -= np.float32(LOW)
    x *= np.float32(CODES_PER_LOGIT)
    np.clip(x, 0, TOP, out=x)  # +-inf land on the end codes
    np.rint(x, out=x)
    with np.errstate(invalid="ignore"):  # NaN casts to an arbitrary code, overwritten just below
        codes = x.astype("uint8")
    codes[nodata] = NODATA
    return codes


def encode(probability) -> np.ndarray:
    """Probabilities (NaN = no data; values outside [0, 1] are clipped) -> uint8 codes (0..254, 255 = no data)."""
    p = np.clip(np.asarray(probability, dtype="float64"), 0.0, 1.0)
    with np.errstate(divide="ignore"):  # p = 0 or 1: logit -inf / +inf, i.e. code 0 / 254
        logits = np.log(p) - np.log1p(-p)
    return encode_logits(logits)


def decode(codes) -> np.ndarray:
    """uint8 codes -> float32 probabilities at the codes' centres (NaN for no data): one table lookup."""
    return PROBABILITY[codes]


def threshold_codes(thresholds) -> np.ndarray:
    """Probability thresholds -> the smallest code counted as present: the first whose decoded probability is >= the
    threshold (int16, 0..254).

    So ``code >= threshold_codes(t)`` is ``decode(code) >= t``. A threshold at or below code 0's probability keeps
    every valid cell; one above code 254's (e.g. 1.0) keeps code 254, the cells encoded as at least 1 - 8.7e-5. A
    missing (NaN) threshold is 0.5.
    """
    thresholds = np.nan_to_num(np.asarray(thresholds, dtype="float64"), nan=0.5)
    return np.minimum(np.searchsorted(PROBABILITY[:TOP + 1], thresholds, side="left"), TOP).astype("int16")
