"""MovieLens 100K and 1M loaders and leave-one-out splits.

Only pandas, numpy and the standard library are used here, so importing this module
stays fast (no TensorFlow).

The GroupLens licence forbids redistributing MovieLens, so this package ships no data.
:func:`load_movielens` reads a folder or zip you point it to, a local cache, a fresh
GroupLens download or, for ML-100K only, the copy bundled inside the
``recbole==1.2.1`` wheel on PyPI (read with :mod:`zipfile`; RecBole is never
installed or imported).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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

logger = logging.getLogger("tfprivadv.datasets")

AGE_GROUP_CODES: tuple[int, ...] = (1, 18, 25, 35, 45, 50, 56)
"""ML-1M age-group codes; each code is the lowest age in its group (1 = under 18)."""

AGE_GROUP_LABELS: dict[int, str] = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}
"""Human-readable label of each age-group code, as in the ML-1M README."""

ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
"""ML-1M occupation names; the position is the code used in ``users.dat``."""

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 ML-100K genres in the order of the flags in ``u.item`` (as in ``u.genre``)."""

GROUPLENS_URLS: dict[str, str] = {
    "100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
# PyPI's published digest of the wheel, so that a tampered or truncated download is
# never parsed.
_RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"

_DOWNLOAD_TIMEOUT_S = 15.0
_PIP_TIMEOUT_S = 300.0

_RATING_FIELDS = ("user_id", "item_id", "rating", "timestamp")
_STRATEGIES = ("last", "random")
_AGE_BOUNDS = np.array([18, 25, 35, 45, 50, 56], dtype=np.float64)
_AGE_CODES = np.array(AGE_GROUP_CODES, dtype=np.int64)


@dataclass(frozen=True)
class _Layout:
    variant: str
    dirname: str
    ratings: str
    users: str
    items: str
    optional: tuple[str, ...]

    @property
    def required(self) -> tuple[str, ...]:
        return (self.ratings, self.users, self.items)


_LAYOUTS: dict[str, _Layout] = {
    "100k": _Layout("100k", "ml-100k", "u.data", "u.user", "u.item", ("u.genre",)),
    "1m": _Layout("1m", "ml-1m", "ratings.dat", "users.dat", "movies.dat", ("holdout_last.dat",)),
}


# The DataFrames make value equality meaningless (and ambiguous), hence eq=False.
@dataclass(frozen=True, eq=False, repr=False)
class MovieLens:
    """One MovieLens data set as pandas DataFrames.

    Attributes:
        name: ``"100k"`` or ``"1m"``.
        ratings: Columns ``user_id`` (int64), ``item_id`` (int64), ``rating``
            (float32) and ``timestamp`` (nullable ``Int64``; all ``<NA>`` when the
            ratings file has no timestamp column), in file order, with a RangeIndex.
        users: One row per user, sorted by ``user_id``: ``user_id`` (int64),
            ``gender`` (``"F"``/``"M"``), ``age_group`` (int64, one of
            :data:`AGE_GROUP_CODES`), ``age`` (float64 years; NaN for ML-1M, which
            only gives the group), ``occupation`` (name) and ``zip_code`` (str).
        items: ``item_id`` (int64), ``title`` (str, e.g. ``"Toy Story (1995)"``) and
            ``genres`` (str, ``"|"``-joined genre names; empty when none), sorted by
            ``item_id``.
        holdout: For ML-1M when ``holdout_last.dat`` is present: each user's final
            rating, with the same columns as ``ratings``; otherwise None.
        source: Where the data was read from, for humans.
    """

    name: str
    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    holdout: pd.DataFrame | None = None
    source: str = ""

    def __repr__(self) -> str:
        holdout = "None" if self.holdout is None else f"{len(self.holdout):,}"
        return (
            f"MovieLens(name={self.name!r}, ratings={len(self.ratings):,}, "
            f"users={len(self.users):,}, items={len(self.items):,}, "
            f"holdout={holdout}, source={self.source!r})"
        )


def age_to_group(age_years: Any) -> Any:
    """Buckets ages in years into the ML-1M age-group codes.

    The groups are <18 -> 1, 18-24 -> 18, 25-34 -> 25, 35-44 -> 35, 45-49 -> 45,
    50-55 -> 50 and >=56 -> 56; fractional ages fall in the group of their whole
    years (24.9 -> 18).

    Args:
        age_years: One age (int or float), or a pandas Series, numpy array or list
            of ages.

    Returns:
        An ``int`` for a scalar, an int64 Series named ``"age_group"`` with the same
        index for a Series, otherwise an int64 numpy array of the same shape.

    Raises:
        ValueError: If any age is missing (NaN/NA) or negative.

    Example:
        >>> age_to_group(24)
        18
        >>> age_to_group(np.array([7, 18, 56])).tolist()
        [1, 18, 56]
    """
    if isinstance(age_years, pd.Series):
        values = age_years.to_numpy(dtype=np.float64, na_value=np.nan)
        codes = _age_codes(values)
        return pd.Series(codes, index=age_years.index, name="age_group", dtype="int64")
    if np.ndim(age_years) == 0:
        return int(_age_codes(np.array([age_years], dtype=np.float64))[0])
    return _age_codes(np.asarray(age_years, dtype=np.float64))


def _age_codes(values: np.ndarray) -> np.ndarray:
    if np.isnan(values).any():
        raise ValueError("age_to_group: ages must not be missing (found NaN/NA)")
    if (values < 0).any():
        raise ValueError(f"age_to_group: ages must be >= 0 years; got {values[values < 0][0]!r}")
    return _AGE_CODES[np.searchsorted(_AGE_BOUNDS, values, side="right")]


def load_movielens(
    variant: str,
    *,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> MovieLens:
    """Loads MovieLens 100K or 1M.

    With ``path`` given, only that location is read. Without it these sources are
    tried in order, and the first that has the files is used:

    1. ``$TFPRIVADV_DATA_DIR/ml-100k`` (or ``ml-1m``), a folder or ``.zip``, if the
       environment variable is set.
    2. The cache ``cache_dir``: an extracted ``ml-100k/`` (``ml-1m/``) folder or the
       GroupLens zip.
    3. If ``download``: the GroupLens zip, saved atomically into the cache and
       extracted there.
    4. ML-100K only: the copy inside the ``recbole==1.2.1`` wheel, taken from
       ``cache_dir/recbole-1.2.1-py3-none-any.whl`` or, if ``download``, fetched
       there with ``pip download`` first. Its frames equal those read from the
       GroupLens ``u.*`` files.

    The logger ``"tfprivadv.datasets"`` says which source was used and why the
    others were skipped.

    Args:
        variant: ``"100k"`` or ``"1m"`` (``"ml-100k"``/``"ml-1m"`` too; any case).
        path: A folder holding the files (directly or in an ``ml-100k``/``ml-1m``
            subfolder, or as ``ml-100k.zip``/``ml-1m.zip``), or a GroupLens zip.
        cache_dir: Cache folder; defaults to ``$TFPRIVADV_CACHE_DIR``, else
            ``~/.cache/tfprivadv``.
        download: Whether the network may be used (GroupLens and PyPI). A wheel
            already in the cache is still read when this is False.

    Returns:
        The data set; see :class:`MovieLens` for the columns.

    Raises:
        ValueError: If ``variant`` is not one of the accepted values, if ``path``
            is a file but not a zip, or if a file has a malformed line (the message
            names the file and the first bad line number).
        FileNotFoundError: If ``path`` does not exist or lacks required files, or,
            without ``path``, if no source worked (the message lists each place
            tried, why it failed, and how to fix it).

    Example:
        >>> data = load_movielens("1m", path="/data/ml-1m")  # doctest: +SKIP
        >>> data.users["gender"].value_counts()  # doctest: +SKIP
    """
    key = _normalize_variant(variant)
    layout = _LAYOUTS[key]
    if path is not None:
        files, source = _read_location(Path(path).expanduser(), layout)
        return _build(layout, files, source)

    attempts: list[str] = []
    env_dir = os.environ.get("TFPRIVADV_DATA_DIR")
    if env_dir:
        found = _try_location(Path(env_dir).expanduser(), layout, attempts, "data dir")
        if found is not None:
            return _build(layout, *found)
    else:
        attempts.append("TFPRIVADV_DATA_DIR: not set")

    cache = _cache_dir(cache_dir)
    if cache.is_dir():
        found = _try_location(cache, layout, attempts, "cache")
        if found is not None:
            return _build(layout, *found)
    else:
        attempts.append(f"cache {cache}: folder does not exist")

    url = GROUPLENS_URLS[key]
    if download:
        try:
            _download_grouplens(url, cache, layout.dirname)
            files, source = _read_location(cache / layout.dirname, layout)
        except Exception as exc:  # any failure here just moves on to the next source
            logger.warning("MovieLens %s: GroupLens download failed: %s", key, exc)
            attempts.append(f"download {url}: {type(exc).__name__}: {exc}")
        else:
            return _build(layout, files, source)
    else:
        attempts.append(f"download {url}: skipped (download=False)")

    if key == "100k":
        wheel = cache / RECBOLE_WHEEL
        if not wheel.is_file() and download:
            try:
                _fetch_recbole_wheel(cache)
            except Exception as exc:  # any failure here just ends the search
                logger.warning("MovieLens 100k: pip download of recbole: %s", exc)
                attempts.append(
                    f"recbole=={RECBOLE_VERSION} wheel via pip: {type(exc).__name__}: {exc}"
                )
        if wheel.is_file():
            try:
                data = _read_recbole_wheel(wheel)
            except (FileNotFoundError, zipfile.BadZipFile) as exc:
                logger.warning("MovieLens 100k: unusable %s: %s", wheel, exc)
                attempts.append(f"recbole wheel {wheel}: {type(exc).__name__}: {exc}")
            else:
                logger.info("MovieLens 100k: loaded from %s", data.source)
                return data
        if not download:
            attempts.append(f"recbole=={RECBOLE_VERSION} wheel: {wheel} absent and download=False")

    tried = "\n".join(f"  - {line}" for line in attempts)
    raise FileNotFoundError(
        f"MovieLens {key} not found. Tried:\n{tried}\n"
        f"Fix: pass path= (a folder or {layout.dirname}.zip from "
        f"https://grouplens.org/datasets/movielens/), set TFPRIVADV_DATA_DIR to a "
        f"folder holding {layout.dirname}/, put {layout.dirname}/ or "
        f"{layout.dirname}.zip into the cache {cache}, or allow download=True "
        f"with network access."
    )


def leave_one_out(
    ratings: pd.DataFrame,
    *,
    strategy: str = "last",
    seed: int | np.random.Generator | None = None,
    holdout: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Holds out one rating per user as the test set.

    Users with a single rating keep it in train and get no test row (they would
    otherwise have nothing to train on). Both outputs have the input's columns and
    dtypes, list their rows in the input's relative order and have a fresh
    RangeIndex.

    Args:
        ratings: Ratings with at least ``user_id`` and ``item_id`` (and
            ``timestamp`` for ``strategy="last"``).
        strategy: ``"last"``: each user's rating with the largest timestamp; among
            tied timestamps the one later in ``ratings`` wins, which makes the
            choice deterministic. ``"random"``: one uniformly random rating per
            user. Ignored when ``holdout`` is given.
        seed: Seed or numpy Generator for ``strategy="random"``; the same seed gives
            the same split.
        holdout: Explicit test pairs: a frame with ``user_id`` and ``item_id``
            (e.g. ML-1M's ``data.holdout``), at most one row per user. Every pair
            must be in ``ratings``. Test rows are taken from ``ratings``; a
            ``rating`` or ``timestamp`` missing there is filled from ``holdout``.
            Should ``ratings`` hold a pair more than once, all of those rows go to
            test, so that train never contains a held-out pair.

    Returns:
        ``(train, test)`` DataFrames.

    Raises:
        ValueError: If ``strategy`` is unknown, a required column is missing,
            ``strategy="last"`` is used without timestamps, or ``holdout`` has a
            pair that is not in ``ratings`` or more than one row for a user.

    Example:
        >>> ratings = pd.DataFrame(
        ...     {"user_id": [1, 1, 2, 2], "item_id": [5, 6, 5, 7], "timestamp": 9}
        ... )
        >>> train, test = leave_one_out(ratings)  # all tied: the later row wins
        >>> test["item_id"].tolist(), train["item_id"].tolist()
        ([6, 7], [5, 5])
    """
    if strategy not in _STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(map(repr, _STRATEGIES))}; got {strategy!r}"
        )
    _require_columns(ratings, ("user_id", "item_id"), "ratings")
    for column in ("user_id", "item_id"):
        if ratings[column].isna().any():
            raise ValueError(f"ratings column {column!r} has missing values")

    if holdout is not None:
        mask = _holdout_mask(ratings, holdout)
        train, test = _split(ratings, mask)
        return train, _fill_from_holdout(test, holdout)

    users = pd.factorize(ratings["user_id"])[0]
    if strategy == "last":
        no_timestamps = (
            "strategy='last' needs timestamps, but ratings {problem}. Pass holdout= "
            "(e.g. ML-1M's holdout_last.dat via data.holdout) or use "
            "strategy='random'."
        )
        if "timestamp" not in ratings.columns:
            raise ValueError(no_timestamps.format(problem="has no 'timestamp' column"))
        timestamps = ratings["timestamp"]
        missing = timestamps.isna().to_numpy()
        if len(ratings) and missing.all():
            raise ValueError(
                no_timestamps.format(
                    problem="has only missing timestamps (its ratings file had no timestamp column)"
                )
            )
        if missing.any():
            raise ValueError(
                f"strategy='last': {int(missing.sum()):,} of {len(ratings):,} ratings "
                f"have no timestamp (first at row {int(np.argmax(missing))}); fill "
                f"them, pass holdout= or use strategy='random'."
            )
        # Dense ranks order any sortable dtype (ints, floats, datetimes) as numbers.
        key = timestamps.rank(method="dense").to_numpy(dtype=np.float64)
    else:
        key = np.random.default_rng(seed).random(len(ratings))
    return _split(ratings, _pick_max_per_user(users, key))


def _pick_max_per_user(users: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Marks each user's row with the largest key (later row on ties).

    Users with a single row are left unmarked.
    """
    n = len(users)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    positions = np.arange(n)
    order = np.lexsort((positions, key, users))
    sorted_users = users[order]
    group_end = np.flatnonzero(np.r_[sorted_users[1:] != sorted_users[:-1], True])
    group_start = np.r_[0, group_end[:-1] + 1]
    multi = group_end > group_start
    mask[order[group_end[multi]]] = True
    return mask


def _holdout_mask(ratings: pd.DataFrame, holdout: pd.DataFrame) -> np.ndarray:
    _require_columns(holdout, ("user_id", "item_id"), "holdout")
    repeated = holdout["user_id"][holdout["user_id"].duplicated()]
    if len(repeated):
        raise ValueError(
            f"holdout must have at most one row per user; "
            f"{repeated.nunique():,} users have more, "
            f"e.g. user_id {_plain(repeated.iloc[0])!r}"
        )
    rating_pairs = pd.MultiIndex.from_arrays(
        [ratings["user_id"].to_numpy(), ratings["item_id"].to_numpy()]
    )
    holdout_pairs = pd.MultiIndex.from_arrays(
        [holdout["user_id"].to_numpy(), holdout["item_id"].to_numpy()]
    )
    found = holdout_pairs.isin(rating_pairs)
    if not found.all():
        first = int(np.argmax(~found))
        raise ValueError(
            f"{int((~found).sum()):,} of {len(holdout):,} holdout (user_id, item_id) "
            f"pairs are not in ratings, e.g. "
            f"({_plain(holdout['user_id'].iloc[first])!r}, "
            f"{_plain(holdout['item_id'].iloc[first])!r})"
        )
    return rating_pairs.isin(holdout_pairs)


def _fill_from_holdout(test: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    for column in ("rating", "timestamp"):
        if column not in test.columns or column not in holdout.columns:
            continue
        missing = test[column].isna()
        if not missing.any():
            continue
        by_pair = holdout.set_index(["user_id", "item_id"])[column]
        pairs = pd.MultiIndex.from_frame(test[["user_id", "item_id"]])
        values = pd.Series(by_pair.reindex(pairs).to_numpy(), index=test.index).astype(
            test[column].dtype
        )
        test[column] = test[column].where(~missing, values)
    return test


def _split(ratings: pd.DataFrame, test_mask: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    train = ratings.iloc[np.flatnonzero(~test_mask)].reset_index(drop=True)
    test = ratings.iloc[np.flatnonzero(test_mask)].reset_index(drop=True)
    return train, test


def _plain(value: Any) -> Any:
    """Makes numpy scalars plain, so messages read ``2`` and not ``np.int64(2)``."""
    return value.item() if isinstance(value, np.generic) else value


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} is missing required columns {missing}; it has {list(frame.columns)}"
        )


# --------------------------------------------------------------------------- sources


def _normalize_variant(variant: Any) -> str:
    if isinstance(variant, str):
        key = variant.strip().lower().removeprefix("ml-")
        if key in _LAYOUTS:
            return key
    raise ValueError(
        f"variant must be one of '100k', '1m' (also 'ml-100k', 'ml-1m', any case); got {variant!r}"
    )


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TFPRIVADV_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tfprivadv"


def _try_location(
    location: Path, layout: _Layout, attempts: list[str], what: str
) -> tuple[dict[str, tuple[str, bytes]], str] | None:
    try:
        return _read_location(location, layout)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        logger.info("MovieLens %s: %s %s not usable: %s", layout.variant, what, location, exc)
        attempts.append(f"{what} {location}: {exc}")
        return None


def _read_location(location: Path, layout: _Layout) -> tuple[dict[str, tuple[str, bytes]], str]:
    """Reads the variant's files from a folder or zip.

    Returns:
        ``{file name: (label for messages, bytes)}`` for the required files and the
        optional ones present, and a description of the source.
    """
    if not location.exists():
        raise FileNotFoundError(f"MovieLens {layout.variant} path does not exist: {location}")
    if location.is_dir():
        for folder in (location, location / layout.dirname):
            if folder.is_dir() and all((folder / n).is_file() for n in layout.required):
                names = layout.required + tuple(
                    n for n in layout.optional if (folder / n).is_file()
                )
                files = {n: (str(folder / n), (folder / n).read_bytes()) for n in names}
                logger.info("MovieLens %s: reading folder %s", layout.variant, folder)
                return files, str(folder)
        archive = location / f"{layout.dirname}.zip"
        if archive.is_file():
            return _read_zip(archive, layout)
        sub = location / layout.dirname
        folder = sub if sub.is_dir() else location
        missing = [n for n in layout.required if not (folder / n).is_file()]
        also = "" if folder == sub else f" (nor in a {layout.dirname}/ subfolder)"
        raise FileNotFoundError(
            f"MovieLens {layout.variant} files missing: {', '.join(missing)} "
            f"not found in folder {folder}{also}"
        )
    if zipfile.is_zipfile(location):
        return _read_zip(location, layout)
    raise ValueError(
        f"MovieLens {layout.variant} path is neither a folder nor a zip archive: {location}"
    )


def _read_zip(archive: Path, layout: _Layout) -> tuple[dict[str, tuple[str, bytes]], str]:
    with zipfile.ZipFile(archive) as zf:
        members = set(zf.namelist())
        prefixes = [""] + sorted(
            m[: -len(layout.ratings)]
            for m in members
            if m.endswith("/" + layout.ratings) and m.count("/") == 1
        )
        for prefix in prefixes:
            if all(prefix + n in members for n in layout.required):
                names = layout.required + tuple(n for n in layout.optional if prefix + n in members)
                files = {n: (f"{archive}:{prefix}{n}", zf.read(prefix + n)) for n in names}
                logger.info("MovieLens %s: reading zip %s", layout.variant, archive)
                return files, f"{archive} (zip, files under {prefix or './'})"
    prefix = f"{layout.dirname}/"
    if not any(m.startswith(prefix) for m in members):
        prefix = ""
    missing = [prefix + n for n in layout.required if prefix + n not in members]
    raise FileNotFoundError(
        f"MovieLens {layout.variant} files missing: {', '.join(missing)} not found in zip {archive}"
    )


def _download_grouplens(url: str, cache: Path, dirname: str) -> None:
    """Downloads the GroupLens zip into ``cache`` and extracts ``dirname/`` there."""
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{dirname}-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        ):
            shutil.copyfileobj(response, out)
        if not zipfile.is_zipfile(tmp):
            raise ValueError(f"{url} did not return a zip archive")
        # Atomic, so an interrupted download never leaves a truncated zip behind.
        os.replace(tmp, cache / f"{dirname}.zip")
    finally:
        tmp.unlink(missing_ok=True)
    _extract_zip(cache / f"{dirname}.zip", cache, dirname)


def _extract_zip(archive: Path, cache: Path, dirname: str) -> None:
    target = cache / dirname
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{dirname}-extract-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                # Only flat files under dirname/: never trust paths from an archive.
                parts = info.filename.split("/")
                if info.is_dir() or len(parts) != 2 or parts[0] != dirname:
                    continue
                if parts[1] in ("", ".", ".."):
                    continue
                (staging / parts[1]).write_bytes(zf.read(info))
        if not target.exists():
            os.replace(staging, target)
            return
        target.mkdir(parents=True, exist_ok=True)
        for extracted in staging.iterdir():
            os.replace(extracted, target / extracted.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_recbole_wheel(cache: Path) -> Path:
    """Puts ``recbole-1.2.1-py3-none-any.whl`` into ``cache`` with pip download."""
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".pip-download-"))
    try:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            f"recbole=={RECBOLE_VERSION}",
            "-d",
            str(staging),
        ]
        logger.info("Fetching the recbole==%s wheel with pip", RECBOLE_VERSION)
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip()[-500:]
            raise RuntimeError(f"pip download exited {result.returncode}: {tail}")
        wheel = staging / RECBOLE_WHEEL
        if not wheel.is_file():
            raise RuntimeError(f"pip download did not produce {RECBOLE_WHEEL}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != _RECBOLE_WHEEL_SHA256:
            raise RuntimeError(
                f"{RECBOLE_WHEEL} has sha256 {digest}, expected {_RECBOLE_WHEEL_SHA256}"
            )
        os.replace(wheel, cache / RECBOLE_WHEEL)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache / RECBOLE_WHEEL


# --------------------------------------------------------------------------- parsers


def _build(layout: _Layout, files: dict[str, tuple[str, bytes]], source: str) -> MovieLens:
    if layout.variant == "100k":
        ratings = _parse_ratings(*files["u.data"], sep=b"\t")
        users = _users_100k(files["u.user"][0], _split_lines(*files["u.user"], sep="|", fields=5))
        genres = _parse_genre_names(*files["u.genre"]) if "u.genre" in files else ML100K_GENRES
        items = _parse_items_100k(*files["u.item"], genres=genres)
        holdout = None
    else:
        ratings = _parse_ratings(*files["ratings.dat"], sep=b"::")
        users = _parse_users_1m(*files["users.dat"])
        items = _parse_movies_1m(*files["movies.dat"])
        holdout = (
            _parse_ratings(*files["holdout_last.dat"], sep=b"::")
            if "holdout_last.dat" in files
            else None
        )
    data = MovieLens(layout.variant, ratings, users, items, holdout, source)
    logger.info("MovieLens %s: loaded %r", layout.variant, data)
    return data


def _parse_ratings(label: str, data: bytes, *, sep: bytes, header_lines: int = 0) -> pd.DataFrame:
    """Parses ``user item rating [timestamp]`` lines, 3 or 4 fields throughout."""
    ncols = 0
    for lineno, line in _byte_lines(data, header_lines):
        ncols = len(line.split(sep))
        if ncols not in (3, 4):
            raise ValueError(
                f"{label}, line {lineno}: expected 3 or 4 fields "
                f"(user, item, rating[, timestamp]) separated by {sep.decode()!r}, "
                f"found {ncols}: {line[:100].decode('latin-1')!r}"
            )
        break
    if ncols == 0:
        columns: list[np.ndarray] = [np.empty(0, np.int64)] * 2 + [np.empty(0, np.float64)]
    else:
        # The C parser is ~20x faster than sep="::" with the python engine.
        text = data if sep == b"\t" else data.replace(sep, b"\t")
        dtypes = {0: np.int64, 1: np.int64, 2: np.float64, 3: np.int64}
        try:
            frame = pd.read_csv(
                io.BytesIO(text),
                sep="\t",
                header=None,
                names=list(range(ncols)),
                dtype={i: dtypes[i] for i in range(ncols)},
                skiprows=header_lines,
                quoting=3,  # csv.QUOTE_NONE
                engine="c",
            )
            if not np.isfinite(frame[2].to_numpy()).all():
                raise ValueError("non-finite rating")
        except (ValueError, OverflowError) as exc:
            _raise_first_bad_rating_line(label, data, sep, ncols, header_lines)
            raise ValueError(f"{label}: could not parse ratings: {exc}") from exc
        columns = [frame[i].to_numpy() for i in range(ncols)]
    n = len(columns[0])
    if ncols == 4:
        timestamp = pd.array(columns[3], dtype="Int64")
    else:
        timestamp = pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
    return pd.DataFrame(
        {
            "user_id": columns[0].astype(np.int64, copy=False),
            "item_id": columns[1].astype(np.int64, copy=False),
            "rating": columns[2].astype(np.float32),
            "timestamp": timestamp,
        }
    )


def _raise_first_bad_rating_line(
    label: str, data: bytes, sep: bytes, ncols: int, header_lines: int
) -> None:
    for lineno, line in _byte_lines(data, header_lines):
        parts = line.split(sep)
        shown = line[:100].decode("latin-1")
        if len(parts) != ncols:
            raise ValueError(
                f"{label}, line {lineno}: expected {ncols} fields separated by "
                f"{sep.decode()!r} (as on the first line), found {len(parts)}: "
                f"{shown!r}"
            )
        for name, part in zip(_RATING_FIELDS, parts, strict=False):
            try:
                if name == "rating":
                    if not math.isfinite(float(part)):
                        raise ValueError
                else:
                    int(part)
            except ValueError:
                kind = "a finite number" if name == "rating" else "an integer"
                raise ValueError(
                    f"{label}, line {lineno}: {name} is not {kind}: {shown!r}"
                ) from None


def _byte_lines(data: bytes, header_lines: int = 0) -> Iterator[tuple[int, bytes]]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.removesuffix(b"\r")
        if lineno > header_lines and line:
            yield lineno, line


def _split_lines(
    label: str,
    data: bytes,
    *,
    sep: str,
    fields: int,
    encoding: str = "latin-1",
    header_lines: int = 0,
) -> Iterator[tuple[str, int, list[str]]]:
    for lineno, raw in enumerate(data.decode(encoding).split("\n"), start=1):
        line = raw.removesuffix("\r")
        if lineno <= header_lines or not line:
            continue
        parts = line.split(sep)
        if len(parts) != fields:
            raise ValueError(
                f"{label}, line {lineno}: expected {fields} fields separated by "
                f"{sep!r}, found {len(parts)}: {line[:100]!r}"
            )
        yield label, lineno, parts


def _int(text: str, label: str, lineno: int, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{label}, line {lineno}: {field} is not an integer: {text!r}") from None


def _users_frame(rows: list[tuple[int, str, int, float, str, str]], label: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows,
        columns=["user_id", "gender", "age_group", "age", "occupation", "zip_code"],
    ).astype({"user_id": "int64", "age_group": "int64", "age": "float64"})
    duplicated = frame["user_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"{label}: user_id {frame['user_id'][duplicated].iloc[0]} appears twice")
    return frame.sort_values("user_id", kind="stable").reset_index(drop=True)


def _users_100k(label: str, lines: Iterator[tuple[str, int, list[str]]]) -> pd.DataFrame:
    """Builds users from ``user|age|gender|occupation|zip`` lines (years of age)."""
    rows = []
    for _, lineno, (user, age, gender, occupation, zip_code) in lines:
        years = _int(age, label, lineno, "age")
        rows.append(
            (
                _int(user, label, lineno, "user_id"),
                gender,
                age_to_group(years),
                float(years),
                occupation,
                zip_code,
            )
        )
    return _users_frame(rows, label)


def _parse_users_1m(label: str, data: bytes) -> pd.DataFrame:
    rows = []
    for _, lineno, parts in _split_lines(label, data, sep="::", fields=5):
        user, gender, age, occupation, zip_code = parts
        code = _int(age, label, lineno, "age")
        if code not in AGE_GROUP_LABELS:
            raise ValueError(
                f"{label}, line {lineno}: age {code} is not an ML-1M age-group code "
                f"{AGE_GROUP_CODES}"
            )
        occ = _int(occupation, label, lineno, "occupation")
        if not 0 <= occ < len(ML1M_OCCUPATIONS):
            raise ValueError(
                f"{label}, line {lineno}: occupation {occ} is outside the ML-1M "
                f"codes 0..{len(ML1M_OCCUPATIONS) - 1}"
            )
        rows.append(
            (
                _int(user, label, lineno, "user_id"),
                gender,
                code,
                math.nan,
                ML1M_OCCUPATIONS[occ],
                zip_code,
            )
        )
    return _users_frame(rows, label)


def _items_frame(rows: list[tuple[int, str, str]], label: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["item_id", "title", "genres"]).astype({"item_id": "int64"})
    duplicated = frame["item_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"{label}: item_id {frame['item_id'][duplicated].iloc[0]} appears twice")
    return frame.sort_values("item_id", kind="stable").reset_index(drop=True)


def _parse_genre_names(label: str, data: bytes) -> tuple[str, ...]:
    by_index = {}
    for _, lineno, (name, index) in _split_lines(label, data, sep="|", fields=2):
        by_index[_int(index, label, lineno, "genre index")] = name
    if sorted(by_index) != list(range(len(ML100K_GENRES))):
        raise ValueError(
            f"{label}: expected genre indices 0..{len(ML100K_GENRES) - 1}, got {sorted(by_index)}"
        )
    return tuple(by_index[i] for i in range(len(ML100K_GENRES)))


def _parse_items_100k(label: str, data: bytes, *, genres: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for _, lineno, parts in _split_lines(label, data, sep="|", fields=5 + len(genres)):
        flags = parts[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise ValueError(f"{label}, line {lineno}: genre flags must be 0 or 1, got {flags}")
        rows.append(
            (
                _int(parts[0], label, lineno, "item_id"),
                # Three u.item titles end in a stray space; the same titles in ML-1M
                # and RecBole do not.
                parts[1].strip(),
                "|".join(g for g, flag in zip(genres, flags, strict=True) if flag == "1"),
            )
        )
    return _items_frame(rows, label)


def _parse_movies_1m(label: str, data: bytes) -> pd.DataFrame:
    rows = [
        (_int(item, label, lineno, "item_id"), title, genres)
        for _, lineno, (item, title, genres) in _split_lines(label, data, sep="::", fields=3)
    ]
    return _items_frame(rows, label)


# ----------------------------------------------------------------- recbole wheel


def _read_recbole_wheel(wheel: Path) -> MovieLens:
    """Reads ML-100K from the ``recbole==1.2.1`` wheel without installing it.

    The wheel holds RecBole "atomic files": TSV with a typed header line such as
    ``user_id:token\\titem_id:token\\trating:float\\ttimestamp:float``. ``.inter``
    and ``.user`` carry the same rows as ``u.data`` and ``u.user``; ``.item`` has
    UTF-8 titles split into ``movie_title`` and ``release_year`` and space-joined
    genres in ``class``, from which the ``u.item`` style title and genres are
    rebuilt.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            inter, user, item = (
                zf.read(_RECBOLE_MEMBER.format(ext)) for ext in ("inter", "user", "item")
            )
        except KeyError as exc:
            raise FileNotFoundError(f"{wheel} lacks {exc.args[0]}") from None
    labels = {ext: f"{wheel}:{_RECBOLE_MEMBER.format(ext)}" for ext in ("inter", "user", "item")}

    _check_header(labels["inter"], inter, ("user_id", "item_id", "rating", "timestamp"))
    ratings = _parse_ratings(labels["inter"], inter, sep=b"\t", header_lines=1)

    _check_header(labels["user"], user, ("user_id", "age", "gender", "occupation", "zip_code"))
    users = _users_100k(
        labels["user"],
        _split_lines(labels["user"], user, sep="\t", fields=5, header_lines=1),
    )

    _check_header(labels["item"], item, ("item_id", "movie_title", "release_year", "class"))
    rows = []
    for label, lineno, (item_id, title, year, classes) in _split_lines(
        labels["item"], item, sep="\t", fields=4, encoding="utf-8", header_lines=1
    ):
        if (title, year) == ("unkonwn", "unkonwn"):
            # RecBole's misspelt stand-in for u.item's title "unknown" (id 267).
            title = "unknown"
        elif year:
            # release_year is the title's last "(...)": mostly a year, but "V" for
            # "... (1995) (V)", so any value is put back the same way.
            title = f"{title} ({year})"
        rows.append((_int(item_id, label, lineno, "item_id"), title, "|".join(classes.split())))
    items = _items_frame(rows, labels["item"])
    return MovieLens(
        "100k",
        ratings,
        users,
        items,
        None,
        f"recbole=={RECBOLE_VERSION} wheel at {wheel}",
    )


def _check_header(label: str, data: bytes, expected: tuple[str, ...]) -> None:
    first = data.split(b"\n", 1)[0].decode("utf-8").removesuffix("\r")
    names = tuple(field.split(":", 1)[0] for field in first.split("\t"))
    if names != expected:
        raise ValueError(
            f"{label}, line 1: expected a RecBole header with fields {expected}, found {first!r}"
        )
