"""Attackers that try to read private attributes back from user vectors.

Every score here is held out: each user is scored by an attacker fitted on the
other folds only, and the point estimate is the mean over folds, reported beside
the score of a trivial attacker (chance) and a 95% interval across folds
(a t-interval with the Nadeau-Bengio correction for overlapping training sets).

Named attackers (`ATTACKERS`, in report order), as classifier / regressor for
categorical / continuous attributes; "scaled" = a `StandardScaler` in front
(`MaxAbsScaler` for sparse features), "std. target" = the regressor fits a
standardized target:

- `logistic`: scaled multinomial logistic regression (the paper's softmax
  readout) / scaled ridge regression.
- `linear_svm_c0.1`, `linear_svm_c1`, `linear_svm_c10`: scaled `LinearSVC(C)` /
  scaled `LinearSVR(C)`, std. target.
- `rbf_svm`: scaled RBF `SVC` (ROC AUC from its decision function) / scaled
  RBF `SVR`, std. target.
- `decision_tree`: unpruned decision tree / unpruned regression tree.
- `random_forest`: random forest, 100 trees, all cores (one core per fit when
  the folds run in parallel) / its regressor.
- `gradient_boosting`: gradient boosting, 100 stages of depth 3, subsample .5 /
  its regressor.
- `mlp`: scaled MLP, 64 ReLU units, early stopping / its regressor, std. target.
- `hist_gradient_boosting`: histogram gradient boosting with early stopping on
  10% of the training fold / its regressor.

Suites (`SUITES`): "paper" is the paper's Table 1 (the first eight); "strong"
adds `mlp` and `hist_gradient_boosting`. A row's `attacker` is always the
requested name, also on continuous attributes (where `logistic` is ridge).
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_choice, check_int

KINDS = ("categorical", "continuous")

#: Every named attacker, in report order.
ATTACKERS: tuple[str, ...] = (
    "logistic",
    "linear_svm_c0.1",
    "linear_svm_c1",
    "linear_svm_c10",
    "rbf_svm",
    "decision_tree",
    "random_forest",
    "gradient_boosting",
    "mlp",
    "hist_gradient_boosting",
)

#: Named suites of attackers: suite name -> attacker names.
SUITES: dict[str, tuple[str, ...]] = {
    # Table 1 of Resheff et al.: the softmax readout plus the post-hoc attackers.
    "paper": ATTACKERS[:8],
    # Nonlinear attackers a linear adversary head cannot blind (see FINDINGS.md).
    "strong": ATTACKERS,
}

_METRICS = {
    "categorical": ("accuracy", "balanced_accuracy", "roc_auc"),
    "continuous": ("r2", "mae"),
}
_METRIC_SUFFIXES = ("", "_chance", "_gap", "_low", "_high")

#: The columns of every frame `probe_embeddings` and `recommendation_leakage` return.
COLUMNS: tuple[str, ...] = (
    "source",
    "attribute",
    "kind",
    "attacker",
    "users",
    "folds",
) + tuple(
    f"{metric}{suffix}"
    for metric in _METRICS["categorical"] + _METRICS["continuous"]
    for suffix in _METRIC_SUFFIXES
)


# --------------------------------------------------------------------------- attackers


def _to_dense(x: Any) -> Any:
    return x.toarray() if hasattr(x, "toarray") else x


def _scaled(estimator: Any, sparse: bool) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    # Centering would densify sparse input (multi-hot top-k lists); MaxAbsScaler is
    # the identity on 0/1 columns and keeps the sparsity.
    return make_pipeline(MaxAbsScaler() if sparse else StandardScaler(), estimator)


def _standardized_target(regressor: Any) -> Any:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import StandardScaler

    # SVR's epsilon/C and an MLP's initialisation assume a target of unit scale;
    # ages in years are not.
    return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())


def _linear_svm(c: float) -> Callable[[str, int | None, bool], Any]:
    def make(kind: str, seed: int | None, sparse: bool) -> Any:
        from sklearn.svm import LinearSVC, LinearSVR

        if kind == "categorical":
            # dual="auto" solves the primal when users outnumber features (embeddings):
            # tens of milliseconds per fit on 6k x 10.
            return _scaled(LinearSVC(C=c, dual="auto", max_iter=5000, random_state=seed), sparse)
        # The squared epsilon-insensitive loss admits the fast primal solver too.
        regressor = LinearSVR(
            C=c,
            loss="squared_epsilon_insensitive",
            dual="auto",
            max_iter=5000,
            random_state=seed,
        )
        return _standardized_target(_scaled(regressor, sparse))

    return make


def _logistic(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "categorical":
        return _scaled(LogisticRegression(max_iter=1000, random_state=seed), sparse)
    return _scaled(Ridge(alpha=1.0), sparse)


def _rbf_svm(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.svm import SVC, SVR

    if kind == "categorical":
        # probability=False: Platt scaling would refit five times inside every fit;
        # the decision function ranks users just as well for ROC AUC.
        return _scaled(SVC(kernel="rbf", cache_size=500, random_state=seed), sparse)
    return _standardized_target(_scaled(SVR(kernel="rbf", cache_size=500), sparse))


def _decision_tree(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    # Unpruned, as in the paper (its tree scored below the majority baseline).
    cls = DecisionTreeClassifier if kind == "categorical" else DecisionTreeRegressor
    return cls(random_state=seed)


def _random_forest(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if kind == "categorical" else RandomForestRegressor
    return cls(n_estimators=100, n_jobs=-1, random_state=seed)


def _gradient_boosting(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    # Stochastic gradient boosting (Friedman 2002): each stage sees half the users.
    # It halves the cost of the suite's slowest attacker (7 trees per stage for the
    # 7 ML-1M age groups) and scored no lower on ML-1M vectors
    # (benchmarks/audit_speed.py).
    cls = GradientBoostingClassifier if kind == "categorical" else GradientBoostingRegressor
    return cls(n_estimators=100, subsample=0.5, random_state=seed)


def _mlp(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    settings = {
        "hidden_layer_sizes": (64,),
        "max_iter": 500,
        "early_stopping": True,
        "random_state": seed,
    }
    if kind == "categorical":
        return _scaled(MLPClassifier(**settings), sparse)
    return _standardized_target(_scaled(MLPRegressor(**settings), sparse))


def _hist_gradient_boosting(kind: str, seed: int | None, sparse: bool) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if kind == "categorical" else HistGradientBoostingRegressor
    # Early stopping on 10% of each training fold: on 6,040 ML-1M vectors it reads
    # as much as 100 fixed rounds (within +-.015 balanced accuracy, more on
    # protected vectors, where fixed rounds overfit) in a third of the time.
    estimator = cls(random_state=seed, early_stopping=True)
    if not sparse:
        return estimator
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # The histogram estimators reject sparse input.
    return make_pipeline(FunctionTransformer(_to_dense, accept_sparse=True), estimator)


_FACTORIES: dict[str, Callable[[str, int | None, bool], Any]] = {
    "logistic": _logistic,
    "linear_svm_c0.1": _linear_svm(0.1),
    "linear_svm_c1": _linear_svm(1.0),
    "linear_svm_c10": _linear_svm(10.0),
    "rbf_svm": _rbf_svm,
    "decision_tree": _decision_tree,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "mlp": _mlp,
    "hist_gradient_boosting": _hist_gradient_boosting,
}


def _attacker_seed(base: int, name: str) -> int:
    # Keyed by name, so adding or removing other attackers leaves each seed unchanged.
    sequence = np.random.SeedSequence([base, 1, zlib.crc32(name.encode())])
    return int(sequence.generate_state(1)[0] >> 1)


def _fold_seed(base: int) -> int:
    return int(np.random.SeedSequence([base, 0]).generate_state(1)[0] >> 1)


def _name_error(value: Any) -> ValueError:
    return ValueError(
        "`attackers` must be an attacker name, a suite name, a list of them, or a dict "
        f"name -> sklearn estimator. Attackers: {list(ATTACKERS)}; suites: "
        f"{list(SUITES)}. Received: {_received(value)}"
    )


def make_attacker(
    name: str,
    *,
    kind: str = "categorical",
    random_state: int | None = None,
    sparse: bool = False,
) -> Any:
    """An unfitted sklearn estimator for a named attacker.

    Args:
        name: One of `ATTACKERS` (see the module docstring for what each is).
        kind: "categorical" (a classifier) or "continuous" (its regressor
            counterpart).
        random_state: Seed of the estimator, where it takes one.
        sparse: Build for scipy.sparse features: scale with `MaxAbsScaler`
            instead of `StandardScaler` (which would densify) and densify for
            the histogram estimators.

    Returns:
        An sklearn estimator (often a Pipeline with a scaler in front).

    Raises:
        ValueError: Unknown `name` (the message lists the names) or `kind`.

    Example:
        >>> make_attacker("linear_svm_c10", random_state=0)  # doctest: +SKIP
        Pipeline(steps=[('standardscaler', StandardScaler()),
                        ('linearsvc', LinearSVC(C=10.0, max_iter=5000, random_state=0))])
    """
    if not isinstance(name, str) or name not in _FACTORIES:
        raise _name_error(name)
    check_choice("kind", kind, KINDS)
    if random_state is not None:
        random_state = check_int("random_state", random_state, minimum=0)
    return _FACTORIES[name](kind, random_state, bool(sparse))


@dataclass(frozen=True)
class _Attacker:
    """A requested attacker: a named one (built per kind) or a user's estimator."""

    name: str
    estimator: Any = None  # None = named: built by make_attacker per kind

    def usable_for(self, kind: str) -> bool:
        if self.estimator is None:
            return True
        from sklearn.base import is_classifier, is_regressor

        # A user's classifier is not asked to regress, nor a regressor to classify;
        # an estimator that declares neither is tried on both.
        try:
            if is_classifier(self.estimator):
                return kind == "categorical"
            if is_regressor(self.estimator):
                return kind == "continuous"
        except AttributeError:  # not an sklearn BaseEstimator: no tags to read
            pass
        return True

    def build(self, kind: str, base_seed: int, sparse: bool, n_jobs: int | None) -> Any:
        if self.estimator is not None:
            return self.estimator  # cloned per fold; its own settings are kept
        estimator = make_attacker(
            self.name,
            kind=kind,
            random_state=_attacker_seed(base_seed, self.name),
            sparse=sparse,
        )
        if n_jobs is not None:
            params = estimator.get_params()
            # Only where a pool was asked for (the forests): setting others' n_jobs
            # (deprecated in LogisticRegression) would only warn.
            estimator.set_params(
                **{key: n_jobs for key, value in params.items() if key.endswith("n_jobs") and value}
            )
        return estimator


