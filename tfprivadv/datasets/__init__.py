"""Data sets: MovieLens 100K/1M loaders, leave-one-out splits, and a synthetic
generator of large interaction logs written as Parquet/CSV shards.

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
from tfprivadv.datasets.synthetic import (
    SyntheticData,
    generate_synthetic,
    load_synthetic,
)

__all__ = [
    "AGE_GROUP_CODES",
    "AGE_GROUP_LABELS",
    "ML100K_GENRES",
    "ML1M_OCCUPATIONS",
    "MovieLens",
    "SyntheticData",
    "age_to_group",
    "generate_synthetic",
    "leave_one_out",
    "load_movielens",
    "load_synthetic",
]
