"""Data sets: MovieLens 100K/1M loaders and leave-one-out splits.

Pure pandas/numpy, so ``import tfprivadv.datasets`` does not import TensorFlow.
"""

from tfprivadv.datasets.movielens import (
    AGE_GROUP_CODES,
    AGE_GROUP_LABELS,
    ML1M_OCCUPATIONS,
    ML100K_GENRES,
    MovieLens,
    age_to_group,
    leave_one_out,
    load_movielens,
)

__all__ = [
    "AGE_GROUP_CODES",
    "AGE_GROUP_LABELS",
    "ML100K_GENRES",
    "ML1M_OCCUPATIONS",
    "MovieLens",
    "age_to_group",
    "leave_one_out",
    "load_movielens",
]