def _resolve_attackers(attackers: Any) -> list[_Attacker]:
    if isinstance(attackers, str):
        if attackers in SUITES:
            return [_Attacker(name) for name in SUITES[attackers]]
        if attackers in _FACTORIES:
            return [_Attacker(attackers)]
        raise _name_error(attackers)
    if isinstance(attackers, Mapping):
        if not attackers:
            raise ValueError("`attackers` must name at least one attacker. Received: {}")
        resolved = []
        for name, estimator in attackers.items():
            if not isinstance(name, str) or not hasattr(estimator, "fit"):
                raise TypeError(
                    "`attackers` as a dict must map names (str) to unfitted sklearn "
                    f"estimators. Received {_received(name)} -> {_received(estimator)}"
                )
            resolved.append(_Attacker(name, estimator))
        return resolved
    if isinstance(attackers, list | tuple):
        if not attackers:
            raise ValueError("`attackers` must name at least one attacker. Received: []")
        resolved, seen = [], set()
        for item in attackers:
            if not isinstance(item, str):
                raise TypeError(
                    "`attackers` as a list must hold attacker or suite names; pass a dict "
                    f"name -> estimator for your own estimators. Received: {_received(item)}"
                )
            for attacker in _resolve_attackers(item):
                if attacker.name not in seen:
                    seen.add(attacker.name)
                    resolved.append(attacker)
        return resolved
    raise TypeError(
        "`attackers` must be a name, a suite name, a list of names or a dict name -> "
        f"sklearn estimator. Received: {_received(attackers)}"
    )


