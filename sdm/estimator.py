"""``DeepSDM``: the joint deep SDM as a scikit-learn-style estimator over tables of covariates at points.

For ecologists whose covariates are already extracted at presence and background points (as with elapid):

    model = DeepSDM(random_state=0).fit(X, y)      # y: species of each presence row, None for background rows
    scores = model.predict_proba(X_new)            # DataFrame (X_new's index, one column per species), in [0, 1]

It runs the pipeline's trainer (:func:`sdm.train.fit_joint`): the same network, loss and early stopping as the
``train_sdm`` rule, whose defaults are these defaults.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sdm.model import resolve_device
from sdm.train import SPLITS, NetworkParams, _logits, _standardised, fit_joint, scores_of, split_rows

_DEFAULTS = NetworkParams()


class DeepSDM(BaseEstimator):
    """Joint deep SDM over a table: presence rows (``y`` = species name) and background rows (``y`` = None).

    Columns of pandas ``category`` dtype are one-hot encoded (categories seen at fit; an unseen category at predict
    time is all zeros); other columns must be numeric. ``fit`` holds out ``validation_fraction`` of the rows for
    early stopping (whole ``groups`` when given, e.g. spatial block ids; random rows otherwise), then, with
    ``refit``, fits again on every row for the chosen number of epochs. Hyper-parameters are those of
    :class:`sdm.train.NetworkParams` (the config's ``sdm`` section), plus ``random_state`` (the seed) and ``device``.
    """

    def __init__(self, *, hidden: int = _DEFAULTS.hidden, blocks: int = _DEFAULTS.blocks,
                 dropout: float = _DEFAULTS.dropout, epochs: int = _DEFAULTS.epochs, patience: int = _DEFAULTS.patience,
                 batch_size: int = _DEFAULTS.batch_size, background_per_batch: int = _DEFAULTS.background_per_batch,
                 learning_rate: float = _DEFAULTS.learning_rate, weight_decay: float = _DEFAULTS.weight_decay,
                 loss: str = _DEFAULTS.loss, members: int = _DEFAULTS.members, quadratic: bool = _DEFAULTS.quadratic,
                 additive: int = _DEFAULTS.additive,
                 input_noise: float = _DEFAULTS.input_noise, sampling_exponent: float = _DEFAULTS.sampling_exponent,
                 target_group: float = _DEFAULTS.target_group, steps_per_epoch: int | None = None,
                 validation_fraction: float = 0.2, refit: bool = True, device: str = "auto",
                 random_state: int | None = None, progress: bool = False):
        self.hidden = hidden
        self.blocks = blocks
        self.dropout = dropout
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.background_per_batch = background_per_batch
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.loss = loss
        self.members = members
        self.quadratic = quadratic
        self.additive = additive
        self.input_noise = input_noise
        self.sampling_exponent = sampling_exponent
        self.target_group = target_group
        self.steps_per_epoch = steps_per_epoch
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # --- encoding ---------------------------------------------------------------------------------------------------
    def _learn_encoding(self, X: pd.DataFrame) -> None:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.categories_ = {}
        for column in X.columns:
            if isinstance(X[column].dtype, pd.CategoricalDtype):
                self.categories_[column] = list(X[column].cat.categories)
            elif not pd.api.types.is_numeric_dtype(X[column]):
                raise ValueError(f"DeepSDM: column '{column}' is {X[column].dtype}; covariates must be numeric or "
                                 f"of pandas 'category' dtype")
        self.encoded_features_ = [f"{c}={v}" if c in self.categories_ else str(c)
                                  for c in X.columns for v in (self.categories_.get(c) or [None])]

    def _encode(self, X: pd.DataFrame) -> np.ndarray:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"DeepSDM expects a pandas DataFrame of covariates, got {type(X).__name__}")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"DeepSDM: columns {missing} seen at fit are missing")
        parts = []
        for column in self.feature_names_in_:
            if column in self.categories_:
                known = pd.Index(self.categories_[column])
                values = known.get_indexer(X[column].astype(object))  # unseen (and missing) -> -1
                one_hot = np.zeros((len(X), len(self.categories_[column])), dtype="float32")
                seen = values >= 0
                one_hot[np.flatnonzero(seen), values[seen]] = 1
                parts.append(one_hot)
            else:
                parts.append(X[column].to_numpy(dtype="float32")[:, None])
        values = np.hstack(parts) if parts else np.zeros((len(X), 0), dtype="float32")
        bad = ~np.isfinite(values).all(axis=0)
        if bad.any():
            raise ValueError(f"DeepSDM: missing or infinite values in {np.asarray(self.encoded_features_)[bad]}")
        return values

    def _params(self) -> NetworkParams:
        seed = self.random_state if self.random_state is not None else \
            int(np.random.SeedSequence().entropy % 2**31)
        return NetworkParams(
            hidden=self.hidden, blocks=self.blocks, dropout=self.dropout, epochs=self.epochs, patience=self.patience,
            batch_size=self.batch_size, background_per_batch=self.background_per_batch,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, loss=self.loss, members=self.members,
            quadratic=self.quadratic, additive=self.additive, input_noise=self.input_noise,
            sampling_exponent=self.sampling_exponent, target_group=self.target_group, steps_per_epoch=self.steps_per_epoch, seed=seed)

    # --- fit / predict ---------------------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y, groups=None) -> DeepSDM:
        """Fit on presence rows (``y`` = species) and background rows (``y`` None / NaN); ``groups`` (optional, one
        label per row, such as a spatial block id) keeps whole groups together in the validation split."""
        params = self._params()
        y = pd.Series(np.asarray(y, dtype=object), index=X.index)
        if len(y) != len(X):
            raise ValueError(f"DeepSDM: X has {len(X)} rows but y has {len(y)}")
        self._learn_encoding(X)
        values = self._encode(X)
        is_presence = y.notna().to_numpy()
        if not is_presence.any() or is_presence.all():
            raise ValueError("DeepSDM: y needs presence rows (a species name) and background rows (None)")
        self.species_ = np.asarray(sorted(y[is_presence].astype(str).unique()), dtype=object)
        species_index = {s: i for i, s in enumerate(self.species_)}
        rows = np.flatnonzero(is_presence)
        presences = np.c_[rows, y.iloc[rows].astype(str).map(species_index).to_numpy()].astype("int64")
        background = np.flatnonzero(~is_presence)
        labels = np.arange(len(X)) if groups is None else np.asarray(groups)
        row_split = split_rows(labels, (1 - self.validation_fraction, self.validation_fraction, 0.0), params.seed)
        if self.validation_fraction == 0:
            row_split[:] = SPLITS["train"]
        device = resolve_device(self.device)
        fitted = fit_joint(values, presences, background, row_split, len(self.species_), params, device=device,
                           refit=self.refit, progress=self.progress)
        self.model_, self.mean_, self.std_ = fitted.model, fitted.mean, fitted.std
        self.best_epoch_, self.history_ = fitted.best_epoch, fitted.history
        self.n_epochs_ = fitted.refit_epochs or len(fitted.history)
        self.validation_auc_ = fitted.validation_auc
        return self

    def _x(self, X: pd.DataFrame) -> torch.Tensor:
        check_is_fitted(self, "model_")
        return _standardised(self._encode(X), self.mean_, self.std_, next(self.model_.parameters()).device)

    def predict_proba(self, X: pd.DataFrame) -> pd.DataFrame:
        """Suitability in [0, 1] (higher = more suitable), a DataFrame indexed like ``X``, one column per species."""
        x = self._x(X)
        return pd.DataFrame(scores_of(self.model_, x), index=X.index, columns=list(self.species_))

    def decision_function(self, X: pd.DataFrame) -> pd.DataFrame:
        """Logits (the scale on which species' scores are ranked), like :meth:`predict_proba`."""
        x = self._x(X)
        return pd.DataFrame(_logits(self.model_, x).float().cpu().numpy(), index=X.index,
                            columns=list(self.species_))
