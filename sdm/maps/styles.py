"""How each indicator is drawn: titles, units, colour scales (IUCN category colours for statuses) and RGBA images."""

from __future__ import annotations

import math

import numpy as np

from sdm.redlist import CATEGORIES, CATEGORY_CODE, LONG_NAMES, THREATENED

_THREATENED_TEXT = ", ".join(sorted(THREATENED, key=CATEGORY_CODE.__getitem__))

INDICATORS: dict[str, dict] = {
    "richness": {
        "title": "Species richness",
        "units": "number of species",
        "kind": "sequential",
    },
    "threatened_count": {
        "title": f"Threatened species ({_THREATENED_TEXT})",
        "units": "number of species",
        "kind": "sequential",
    },
    "threatened_share": {
        "title": f"Share of threatened species ({_THREATENED_TEXT})",
        "units": "proportion of the assemblage, 0-1",
        "kind": "sequential",
    },
    "most_threatened": {
        "title": "Status of the most threatened species",
        "units": "IUCN Red List category; raster code "
        + ", ".join(f"{code} = {cat}" for code, cat in enumerate(CATEGORIES)),
        "kind": "categorical",
    },
    "richness_change": {
        "title": "Change in species richness",
        "units": "number of species, future minus current",
        "kind": "diverging",
    },
    "threatened_count_change": {
        "title": f"Change in threatened species ({_THREATENED_TEXT})",
        "units": "number of species, future minus current",
        "kind": "diverging",
    },
    "threatened_share_change": {
        "title": f"Change in the share of threatened species ({_THREATENED_TEXT})",
        "units": "proportion of the assemblage, future minus current",
        "kind": "diverging",
    },
    "threatened_rise_agreement": {
        "title": f"Climate-model agreement: threatened species ({_THREATENED_TEXT}) rise",
        "units": "share of the ensemble's climate models (0-1) in which the cell's number of threatened species rises",
        "kind": "sequential",
        "caption": "Share of climate models in which threatened species rise",
        "range": (0.0, 1.0),
    },
    "richness_loss_agreement": {
        "title": "Climate-model agreement: species richness falls",
        "units": "share of the ensemble's climate models (0-1) in which the cell's species richness falls",
        "kind": "sequential",
        "caption": "Share of climate models in which richness falls",
        "range": (0.0, 1.0),
    },
    "threatened_unprotected": {
        "title": f"Protection gap: unprotected threatened species ({_THREATENED_TEXT})",
        "units": "number of threatened species x unprotected share of the cell",
        "kind": "sequential",
    },
    "mess": {
        "title": "Extrapolation: similarity to the training climate (MESS)",
        "units": "percent (MESS, Elith et al. 2010): 100 = typical training climate, 0 = at the edge of its range, "
        "< 0 = outside it on at least one variable",
        "kind": "diverging",
        "caption": "MESS: < 0 = climate outside the training range",
        "range": (-100.0, 100.0),
        "layers": "scenario",
    },
}
"""Indicator name -> ``title``, ``units`` (what one raster value means) and colour-scale ``kind``
(``sequential``, ``diverging`` centred on 0, or ``categorical`` with the ordinal codes of ``redlist.CATEGORIES``);
optionally ``caption`` (the legend's text instead of title and units), ``range`` (a fixed colour scale (min, max):
values beyond it take the end colours; the popups show them as they are) and ``layers: "scenario"`` (a property of
the climate, not of the assemblage: one layer per scenario instead of one per run, as every dispersal assumption
of a scenario shares it)."""

IUCN_COLOURS: dict[str, str] = {"LC": "#60C659", "NT": "#CCE226", "VU": "#F9E814", "EN": "#FC7F3F", "CR": "#D81E05"}
"""Official IUCN Red List category colours."""
if set(IUCN_COLOURS) != set(CATEGORIES):
    raise ImportError(f"sdm.maps.IUCN_COLOURS {sorted(IUCN_COLOURS)} do not match sdm.redlist.CATEGORIES {CATEGORIES}")