# --------------------------------------------------------------------------- inputs


@dataclass
class _Target:
    """One attribute, ready for cross-validation."""

    name: str
    kind: str
    rows: np.ndarray  # positions of the users with a label
    y: np.ndarray  # class codes 0..K-1 (categorical) or floats (continuous)
    n_classes: int  # 0 for continuous attributes
    cv: int
    folds: list[tuple[np.ndarray, np.ndarray]]
    chance: dict[str, float]


def _as_features(features: Any, name: str) -> tuple[Any, pd.Index | None]:
    """A 2-D float array (or CSR matrix) and, for a DataFrame, its index."""
    import scipy.sparse as sp

    index = features.index if isinstance(features, pd.DataFrame) else None
    if sp.issparse(features):
        x = sp.csr_matrix(features)
        values = x.data
    else:
        if isinstance(features, pd.DataFrame):
            bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
            if bad:
                raise TypeError(
                    f"`{name}` must be numeric; the DataFrame column(s) {bad[:5]} are not."
                )
            features = features.to_numpy(dtype=float)
        try:
            x = np.asarray(features)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"`{name}` must be a 2-D array [n_users, dim]: {error}") from None
        values = x
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must be a 2-D numeric array [n_users, dim]. Received dtype {x.dtype}."
        )
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"`{name}` must be a 2-D array [n_users, dim] with dim >= 1. Received shape {x.shape}."
        )
    if not sp.issparse(x):
        x = x.astype(float, copy=False)
    bad = ~np.isfinite(np.asarray(values, dtype=float))
    if bad.any():
        raise ValueError(
            f"`{name}` must be finite; it holds {int(bad.sum())} NaN or infinite value(s)."
        )
    return x, index


