"""sdm: species occurrences and climate rasters to maps of extinction risk.

Modules are named after what they hold: ``grid``, ``occurrences``, ``climate``, ``redlist``, ``model``,
``train``, ``codes`` (the stored suitability scale), ``predict``, ``assemblage``, ``features``, ``status``,
``indicators``, ``maps``, ``demo``.
"""

__version__ = "0.1.0"

import warnings

# Snakemake drops a timestamp file into directory outputs such as our Zarr stores; zarr warns about it on open.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")


def __getattr__(name):
    # DeepSDM pulls in torch: import it on first use, not with every ``import sdm``
    if name == "DeepSDM":
        from sdm.estimator import DeepSDM
        return DeepSDM
    raise AttributeError(f"module 'sdm' has no attribute '{name}'")
