"""The deep species distribution model: a residual MLP over a cell's standardised climate, one output per species.

The model is a plain ``nn.Module``; the checkpoint holds everything needed to predict (species, variables,
normalisation, per-species thresholds, hyper-parameters) so that a cube and the checkpoint are enough.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(width, width),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return x + self.body(x)


class InputEncoder(nn.Sequential):
    """The shared feature layers, behind a clamp of the standardised inputs to the range seen in training.

    MaxEnt clamps its features to the training range; a ReLU network instead extrapolates linearly outside it (an
    ice cap colder than any training cell would get ever more extreme logits). ``low`` / ``high`` (standardised
    units, one per input) are set by the trainer from the training rows; +-inf (the default) clamps nothing, so a
    model built by hand or loaded from an older checkpoint behaves as before. ``quadratic`` appends the squares of
    the clamped inputs.
    """

    def __init__(self, n_inputs: int, quadratic: bool, *layers: nn.Module):
        super().__init__(*layers)
        self.quadratic = bool(quadratic)
        self.register_buffer("low", torch.full((n_inputs,), -torch.inf))
        self.register_buffer("high", torch.full((n_inputs,), torch.inf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.minimum(torch.maximum(x, self.low), self.high)
        if self.quadratic:
            x = torch.cat([x, x * x], dim=1)
        return super().forward(x)


class AdditiveFeatures(nn.Module):
    """Features of an additive model: each input through its own small ReLU network (1 -> ``units`` -> ``units``),
    the features of all inputs side by side, (batch, inputs x units). A linear head over them gives each species a
    sum of one response curve per input and no interactions: the family of MaxEnt's linear, quadratic and hinge
    features (products left out, as MaxEnt leaves them out for small samples), with learned knots shared by all
    species. The first layer's biases spread the knots over about +-2 standard deviations."""

    def __init__(self, n_inputs: int, units: int, dropout: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_inputs, units))
        self.b1 = nn.Parameter(torch.empty(n_inputs, units).uniform_(-2.0, 2.0))
        self.w2 = nn.Parameter(torch.randn(n_inputs, units, units) / units ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(n_inputs, units))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x[:, :, None] * self.w1 + self.b1)  # (batch, inputs, units)
        h = torch.relu(torch.einsum("biu,iuk->bik", self.dropout(h), self.w2) + self.b2)
        return h.reshape(len(x), -1)