def _as_attribute_frame(attributes: Any) -> pd.DataFrame:
    if isinstance(attributes, pd.DataFrame):
        frame = attributes
    elif isinstance(attributes, pd.Series):
        frame = attributes.to_frame(attributes.name if attributes.name is not None else "attribute")
    elif isinstance(attributes, Mapping):
        try:
            frame = pd.DataFrame(dict(attributes))
        except ValueError as error:
            raise ValueError(
                f"`attributes` as a dict must map names to equally long label arrays: {error}"
            ) from None
    else:
        raise TypeError(
            "`attributes` must be a DataFrame (a column per attribute), a Series or a dict "
            f"name -> labels. Received: {_received(attributes)}"
        )
    if frame.shape[1] == 0:
        raise ValueError("`attributes` must hold at least one attribute column.")
    duplicated = frame.columns[frame.columns.duplicated()]
    if len(duplicated):
        raise ValueError(f"`attributes` has duplicate column names: {list(duplicated)}")
    return frame


def _resolve_kinds(frame: pd.DataFrame, kinds: Mapping[str, str] | None) -> dict[str, str]:
    if kinds is None:
        kinds = {}
    if not isinstance(kinds, Mapping):
        raise TypeError(
            "`kinds` must be None or a dict attribute -> 'categorical' | 'continuous'. "
            f"Received: {_received(kinds)}"
        )
    unknown = [name for name in kinds if name not in frame.columns]
    if unknown:
        raise ValueError(
            f"`kinds` names attribute(s) {unknown} that `attributes` lacks; it has "
            f"{list(frame.columns)}."
        )
    resolved = {}
    for name in frame.columns:
        if name in kinds:
            resolved[name] = check_choice(f"kinds[{name!r}]", kinds[name], KINDS)
        else:
            # Float columns are measurements (age in years); everything else, ints
            # included (the ML-1M age-group codes), names classes.
            is_float = pd.api.types.is_float_dtype(frame[name].dtype)
            resolved[name] = "continuous" if is_float else "categorical"
    return resolved


def _class_label(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _prepare_target(
    name: str,
    labels: pd.Series,
    kind: str,
    *,
    cv: int,
    n_repeats: int,
    fold_seed: int,
    stacklevel: int,
) -> _Target:
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    missing = labels.isna().to_numpy()
    if missing.all():
        raise ValueError(f"Attribute {name!r} in `attributes` has no labels (all missing).")
    if missing.any():
        warnings.warn(
            f"Attribute {name!r}: dropped {int(missing.sum())} of {len(labels)} users with "
            "a missing label.",
            UserWarning,
            stacklevel=stacklevel,
        )
    rows = np.flatnonzero(~missing)
    known = labels.iloc[rows]
    placeholder = np.zeros((len(rows), 1))
    if kind == "categorical":
        try:
            codes, classes = pd.factorize(known, sort=True)
        except TypeError:  # labels of mixed types cannot be sorted
            codes, classes = pd.factorize(known)
        counts = np.bincount(codes, minlength=len(classes))
        if len(classes) < 2:
            raise ValueError(
                f"Attribute {name!r} has a single class ({_class_label(classes[0])}); "
                "nothing to probe."
            )
        rare = [
            f"{_class_label(label)} ({count} users)"
            for label, count in zip(classes, counts, strict=True)
            if count < cv
        ]
        if rare:
            raise ValueError(
                f"Attribute {name!r}: class(es) {', '.join(rare)} have fewer members than "
                f"`cv`={cv} folds, so some folds would lack them. Merge or drop rare "
                "classes, or lower `cv`."
            )
        splitter = RepeatedStratifiedKFold(n_splits=cv, n_repeats=n_repeats, random_state=fold_seed)
        folds = list(splitter.split(placeholder, codes))
        chance = {
            "accuracy": float(counts.max() / counts.sum()),
            "balanced_accuracy": 1.0 / len(classes),
            "roc_auc": 0.5,
        }
        return _Target(name, kind, rows, codes.astype(np.int64), len(classes), cv, folds, chance)

    try:
        y = known.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"Attribute {name!r} is continuous (see `kinds`) but its labels are not "
            f"numeric: dtype {labels.dtype}."
        ) from None
    if not np.isfinite(y).all():
        raise ValueError(f"Attribute {name!r} holds infinite values.")
    if len(y) < cv:
        raise ValueError(
            f"Attribute {name!r} has {len(y)} labeled users, fewer than `cv`={cv} folds."
        )
    if np.ptp(y) == 0:
        raise ValueError(f"Attribute {name!r} has a single value ({y[0]}); nothing to probe.")
    splitter = RepeatedKFold(n_splits=cv, n_repeats=n_repeats, random_state=fold_seed)
    folds = list(splitter.split(placeholder))
    # MAE of predicting the training folds' mean, fold by fold: the honest baseline
    # (the all-users mean would peek at the test fold).
    mae_chance = np.mean([np.abs(y[test] - y[train].mean()).mean() for train, test in folds])
    return _Target(name, kind, rows, y, 0, cv, folds, {"r2": 0.0, "mae": float(mae_chance)})