CATEGORY_NAMES: dict[str, str] = {
    code: name.title() for name, code in LONG_NAMES.items() if "/" not in name and code in CATEGORIES
}
"""Category code -> display name ("EN" -> "Endangered"), derived from ``redlist.LONG_NAMES``."""

# Colour stops (low -> high). Viridis for richness; ColorBrewer YlOrRd for threat; RdBu for change, oriented so
# that red always means "worse" (fewer species, more threatened species).
_VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
            "#fde725"]
_YLORRD = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"]
_RDBU = ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de", "#4393c3",
         "#2166ac", "#053061"]
PALETTES = {
    "richness": _VIRIDIS,
    "threatened_count": _YLORRD,
    "threatened_share": _YLORRD,
    "richness_change": _RDBU,
    "threatened_count_change": _RDBU[::-1],
    "threatened_share_change": _RDBU[::-1],
    "threatened_rise_agreement": _YLORRD,
    "richness_loss_agreement": _YLORRD,
    "threatened_unprotected": _YLORRD,
    "mess": _RDBU,  # red: outside the training climate, blue: well inside it
}
DECIMALS = {"threatened_share": 3, "threatened_share_change": 3, "mess": 1}  # popup rounding; counts get 2

OPACITY = 0.9


def nice_step(span: float, n: int = 5) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def scale_range(indicator: str, grids: list[np.ndarray]) -> tuple[float, float, list[float]]:
    """(vmin, vmax, tick values) of the colour scale shared by all layers of one map."""
    finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids]) if grids else np.array([])
    kind = INDICATORS[indicator]["kind"]
    if "range" in INDICATORS[indicator]:  # fixed, so that maps of different runs read the same
        vmin, vmax = (float(v) for v in INDICATORS[indicator]["range"])
        step = nice_step(vmax - vmin, 4)
    elif kind == "diverging":
        # 99th percentile so that a few extreme cells do not wash out the rest; beyond it the end colours saturate
        top = float(np.percentile(np.abs(finite), 99)) if finite.size else 0.0
        step = nice_step(top, 3) if top > 0 else 1.0
        vmax = step * math.ceil(top / step) if top > 0 else 1.0
        vmin = -vmax
    else:
        top = float(finite.max()) if finite.size else 0.0
        vmin = 0.0
        step = nice_step(top, 5) if top > 0 else 1.0
        vmax = step * math.ceil(top / step) if top > 0 else 1.0
        if indicator == "threatened_share":
            vmax = min(vmax, 1.0)
            step = nice_step(vmax, 5)
    ticks = [round(float(v), 10) for v in np.arange(vmin, vmax + step / 2, step)]
    return vmin, vmax, ticks


def colourise(values: np.ndarray, indicator: str, vmin: float, vmax: float) -> np.ndarray:
    """RGBA uint8 ``(y, x, 4)`` image of ``values``; NaN (and unknown categories) fully transparent."""
    rgba = np.zeros(values.shape + (4,), dtype=np.uint8)
    finite = np.isfinite(values)
    if INDICATORS[indicator]["kind"] == "categorical":
        codes = np.where(finite, np.rint(np.where(finite, values, -1)), -1).astype(int)
        for code, cat in enumerate(CATEGORIES):
            rgba[codes == code] = (*hex_rgb(IUCN_COLOURS[cat]), 255)
        return rgba
    stops = np.array([hex_rgb(c) for c in PALETTES[indicator]], dtype=float)
    pos = np.linspace(0.0, 1.0, len(stops))
    t = np.clip((np.where(finite, values, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    for ch in range(3):
        rgba[..., ch] = np.rint(np.interp(t, pos, stops[:, ch])).astype(np.uint8)
    rgba[..., 3] = np.where(finite, 255, 0)
    return rgba


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)

