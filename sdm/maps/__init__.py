"""Offline maps of a run: one module per page over a small shared layer.

- :mod:`sdm.maps.assets`: local Leaflet / jQuery / d3 copies, atomic writes, offline checks, the error probe, the
  view kept in the URL hash.
- :mod:`sdm.maps.styles`: titles, units and colour scales of the indicators; IUCN category colours.
- :mod:`sdm.maps.display`: rasters on the Web Mercator display grid.
- :mod:`sdm.maps.indicator`: one interactive map per indicator, a layer per run.
- :mod:`sdm.maps.index`: the index page with the run's metrics and config.
- :mod:`sdm.maps.site`: every page of a run's ``maps`` folder.
"""

from sdm.maps.assets import copy_assets
from sdm.maps.index import index_page, run_metrics
from sdm.maps.indicator import indicator_map
from sdm.maps.site import layers_from_paths, render_maps
from sdm.maps.styles import CATEGORY_NAMES, INDICATORS, IUCN_COLOURS

__all__ = ["CATEGORY_NAMES", "INDICATORS", "IUCN_COLOURS", "copy_assets", "index_page", "indicator_map",
           "layers_from_paths", "render_maps", "run_metrics"]