# --------------------------------------------------------------------------- scoring


def _class_scores(fitted: Any, x: Any, n_classes: int) -> tuple[np.ndarray | None, bool]:
    """Per-class scores `[n, n_classes]` (column c = class code c) and whether they
    are probabilities; `(None, False)` for an attacker that only predicts labels."""
    if hasattr(fitted, "predict_proba"):
        raw, is_proba = fitted.predict_proba(x), True
    elif hasattr(fitted, "decision_function"):
        raw, is_proba = fitted.decision_function(x), False  # LinearSVC, SVC
    else:
        return None, False
    raw = np.asarray(raw, dtype=float)
    classes = [int(c) for c in getattr(fitted, "classes_", range(n_classes))]
    if raw.ndim == 1:  # a binary decision function scores classes[1]
        if n_classes != 2 or len(classes) != 2:
            return None, False
        positive = raw if classes[1] == 1 else -raw
        return np.column_stack([-positive, positive]), False
    if raw.shape[1] != n_classes or sorted(classes) != list(range(n_classes)):
        return None, False
    aligned = np.empty_like(raw)
    aligned[:, classes] = raw
    return aligned, is_proba


def _roc_auc(scores: np.ndarray | None, y: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import roc_auc_score

    if scores is None:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, scores[:, 1]))
    # Macro one-vs-rest by hand: roc_auc_score(multi_class="ovr") insists on
    # probabilities, and decision functions are not.
    return float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(n_classes)]))


def _fit_and_score(
    estimator: Any, x: Any, target: _Target, fold: int
) -> tuple[dict[str, float], float]:
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score

    train, test = target.folds[fold]
    x_test = x[target.rows[test]]
    y_train, y_test = target.y[train], target.y[test]
    start = time.perf_counter()
    fitted = clone(estimator).fit(x[target.rows[train]], y_train)
    predicted = fitted.predict(x_test)
    if target.kind == "continuous":
        scores = {
            "r2": float(r2_score(y_test, predicted)),
            "mae": float(mean_absolute_error(y_test, predicted)),
        }
        return scores, time.perf_counter() - start
    class_scores, is_proba = _class_scores(fitted, x_test, target.n_classes)
    balanced = predicted
    if is_proba:
        # `predict` takes argmax p(c|x), the rule that maximizes accuracy. Balanced
        # accuracy is maximized by argmax p(c|x) / share(c) (the Bayes rule under
        # uniform class priors); scoring it on `predict` would understate what an
        # attacker reads whenever the classes are imbalanced (71.7% men in ML-1M).
        shares = np.bincount(y_train, minlength=target.n_classes) / len(y_train)
        balanced = np.argmax(class_scores / shares, axis=1)
    scores = {
        "accuracy": float(np.mean(predicted == y_test)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, balanced)),
        "roc_auc": _roc_auc(class_scores, y_test, target.n_classes),
    }
    return scores, time.perf_counter() - start