class ResidualMLP(nn.Module):
    """Multi-species SDM on a cell's input vector (as in SINR, Cole et al. 2023): logits (batch, species).

    ``quadratic`` appends the squares of the (standardised) inputs, so that a unimodal niche is one linear unit
    away (MaxEnt's quadratic features); it matters when records are few. ``members`` > 1 makes the module a deep
    ensemble: that many independently initialised networks whose logits are averaged (:meth:`member_logits` gives
    them one by one for training). Inputs are clamped to the training range first (:class:`InputEncoder`).
    ``additive`` > 0 replaces the residual trunk by :class:`AdditiveFeatures` with that many units per input
    (``hidden`` and ``blocks`` then unused): one smooth response curve per input and species, no interactions.
    """

    def __init__(self, n_inputs: int, n_species: int, hidden: int = 128, blocks: int = 2, dropout: float = 0.1,
                 quadratic: bool = False, members: int = 1, additive: int = 0):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if additive < 0:
            raise ValueError(f"additive must be >= 0, got {additive}")
        self.hparams = {"n_inputs": n_inputs, "n_species": n_species, "hidden": hidden, "blocks": blocks,
                        "dropout": dropout, "quadratic": bool(quadratic), "members": int(members),
                        "additive": int(additive)}
        if members > 1:
            self.members = nn.ModuleList(
                ResidualMLP(n_inputs, n_species, hidden, blocks, dropout, quadratic, additive=additive)
                for _ in range(members)
            )
            return
        self.members = None
        width_in = 2 * n_inputs if quadratic else n_inputs
        if additive:
            self.encoder = InputEncoder(n_inputs, quadratic, AdditiveFeatures(width_in, additive, dropout))
            self.head = nn.Linear(width_in * additive, n_species)
            return
        self.encoder = InputEncoder(
            n_inputs, quadratic, nn.Linear(width_in, hidden), nn.ReLU(inplace=True),
            *[ResidualBlock(hidden, dropout) for _ in range(blocks)],
        )
        self.head = nn.Linear(hidden, n_species)

    def networks(self) -> list[ResidualMLP]:
        """The single networks: the members of an ensemble, or the module itself."""
        return list(self.members) if self.members is not None else [self]

    def set_input_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """Clamp the (standardised) inputs of every member to [low, high] (one value per input)."""
        for net in self.networks():
            net.encoder.low.copy_(torch.as_tensor(low, dtype=torch.float32))
            net.encoder.high.copy_(torch.as_tensor(high, dtype=torch.float32))

    def shift_logits(self, shift: torch.Tensor) -> None:
        """Add ``shift`` (one value per species) to the output logits (the head biases of every member)."""
        with torch.no_grad():
            for net in self.networks():
                net.head.bias.add_(torch.as_tensor(shift, dtype=net.head.bias.dtype, device=net.head.bias.device))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, (members, batch, species)."""
        if self.members is not None:
            return torch.stack([m(x) for m in self.members])
        return self.head(self.encoder(x))[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(dim=0)


COORDINATE_PREFIX = "coord_"


def coordinate_layers(cube, harmonics: int):
    """Location inputs for a cube's cells: (``variable``, ``y``, ``x``) float32 layers named ``coord_{sin|cos}{j}_
    {lon|lat}`` with sin / cos of j x pi x longitude / 180 and of j x pi x latitude / 90 for j = 1..``harmonics``
    (the wrap-around encoding of SINR, Cole et al. 2023, in several frequencies; WGS84 degrees from the cube's CRS).

    They let a multi-species model learn where a species lives, not only its climate; appended to the climate
    variables they are ordinary inputs, standardised and listed in the checkpoint like the others.
    """
    import xarray as xr

    xx, yy = np.meshgrid(cube["x"].values, cube["y"].values)
    values, names = coordinate_values(xx.ravel(), yy.ravel(), cube, harmonics)
    out = xr.DataArray(values.T.reshape(len(names), *xx.shape), dims=("variable", "y", "x"),
                       coords={"variable": names, "y": cube["y"].values, "x": cube["x"].values})
    return out.rio.write_crs(cube.rio.crs) if cube.rio.crs is not None else out


def coordinate_values(x, y, grid, harmonics: int) -> tuple[np.ndarray, list[str]]:
    """The :func:`coordinate_layers` of single cells: (cells, 4 x ``harmonics``) float32 at grid-CRS coordinates
    ``x``, ``y`` (cell centres of ``grid``), and the layers' names."""
    from sdm.grid import cells_to_lonlat

    lon, lat = cells_to_lonlat(x, y, grid)
    columns, names = [], []
    for j in range(1, harmonics + 1):
        for name, angle in (("lon", np.pi * lon / 180), ("lat", np.pi * lat / 90)):
            for fn in ("sin", "cos"):
                columns.append(getattr(np, fn)(j * angle))
                names.append(f"{COORDINATE_PREFIX}{fn}{j}_{name}")
    values = np.stack(columns, axis=1).astype("float32") if columns else np.zeros((len(lon), 0), "float32")
    return values, names


def with_coordinate_layers(cube, variables: list[str]):
    """``cube`` with the location layers that a model's ``variables`` name (``coord_...``) appended; unchanged when
    it names none. Prediction calls this so that a checkpoint trained with coordinates gets them on any grid."""
    import xarray as xr

    wanted = [v for v in variables if str(v).startswith(COORDINATE_PREFIX)]
    have = [str(v) for v in cube["variable"].values]
    if not wanted or all(v in have for v in wanted):
        return cube
    harmonics = max(int(v[len(COORDINATE_PREFIX) + 3:].split("_")[0]) for v in wanted)
    layers = coordinate_layers(cube, harmonics).sel(variable=wanted)
    if cube.chunks is not None:
        layers = layers.chunk({"y": cube.chunks[cube.dims.index("y")], "x": cube.chunks[cube.dims.index("x")]})
    return xr.concat([cube, layers.astype(cube.dtype)], dim="variable", join="override",
                     combine_attrs="drop_conflicts")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU raises instead of silently using the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("sdm.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)


def standardise(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(cells, variables) climate -> float32 z-scores with the training statistics."""
    return ((values - mean) / std).astype("float32", copy=False)


def save_checkpoint(path: str | Path, model: ResidualMLP, *, species: list[str], variables: list[str],
                    mean: np.ndarray, std: np.ndarray, thresholds: np.ndarray, config: dict,
                    reference: np.ndarray | None = None, accessible: dict | None = None,
                    categories: dict | None = None) -> None:
    """Write the model with everything needed to predict (tensors on CPU, plain Python otherwise).

    ``reference``: (variables, 101) percentiles 0..100 of the training climate in raw units (the reference
    distribution of MESS extrapolation layers; see ``sdm.train.reference_quantiles``). ``accessible``: the record
    locations and distance of each species' accessible area (``sdm.accessible.checkpoint_entry``), or None.
    ``categories``: class layer -> the classes seen in training (MESS scores any other class as novel), or None."""
    torch.save({
        "hparams": model.hparams,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "species": list(species),
        "variables": list(variables),
        "mean": np.asarray(mean, dtype="float64").tolist(),
        "std": np.asarray(std, dtype="float64").tolist(),
        "thresholds": np.asarray(thresholds, dtype="float64").tolist(),
        "config": config,
        "reference_quantiles": None if reference is None else np.asarray(reference, dtype="float64").tolist(),
        "accessible": accessible,
        **({"categories": categories} if categories else {}),
    }, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ResidualMLP, dict]:
    """The model (eval mode, on ``device``) and the checkpoint dict (species, variables, mean, std, thresholds)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = ResidualMLP(**checkpoint["hparams"])
    # checkpoints written before the input clamp lack its bounds: they keep the +-inf defaults (no clamp)
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if unexpected or any(not key.endswith(("encoder.low", "encoder.high")) for key in missing):
        raise ValueError(f"{path}: checkpoint does not match its model (missing {missing}, unexpected {unexpected})")
    model.to(device).eval()
    checkpoint["mean"] = np.asarray(checkpoint["mean"])
    checkpoint["std"] = np.asarray(checkpoint["std"])
    checkpoint["thresholds"] = np.asarray(checkpoint["thresholds"])
    return model, checkpoint
