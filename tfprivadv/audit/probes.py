"""Attackers that try to read attributes back from user vectors (held-out users)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tfprivadv._validation import _received, check_int


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _mlp() -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, early_stopping=True, random_state=0),
    )


def _gradient_boosting() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=200, random_state=0)


#: Named attackers: name -> factory of an unfitted sklearn classifier.
ATTACKERS: dict[str, Callable[[], Any]] = {
    "logistic": _logistic,
    "mlp": _mlp,
    "gradient_boosting": _gradient_boosting,
}

_SUITES = {"linear": ("logistic",), "quick": ("logistic", "mlp")}


def _resolve_attackers(attackers: Any) -> dict[str, Any]:
    if isinstance(attackers, str):
        names = _SUITES.get(attackers, (attackers,))
        unknown = [n for n in names if n not in ATTACKERS]
        if unknown:
            raise ValueError(
                "`attackers` must be an attacker name, a suite name, a list of names "
                f"or a dict name -> sklearn estimator; names: {sorted(ATTACKERS)}, "
                f"suites: {sorted(_SUITES)}. Received: {attackers!r}"
            )
        return {n: ATTACKERS[n]() for n in names}
    if isinstance(attackers, Mapping):
        return dict(attackers)
    if isinstance(attackers, list | tuple):
        resolved: dict[str, Any] = {}
        for name in attackers:
            resolved.update(_resolve_attackers(name))
        return resolved
    raise TypeError(
        "`attackers` must be a name, a list of names or a dict name -> estimator. "
        f"Received: {_received(attackers)}"
    )


def _interval(values: np.ndarray) -> tuple[float, float]:
    # t-interval over folds: honest about how few folds there are.
    from scipy import stats

    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def probe_embeddings(
    embeddings: Any,
    attributes: pd.DataFrame | Mapping[str, Any],
    *,
    attackers: Any = "linear",
    cv: int = 5,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Cross-validated attackers reading categorical attributes from embeddings.

    Every user is scored by an attacker fitted on the other folds only
    (stratified k-fold), so the scores are held-out. Rows with a missing label
    are dropped per attribute.

    Args:
        embeddings: `[n_users, dim]` numeric array.
        attributes: Column per attribute (DataFrame or dict of arrays), `n_users`
            long, class labels of any type.
        attackers: An attacker name ("logistic", "mlp", "gradient_boosting"), a
            suite ("linear", "quick"), a list of names, or a dict name -> sklearn
            classifier (cloned per fold).
        cv: Number of folds.
        random_state: Seed of the fold split.

    Returns:
        One row per attribute x attacker: `accuracy`, `balanced_accuracy`,
        `chance_accuracy` (majority share), `chance_balanced_accuracy`
        (1 / classes), `balanced_accuracy_gap`, and the 95% interval of the
        balanced accuracy across folds (`balanced_accuracy_low/high`).

    Example:
        >>> probe_embeddings(vectors, users[["gender", "age_group"]])
    """
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(embeddings)
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise TypeError(
            "`embeddings` must be a 2-D numeric array [n_users, dim]. Received "
            f"dtype {x.dtype} and shape {x.shape}."
        )
    cv = check_int("cv", cv, minimum=2)
    frame = pd.DataFrame(attributes)
    if len(frame) != len(x):
        raise ValueError(f"`attributes` has {len(frame)} rows but `embeddings` has {len(x)}.")
    models = _resolve_attackers(attackers)
    rows = []
    for attribute in frame.columns:
        labels = frame[attribute].to_numpy()
        known = ~pd.isna(labels)
        y = pd.factorize(labels[known], sort=True)[0]
        xs = x[known]
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"Attribute {attribute!r} has a single class; nothing to probe.")
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
        for name, estimator in models.items():
            predicted = np.empty_like(y)
            fold_bacc = []
            for train_index, test_index in folds.split(xs, y):
                fitted = clone(estimator).fit(xs[train_index], y[train_index])
                predicted[test_index] = fitted.predict(xs[test_index])
                fold_bacc.append(balanced_accuracy_score(y[test_index], predicted[test_index]))
            low, high = _interval(np.asarray(fold_bacc))
            bacc = balanced_accuracy_score(y, predicted)
            rows.append(
                {
                    "attribute": attribute,
                    "attacker": name,
                    "users": int(len(y)),
                    "accuracy": accuracy_score(y, predicted),
                    "chance_accuracy": counts.max() / counts.sum(),
                    "balanced_accuracy": bacc,
                    "chance_balanced_accuracy": 1.0 / len(classes),
                    "balanced_accuracy_gap": bacc - 1.0 / len(classes),
                    "balanced_accuracy_low": low,
                    "balanced_accuracy_high": high,
                }
            )
    return pd.DataFrame(rows)