def _interval(values: np.ndarray, cv: int) -> tuple[float, float]:
    """95% t-interval of the mean fold score, corrected for overlapping training sets.

    Fold scores are not independent (any two training sets share (cv-2)/(cv-1)
    of their users), so s^2 / J underestimates the variance of their mean, and
    with repeats it would shrink towards zero however few users there are. The
    corrected resampled t (Nadeau & Bengio 2003; Bouckaert & Frank 2004) uses
    s^2 * (1/J + n_test/n_train) with n_test/n_train = 1/(cv-1).
    """
    from scipy import stats

    if len(values) < 2 or np.isnan(values).any():
        return float("nan"), float("nan")
    variance = values.var(ddof=1) * (1.0 / len(values) + 1.0 / (cv - 1))
    half = stats.t.ppf(0.975, len(values) - 1) * math.sqrt(variance)
    return float(values.mean() - half), float(values.mean() + half)


def _row(source: str, target: _Target, attacker: str, folds: list[dict[str, float]]) -> dict:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
    row.update(
        source=source,
        attribute=target.name,
        kind=target.kind,
        attacker=attacker,
        users=len(target.y),
        folds=len(folds),
    )
    for metric in _METRICS[target.kind]:
        values = np.array([fold[metric] for fold in folds], dtype=float)
        low, high = _interval(values, target.cv)
        score = float(values.mean())
        row[metric] = score
        row[f"{metric}_chance"] = target.chance[metric]
        row[f"{metric}_gap"] = score - target.chance[metric]
        row[f"{metric}_low"] = low
        row[f"{metric}_high"] = high
    return row


def _progress_callable(progress: Any, total: int) -> tuple[Callable[[dict], None] | None, Any]:
    """The per-row callback and, for `progress=True`, the tqdm bar to close."""
    if progress is None or progress is False:
        return None, None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError as error:  # pragma: no cover - tqdm is a core dependency
            raise ImportError(
                "`progress=True` needs tqdm (`pip install tqdm`, a tfprivadv dependency); "
                "or pass a callable."
            ) from error
        bar = tqdm(total=total, desc="audit", unit="attacker")

        def update(info: dict) -> None:
            bar.set_postfix_str(f"{info['attribute']}/{info['attacker']}", refresh=False)
            bar.update(1)

        return update, bar
    if callable(progress):
        return progress, None
    raise TypeError(
        "`progress` must be None, True (a tqdm bar) or a callable taking a dict. "
        f"Received: {_received(progress)}"
    )


