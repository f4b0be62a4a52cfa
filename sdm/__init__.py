"""sdm: species occurrences and climate rasters to maps of extinction risk.

Modules are named after what they hold: ``grid``, ``occurrences``, ``climate``, ``redlist``, ``model``,
``train``, ``predict``, ``assemblage``, ``features``, ``status``, ``indicators``, ``maps``, ``demo``.
"""

__version__ = "0.1.0"