def _probe_features(
    features: Any,
    attributes: Any,
    *,
    source: str,
    features_name: str,
    attackers: Any,
    cv: int,
    n_repeats: int,
    random_state: int | None,
    kinds: Mapping[str, str] | None,
    progress: Any,
    n_jobs: int | None,
    stacklevel: int,
    features_index: pd.Index | None = None,
) -> pd.DataFrame:
    """The cross-validation core shared by every audit that reads a feature matrix.

    `stacklevel` is the caller's frame as seen from here (3 for a public function
    called by the user), so the missing-label warning points at the user's line.
    `features_index` stands in for the index of a DataFrame `features` (for
    features built from a DataFrame).

    Validates everything before fitting anything, then fits every (attribute,
    attacker, fold) in one thread pool (sklearn's fits release the GIL) and
    calls `progress` as each (attribute, attacker) completes.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    x, own_index = _as_features(features, features_name)
    if features_index is None:
        features_index = own_index
    frame = _as_attribute_frame(attributes)
    if len(frame) != x.shape[0]:
        raise ValueError(
            f"`attributes` has {len(frame)} rows but `{features_name}` has {x.shape[0]}; "
            "both need one row per user, in the same order."
        )
    if (
        features_index is not None
        and not isinstance(frame.index, pd.RangeIndex)
        and not frame.index.equals(features_index)
    ):
        raise ValueError(
            f"The index of `attributes` does not match the index of `{features_name}`; "
            f"align them first, e.g. `attributes.loc[{features_name}.index]`."
        )
    cv = check_int("cv", cv, minimum=2)
    n_repeats = check_int("n_repeats", n_repeats, minimum=1)
    if random_state is not None:
        random_state = check_int("random_state", random_state, minimum=0)
    if n_jobs is not None:
        n_jobs = check_int("n_jobs", n_jobs)
    resolved_kinds = _resolve_kinds(frame, kinds)
    requested = _resolve_attackers(attackers)

    # One base seed per call: the folds (shared by every attacker, so attackers are
    # compared on the same users) and each named attacker's seed derive from it.
    base = np.random.SeedSequence(random_state).entropy
    base = int(base) % (2**63)
    fold_seed = _fold_seed(base)
    targets = []
    for name in frame.columns:  # a loop, not a comprehension: its frame would shift stacklevel
        targets.append(
            _prepare_target(
                name,
                frame[name],
                resolved_kinds[name],
                cv=cv,
                n_repeats=n_repeats,
                fold_seed=fold_seed,
                stacklevel=stacklevel + 1,
            )
        )
    sparse = not isinstance(x, np.ndarray)
    # Folds already run in parallel: a forest's own thread pool on top would only
    # oversubscribe the cores (and costs ~0.3 s per fit to start on small data).
    inner_jobs = 1 if effective_n_jobs(n_jobs) > 1 else None
    plan: list[tuple[_Target, str, Any]] = []
    for target in targets:
        usable = [a for a in requested if a.usable_for(target.kind)]
        if not usable:
            raise ValueError(
                f"`attackers` holds no estimator for the {target.kind} attribute "
                f"{target.name!r} (classifiers read categorical attributes, regressors "
                "continuous ones)."
            )
        plan += [(target, a.name, a.build(target.kind, base, sparse, inner_jobs)) for a in usable]

    callback, bar = _progress_callable(progress, len(plan))
    jobs = (
        delayed(_fit_and_score)(estimator, x, target, fold)
        for target, _, estimator in plan
        for fold in range(len(target.folds))
    )
    rows = []
    try:
        results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(jobs)
        for done, (target, name, _) in enumerate(plan, start=1):
            # Results come back in submission order: the next len(folds) are this row's.
            folds = [next(results) for _ in target.folds]
            rows.append(_row(source, target, name, [scores for scores, _ in folds]))
            if callback is not None:
                headline = "balanced_accuracy" if target.kind == "categorical" else "r2"
                callback(
                    {
                        "source": source,
                        "attribute": target.name,
                        "kind": target.kind,
                        "attacker": name,
                        "metric": headline,
                        "score": rows[-1][headline],
                        "seconds": float(sum(seconds for _, seconds in folds)),
                        "done": done,
                        "total": len(plan),
                    }
                )
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------- public


def probe_embeddings(
    embeddings: Any,
    attributes: pd.DataFrame | pd.Series | Mapping[str, Any],
    *,
    attackers: str | Sequence[str] | Mapping[str, Any] = "paper",
    cv: int = 5,
    n_repeats: int = 1,
    random_state: int | None = None,
    kinds: Mapping[str, str] | None = None,
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
    n_jobs: int | None = -1,
) -> pd.DataFrame:
    """Cross-validated attackers reading private attributes from user vectors.

    Each user is scored by an attacker fitted on the other folds only (repeated
    stratified k-fold for categorical attributes, repeated k-fold for continuous
    ones; all attackers see the same folds). A metric's point estimate is its
    mean over the `cv * n_repeats` held-out folds; `<metric>_low/_high` is the
    95% t-interval of that mean across folds, with the Nadeau-Bengio variance
    correction for overlapping training sets (a plain fold t-interval is too
    narrow, and shrinks without bound with `n_repeats`); `<metric>_chance` is what a
    trivial attacker scores; `<metric>_gap` is score minus chance (the paper's
    "information gap").

    Categorical attributes get `accuracy` (chance: majority share; scored on
    `predict`), `balanced_accuracy` (chance: 1 / classes) and `roc_auc` (macro
    one-vs-rest; plain AUC for two classes; chance 0.5; from `predict_proba`,
    else `decision_function`, else NaN). An attacker with `predict_proba` is
    scored for balanced accuracy on the decision that maximizes it,
    argmax_c p(c|x) / share_c (shares of the training folds), not on `predict`,
    which maximizes plain accuracy and, on imbalanced classes, mostly names the
    majority; attackers with a decision function only (the SVMs) on `predict`.

    Continuous attributes get `r2` (chance 0:
    the mean predictor) and `mae` (chance: MAE of predicting the training
    folds' mean; a leak shows as a negative `mae_gap`). A row holds NaN in the
    other kind's columns.

    Users with a missing label are dropped per attribute, with a warning.

    Args:
        embeddings: `[n_users, dim]` numbers: array, DataFrame, tf.Tensor or
            scipy.sparse matrix.
        attributes: One column per attribute, `n_users` rows in the order of
            `embeddings`: a DataFrame, a Series, or a dict name -> labels.
        attackers: A suite ("paper": the paper's Table 1; "strong": paper +
            `mlp` + `hist_gradient_boosting`), an attacker name (see
            `ATTACKERS`), a list of names, or a dict name -> sklearn estimator
            (cloned per fold; classifiers are used on categorical attributes,
            regressors on continuous ones).
        cv: Folds per repeat (>= 2).
        n_repeats: Repeats of the k-fold split, each with a new shuffle.
        random_state: Seed of the folds and of every named attacker (each gets
            a fixed seed derived from it and its name). None draws fresh seeds
            per call; pass an int for reproducible results.
        kinds: Per attribute, "categorical" or "continuous", overriding the
            default (float columns are continuous, all others categorical).
        progress: None; a callable called once per finished (attribute,
            attacker) with a dict (`source`, `attribute`, `kind`, `attacker`,
            `metric`, `score`, `seconds` summed over folds, `done`, `total`);
            or True for a tqdm bar.
        n_jobs: Threads fitting folds in parallel (-1: all cores; 1: serial).

    Returns:
        A DataFrame, one row per attribute x attacker in input order, with the
        columns `COLUMNS`: `source` ("embeddings"), `attribute`, `kind`,
        `attacker`, `users` (labeled users), `folds`, then for each of
        `accuracy`, `balanced_accuracy`, `roc_auc`, `r2`, `mae` the columns
        `<metric>`, `<metric>_chance`, `<metric>_gap`, `<metric>_low`,
        `<metric>_high`.

    Raises:
        TypeError: `embeddings` not numeric, `attributes`, `attackers`, `kinds`
            or `progress` of the wrong type, labels of a continuous attribute not
            numeric.
        ValueError: `embeddings` not 2-D or not finite; row counts or indices of
            `embeddings` and `attributes` differ; `kinds` names an unknown
            attribute or kind; an unknown attacker name; `cv` < 2; an attribute
            with a single class (or value), no labels, or a class with fewer
            than `cv` members.

    Example:
        >>> vectors = model.user_embeddings(users["user_id"]).numpy()  # doctest: +SKIP
        >>> leakage = probe_embeddings(  # doctest: +SKIP
        ...     vectors, users[["gender", "age_group"]], random_state=0
        ... )
        >>> best = best_attackers(leakage)  # doctest: +SKIP
        >>> best[["attribute", "attacker", "balanced_accuracy"]]  # doctest: +SKIP
    """
    return _probe_features(
        embeddings,
        attributes,
        source="embeddings",
        features_name="embeddings",
        attackers=attackers,
        cv=cv,
        n_repeats=n_repeats,
        random_state=random_state,
        kinds=kinds,
        progress=progress,
        n_jobs=n_jobs,
        stacklevel=3,
    )


def best_attackers(
    frame: pd.DataFrame,
    metric: str = "balanced_accuracy",
    *,
    continuous_metric: str = "r2",
) -> pd.DataFrame:
    """The strongest attacker's row per attribute (per source, if several).

    Leakage is what the best attacker reads, so this is the row to report.

    Args:
        frame: A frame from `probe_embeddings` or `recommendation_leakage`, or
            several concatenated.
        metric: Score ranking the attackers of categorical attributes
            ("accuracy", "balanced_accuracy" or "roc_auc").
        continuous_metric: Score ranking the attackers of continuous attributes
            ("r2", or "mae", where lower is stronger).

    Returns:
        One row per (source, attribute), in first-appearance order, with the
        frame's columns. Ties go to the attacker listed first; an attribute
        whose scores are all NaN keeps its first row.

    Raises:
        TypeError: `frame` is not a DataFrame.
        ValueError: `frame` lacks the columns, or a metric is not one of the above.

    Example:
        >>> best_attackers(probe_embeddings(vectors, users[["gender"]]))  # doctest: +SKIP
    """
    from tfprivadv._validation import check_columns

    check_columns("frame", frame, ("attribute", "kind"))
    check_choice("metric", metric, _METRICS["categorical"])
    check_choice("continuous_metric", continuous_metric, _METRICS["continuous"])
    if frame.empty:
        return frame.copy()
    keys = ["source", "attribute"] if "source" in frame.columns else ["attribute"]
    chosen = []
    for _, group in frame.groupby(keys, sort=False, dropna=False):
        kind = group["kind"].iloc[0]
        column = metric if kind == "categorical" else continuous_metric
        if column not in group.columns:
            raise ValueError(f"`frame` lacks the column {column!r}.")
        scores = group[column].to_numpy(dtype=float)
        if column == "mae":
            scores = -scores
        if np.isnan(scores).all():
            chosen.append(group.index[0])
        else:
            chosen.append(group.index[int(np.nanargmax(scores))])
    return frame.loc[chosen]
