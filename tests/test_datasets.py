"""Tests for tfprivadv.datasets (MovieLens loading and leave-one-out splits).

Unit tests write tiny fixture files in the GroupLens and RecBole formats into
tmp_path; MovieLens itself may not be redistributed, so none is kept in the repo.
Integration tests read the real data from $TFPRIVADV_DATA_DIR (folders ml-100k/ and
ml-1m/) and skip when it is not set.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfprivadv.datasets import (
    AGE_GROUP_CODES,
    AGE_GROUP_LABELS,
    ML1M_OCCUPATIONS,
    ML100K_GENRES,
    MovieLens,
    age_to_group,
    leave_one_out,
    load_movielens,
)
from tfprivadv.datasets import movielens as ml

REAL_DATA_DIR = os.environ.get("TFPRIVADV_DATA_DIR")

# ----------------------------------------------------------------------- fixtures

# User 1 has two ratings tied at t=200 (items 20 and 30); user 3 has one rating.
U_DATA = "1\t10\t4\t100\n2\t10\t2\t50\n1\t20\t3\t200\n3\t30\t1\t10\n2\t20\t5\t40\n1\t30\t5\t200\n"
U_USER = "3|17|M|student|T8H1N\n1|24|M|technician|85711\n2|53|F|other|01002\n"


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


CHILDREN = "Children's"
U_ITEM = "".join(
    [
        f"10|Café Society (1995)|01-Jan-1995||http://x/10|{_flags('Comedy', 'Drama')}\n",
        # A stray trailing space, as in three real u.item titles.
        "20|Toy Story (1995) |01-Jan-1995||http://x/20|"
        f"{_flags('Animation', CHILDREN, 'Comedy')}\n",
        f"30|unknown||||{_flags('unknown')}\n",
        f"40|Land Before Time III (1995) (V)|01-Jan-1995||http://x/40|{_flags('Animation')}\n",
    ]
)
U_GENRE = "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n"

RECBOLE_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + U_DATA
RECBOLE_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    + U_USER.replace("|", "\t")
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tCafé Society\t1995\tComedy Drama\n"
    "20\tToy Story\t1995\tAnimation Children's Comedy\n"
    "30\tunkonwn\tunkonwn\tunknown\n"
    "40\tLand Before Time III (1995)\tV\tAnimation\n"
)

USERS_DAT = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
MOVIES_DAT = (
    "10::Café (1995)::Comedy|Drama\n"
    "20::Toy Story (1995)::Animation|Children's|Comedy\n"
    "30::Heat (1995)::Action|Crime|Thriller\n"
)
RATINGS_4COL = (
    "1::10::5::978300760\n1::20::3::978302109\n1::30::4::978300760\n"
    "2::10::4::978298413\n2::30::2::978299000\n3::20::1::978297000\n"
)
RATINGS_3COL = "".join(line.rsplit("::", 1)[0] + "\n" for line in RATINGS_4COL.splitlines())
HOLDOUT_DAT = "1::20::3::978302109\n2::30::2::978299000\n"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("latin-1"))
    return folder


def _files_100k() -> dict[str, str]:
    return {"u.data": U_DATA, "u.user": U_USER, "u.item": U_ITEM, "u.genre": U_GENRE}


def _files_1m(ratings: str = RATINGS_4COL, holdout: str | None = None) -> dict:
    files = {"ratings.dat": ratings, "users.dat": USERS_DAT, "movies.dat": MOVIES_DAT}
    if holdout is not None:
        files["holdout_last.dat"] = holdout
    return files


def _zip(archive: Path, files: dict[str, str], prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        if prefix:
            zf.writestr(prefix, b"")
        for name, text in files.items():
            zf.writestr(prefix + name, text.encode("latin-1"))
    return archive


def _fake_wheel(path: Path, inter: str = RECBOLE_INTER) -> Path:
    """Writes a tiny zip laid out like the recbole==1.2.1 wheel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = "recbole/dataset_example/ml-100k/ml-100k."
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        zf.writestr(base + "inter", inter.encode("utf-8"))
        zf.writestr(base + "user", RECBOLE_USER.encode("utf-8"))
        zf.writestr(base + "item", RECBOLE_ITEM.encode("utf-8"))
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("TFPRIVADV_DATA_DIR", raising=False)
    monkeypatch.delenv("TFPRIVADV_CACHE_DIR", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test if the loader touches GroupLens or runs pip."""
    calls: list[str] = []

    def fail(*args, **kwargs):
        calls.append(repr(args[0]))
        raise AssertionError(f"network used: {args[0]!r}")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    monkeypatch.setattr(subprocess, "run", fail)
    return calls


@pytest.fixture
def folder_100k(tmp_path) -> Path:
    return _write(tmp_path / "ml-100k", _files_100k())


# ------------------------------------------------------------------- age groups


@pytest.mark.parametrize(
    ("years", "code"),
    [
        (0, 1),
        (17, 1),
        (17.9, 1),
        (18, 18),
        (24, 18),
        (24.9, 18),
        (25, 25),
        (34, 25),
        (35, 35),
        (44, 35),
        (45, 45),
        (49, 45),
        (50, 50),
        (55, 50),
        (56, 56),
        (73, 56),
    ],
)
def test_age_to_group_boundaries(years, code):
    assert age_to_group(years) == code
    assert isinstance(age_to_group(years), int)


def test_age_to_group_vectorized():
    series = pd.Series([7, 18, 30, 56], index=[5, 6, 7, 8])
    groups = age_to_group(series)
    assert groups.tolist() == [1, 18, 25, 56]
    assert groups.index.tolist() == [5, 6, 7, 8]
    assert groups.dtype == np.int64
    array = age_to_group(np.array([[17, 45], [50, 99]]))
    assert array.tolist() == [[1, 45], [50, 56]]
    assert array.dtype == np.int64


@pytest.mark.parametrize("bad", [float("nan"), -1, pd.Series([20.0, None])])
def test_age_to_group_rejects_missing_and_negative(bad):
    with pytest.raises(ValueError, match="age"):
        age_to_group(bad)


def test_constants():
    assert AGE_GROUP_CODES == (1, 18, 25, 35, 45, 50, 56)
    assert tuple(AGE_GROUP_LABELS) == AGE_GROUP_CODES
    assert AGE_GROUP_LABELS[1] == "Under 18" and AGE_GROUP_LABELS[56] == "56+"
    assert len(ML1M_OCCUPATIONS) == 21
    assert ML1M_OCCUPATIONS[0] == "other or not specified"
    assert ML1M_OCCUPATIONS[10] == "K-12 student"
    assert ML1M_OCCUPATIONS[20] == "writer"


# ---------------------------------------------------------------- 100K loading


def _check_100k(data: MovieLens) -> None:
    assert data.name == "100k"
    assert data.holdout is None
    r = data.ratings
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "Int64"]
    assert isinstance(r.index, pd.RangeIndex)
    # File order is kept.
    assert r["user_id"].tolist() == [1, 2, 1, 3, 2, 1]
    assert r["item_id"].tolist() == [10, 10, 20, 30, 20, 30]
    assert r["rating"].tolist() == [4, 2, 3, 1, 5, 5]
    assert r["timestamp"].tolist() == [100, 50, 200, 10, 40, 200]

    u = data.users
    assert list(u.columns) == [
        "user_id",
        "gender",
        "age_group",
        "age",
        "occupation",
        "zip_code",
    ]
    assert u["user_id"].tolist() == [1, 2, 3]
    assert u["gender"].tolist() == ["M", "F", "M"]
    assert u["age"].tolist() == [24.0, 53.0, 17.0]
    assert u["age"].dtype == np.float64
    assert u["age_group"].tolist() == [18, 50, 1]
    assert u["age_group"].dtype == np.int64
    assert u["occupation"].tolist() == ["technician", "other", "student"]
    assert u["zip_code"].tolist() == ["85711", "01002", "T8H1N"]

    i = data.items
    assert list(i.columns) == ["item_id", "title", "genres"]
    assert i["item_id"].dtype == np.int64
    assert i["item_id"].tolist() == [10, 20, 30, 40]
    assert i["title"].tolist() == [
        "Café Society (1995)",
        "Toy Story (1995)",
        "unknown",
        "Land Before Time III (1995) (V)",
    ]
    assert i["genres"].tolist() == [
        "Comedy|Drama",
        "Animation|Children's|Comedy",
        "unknown",
        "Animation",
    ]


def test_load_100k_folder(folder_100k, no_network):
    data = load_movielens("100k", path=folder_100k)
    _check_100k(data)
    assert data.source == str(folder_100k)
    assert "ratings=6" in repr(data) and "users=3" in repr(data)


def test_load_100k_parent_folder_and_variant_spelling(folder_100k):
    data = load_movielens("ML-100K", path=folder_100k.parent)
    _check_100k(data)


def test_load_100k_without_u_genre_uses_fixed_names(tmp_path):
    files = _files_100k()
    del files["u.genre"]
    _check_100k(load_movielens("100k", path=_write(tmp_path / "x", files)))


def test_load_100k_zip(tmp_path, folder_100k):
    archive = _zip(tmp_path / "ml-100k.zip", _files_100k(), "ml-100k/")
    data = load_movielens("ml-100k", path=archive)
    _check_100k(data)
    assert str(archive) in data.source
    folder = load_movielens("100k", path=folder_100k)
    for frame in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(getattr(data, frame), getattr(folder, frame))


# ------------------------------------------------------------------ 1M loading


def test_load_1m_folder_with_timestamps(tmp_path, no_network):
    data = load_movielens("1m", path=_write(tmp_path / "ml-1m", _files_1m()))
    assert data.name == "1m"
    assert data.holdout is None
    r = data.ratings
    assert r.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "Int64"]
    assert r["timestamp"].tolist()[:2] == [978300760, 978302109]
    assert len(r) == 6
    u = data.users
    assert u["gender"].tolist() == ["F", "M", "M"]
    assert u["age_group"].tolist() == [1, 56, 25]
    assert u["age"].isna().all() and u["age"].dtype == np.float64
    assert u["occupation"].tolist() == ["K-12 student", "self-employed", "scientist"]
    assert u["zip_code"].tolist() == ["48067", "70072", "55117"]
    assert data.items["title"].tolist()[0] == "Café (1995)"
    assert data.items["genres"].tolist()[1] == "Animation|Children's|Comedy"


def test_load_1m_three_columns_with_holdout(tmp_path):
    folder = _write(tmp_path / "ml-1m", _files_1m(RATINGS_3COL, HOLDOUT_DAT))
    data = load_movielens("1m", path=folder)
    r = data.ratings
    assert r["timestamp"].dtype == "Int64" and r["timestamp"].isna().all()
    assert r["rating"].tolist() == [5, 3, 4, 4, 2, 1]
    h = data.holdout
    assert h is not None
    assert h.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "Int64"]
    assert h[["user_id", "item_id"]].values.tolist() == [[1, 20], [2, 30]]

    train, test = leave_one_out(r, holdout=h)
    assert test[["user_id", "item_id"]].values.tolist() == [[1, 20], [2, 30]]
    # Timestamps missing from ratings.dat come from the holdout file.
    assert test["timestamp"].tolist() == [978302109, 978299000]
    assert test["rating"].tolist() == [3, 2]
    assert len(train) == 4 and train["timestamp"].isna().all()
    assert train.dtypes.equals(r.dtypes) and test.dtypes.equals(r.dtypes)


def test_load_1m_zip(tmp_path):
    archive = _zip(tmp_path / "ml-1m.zip", _files_1m(), "ml-1m/")
    data = load_movielens("1m", path=archive)
    assert len(data.ratings) == 6 and len(data.users) == 3 and len(data.items) == 3


# -------------------------------------------------------- RecBole wheel source


def test_recbole_wheel_offline_matches_grouplens(tmp_path, folder_100k, no_network, caplog):
    cache = tmp_path / "cache"
    wheel = _fake_wheel(cache / ml.RECBOLE_WHEEL)
    with caplog.at_level(logging.INFO, logger="tfprivadv.datasets"):
        data = load_movielens("100k", cache_dir=cache, download=False)
    assert data.source == f"recbole==1.2.1 wheel at {wheel}"
    assert f"loaded from recbole==1.2.1 wheel at {wheel}" in caplog.text
    _check_100k(data)
    grouplens = load_movielens("100k", path=folder_100k)
    for frame in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(getattr(data, frame), getattr(grouplens, frame))
    assert no_network == []


def test_recbole_wheel_bad_header(tmp_path):
    cache = tmp_path / "cache"
    inter = "item_id:token\tuser_id:token\trating:float\n1\t2\t3\n"
    _fake_wheel(cache / ml.RECBOLE_WHEEL, inter=inter)
    with pytest.raises(ValueError, match=r"ml-100k\.inter, line 1"):
        load_movielens("100k", cache_dir=cache, download=False)


def test_pip_download_of_wheel(tmp_path, monkeypatch, folder_100k):
    cache = tmp_path / "cache"
    fake = _fake_wheel(tmp_path / "built" / ml.RECBOLE_WHEEL)
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        target = Path(command[command.index("-d") + 1])
        assert target.parent == cache  # the temporary folder lives in the cache
        (target / ml.RECBOLE_WHEEL).write_bytes(fake.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    def no_grouplens(url, timeout):
        raise OSError("no route to GroupLens in this test")

    monkeypatch.setattr(urllib.request, "urlopen", no_grouplens)
    monkeypatch.setattr(subprocess, "run", fake_run)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    monkeypatch.setattr(ml, "_RECBOLE_WHEEL_SHA256", digest)

    data = load_movielens("100k", cache_dir=cache)
    _check_100k(data)
    assert commands[0][:8] == [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "recbole==1.2.1",
        "-d",
    ]
    assert sorted(p.name for p in cache.iterdir()) == [ml.RECBOLE_WHEEL]

    # Now cached: no second pip run, even with download=False.
    load_movielens("100k", cache_dir=cache, download=False)
    assert len(commands) == 1


def test_pip_download_with_wrong_hash_is_rejected(tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def fake_run(command, **kwargs):
        target = Path(command[command.index("-d") + 1])
        _fake_wheel(target / ml.RECBOLE_WHEEL)
        return subprocess.CompletedProcess(command, 0, "", "")

    def no_grouplens(url, timeout):
        raise OSError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_grouplens)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(FileNotFoundError, match="sha256"):
        load_movielens("100k", cache_dir=cache)
    assert not (cache / ml.RECBOLE_WHEEL).exists()


# ------------------------------------------------------------ source resolution


def test_data_dir_env_takes_precedence_over_cache(tmp_path, monkeypatch, no_network):
    data_dir = tmp_path / "data"
    _write(data_dir / "ml-100k", _files_100k())
    cache = tmp_path / "cache"
    _fake_wheel(cache / ml.RECBOLE_WHEEL)
    monkeypatch.setenv("TFPRIVADV_DATA_DIR", str(data_dir))
    data = load_movielens("100k", cache_dir=cache)
    assert data.source == str(data_dir / "ml-100k")


def test_cache_folder_and_cache_zip(tmp_path, monkeypatch, no_network):
    cache = tmp_path / "cache"
    cache.mkdir()
    _zip(cache / "ml-1m.zip", _files_1m(), "ml-1m/")
    data = load_movielens("1m", cache_dir=cache)
    assert "ml-1m.zip" in data.source
    _write(cache / "ml-1m", _files_1m(RATINGS_3COL))
    monkeypatch.setenv("TFPRIVADV_CACHE_DIR", str(cache))
    data = load_movielens("1m")  # cache_dir from the environment
    assert data.source == str(cache / "ml-1m")
    assert data.ratings["timestamp"].isna().all()


def test_grouplens_download_is_atomic_and_extracted(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    payload = _zip(tmp_path / "served.zip", _files_1m(), "ml-1m/").read_bytes()
    requests = []

    def fake_urlopen(url, timeout):
        requests.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    data = load_movielens("1m", cache_dir=cache)
    assert requests == [("https://files.grouplens.org/datasets/movielens/ml-1m.zip", 15.0)]
    assert data.source == str(cache / "ml-1m")
    assert sorted(p.name for p in cache.iterdir()) == ["ml-1m", "ml-1m.zip"]
    assert sorted(p.name for p in (cache / "ml-1m").iterdir()) == sorted(_files_1m())
    assert len(data.ratings) == 6


def test_grouplens_download_of_non_zip_leaves_no_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>"))
    with pytest.raises(FileNotFoundError, match="did not return a zip"):
        load_movielens("1m", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_nothing_found_offline_lists_every_place(tmp_path, no_network):
    cache = tmp_path / "empty-cache"
    with pytest.raises(FileNotFoundError) as info:
        load_movielens("100k", cache_dir=cache, download=False)
    message = str(info.value)
    for needle in (
        "TFPRIVADV_DATA_DIR: not set",
        f"cache {cache}",
        "download=False",
        "recbole==1.2.1 wheel",
        "pass path=",
    ):
        assert needle in message
    assert no_network == []


def test_nothing_found_1m_with_bad_data_dir(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TFPRIVADV_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        load_movielens("1m", cache_dir=tmp_path, download=False)
    assert "nowhere" in str(info.value) and "recbole" not in str(info.value)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize("variant", ["10m", "ml-20m", "", 100, None])
def test_unknown_variant(variant, tmp_path):
    with pytest.raises(ValueError) as info:
        load_movielens(variant, path=tmp_path)
    message = str(info.value)
    assert "variant" in message and "'100k'" in message and "'1m'" in message
    assert repr(variant) in message


def test_path_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        load_movielens("100k", path=missing)


def test_folder_missing_files(tmp_path):
    files = _files_100k()
    del files["u.item"], files["u.user"]
    folder = _write(tmp_path / "ml-100k", files)
    with pytest.raises(FileNotFoundError) as info:
        load_movielens("100k", path=folder)
    message = str(info.value)
    assert "u.user" in message and "u.item" in message and str(folder) in message
    assert "u.data" not in message


def test_zip_missing_files(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"u.data": U_DATA}, "ml-100k/")
    with pytest.raises(FileNotFoundError, match=r"ml-100k/u\.user.*x\.zip"):
        load_movielens("100k", path=archive)


def test_path_is_a_plain_file(tmp_path):
    plain = tmp_path / "ratings.csv"
    plain.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        load_movielens("1m", path=plain)


@pytest.mark.parametrize(
    ("variant", "name", "text", "pattern"),
    [
        ("100k", "u.data", "1\t10\t4\t100\n2\t10\t2\t50\n3\t30\n", r"u\.data, line 3"),
        ("100k", "u.data", "1\t10\t4\t100\n2\tx\t2\t50\n", r"u\.data, line 2.*item_id"),
        ("100k", "u.data", "1\t10\t4\t1\n\n1\t2\t3\t4\t5\n", r"u\.data, line 3"),
        ("100k", "u.data", "1\t10\n", r"u\.data, line 1: expected 3 or 4"),
        ("100k", "u.user", "1|24|M|technician\n", r"u\.user, line 1"),
        ("100k", "u.user", "1|x|M|technician|1\n", r"u\.user, line 1: age"),
        ("100k", "u.item", "10|T|d||u|" + "2|" * 18 + "0\n", r"u\.item, line 1"),
        (
            "1m",
            "ratings.dat",
            "1::10::5\n1::20::4::978300760\n",
            r"ratings\.dat, line 2",
        ),
        (
            "1m",
            "ratings.dat",
            "1::10::5\n1.5::20::4\n",
            r"ratings\.dat, line 2.*user_id",
        ),
        (
            "1m",
            "ratings.dat",
            "1::10::5\n1::20::nan\n",
            r"ratings\.dat, line 2.*rating",
        ),
        ("1m", "users.dat", "1::F::1::10\n", r"users\.dat, line 1"),
        ("1m", "users.dat", "1::F::1::10::1\n2::M::30::1::2\n", r"users\.dat, line 2"),
        ("1m", "users.dat", "1::F::1::21::1\n", r"users\.dat, line 1: occupation"),
        ("1m", "movies.dat", "1::Toy Story (1995)\n", r"movies\.dat, line 1"),
        ("1m", "movies.dat", "a::Toy Story::Comedy\n", r"movies\.dat, line 1: item_id"),
    ],
)
def test_malformed_line(tmp_path, variant, name, text, pattern):
    files = _files_100k() if variant == "100k" else _files_1m()
    files[name] = text
    folder = _write(tmp_path / "data", files)
    with pytest.raises(ValueError, match=pattern) as info:
        load_movielens(variant, path=folder)
    assert str(folder / name) in str(info.value)


# ---------------------------------------------------------------- leave-one-out


def _ratings(timestamps: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": np.array([1, 2, 1, 3, 2, 1], dtype=np.int64),
            "item_id": np.array([10, 10, 20, 30, 20, 30], dtype=np.int64),
            "rating": np.array([4, 2, 3, 1, 5, 5], dtype=np.float32),
            "timestamp": pd.array([100, 50, 200, 10, 40, 200], dtype="Int64"),
        },
        index=[9, 8, 7, 6, 5, 4],
    )
    if not timestamps:
        frame["timestamp"] = pd.array([pd.NA] * 6, dtype="Int64")
    return frame


def test_leave_one_out_last():
    ratings = _ratings()
    train, test = leave_one_out(ratings)
    # User 1 ties at t=200: the later row (item 30) is held out. User 3 has one
    # rating, which stays in train.
    assert test[["user_id", "item_id"]].values.tolist() == [[2, 10], [1, 30]]
    assert train[["user_id", "item_id"]].values.tolist() == [
        [1, 10],
        [1, 20],
        [3, 30],
        [2, 20],
    ]
    assert isinstance(train.index, pd.RangeIndex) and isinstance(test.index, pd.RangeIndex)
    assert train.dtypes.equals(ratings.dtypes) and test.dtypes.equals(ratings.dtypes)
    assert ratings.index.tolist() == [9, 8, 7, 6, 5, 4]  # input untouched


def test_leave_one_out_last_float_and_datetime_timestamps():
    ratings = _ratings()
    ratings["timestamp"] = ratings["timestamp"].astype("float64")
    _, test = leave_one_out(ratings)
    assert test["item_id"].tolist() == [10, 30]
    ratings["timestamp"] = pd.to_datetime(ratings["timestamp"], unit="s")
    _, test = leave_one_out(ratings)
    assert test["item_id"].tolist() == [10, 30]


def test_leave_one_out_random_is_reproducible():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(200), 5)
    ratings = pd.DataFrame(
        {
            "user_id": users,
            "item_id": rng.permutation(len(users)),
            "rating": np.ones(len(users), dtype=np.float32),
        }
    )
    train_a, test_a = leave_one_out(ratings, strategy="random", seed=7)
    train_b, test_b = leave_one_out(ratings, strategy="random", seed=7)
    pd.testing.assert_frame_equal(test_a, test_b)
    pd.testing.assert_frame_equal(train_a, train_b)
    _, test_c = leave_one_out(ratings, strategy="random", seed=8)
    assert not test_a.equals(test_c)
    _, test_gen = leave_one_out(ratings, strategy="random", seed=np.random.default_rng(7))
    pd.testing.assert_frame_equal(test_a, test_gen)
    assert test_a["user_id"].tolist() == list(range(200))
    assert len(train_a) == 800
    merged = pd.concat([train_a, test_a])
    assert sorted(merged["item_id"]) == list(range(1000))


def test_leave_one_out_random_is_uniform_and_keeps_single_users():
    ratings = _ratings(timestamps=False)
    picks = [leave_one_out(ratings, strategy="random", seed=s)[1] for s in range(300)]
    user1 = pd.Series([t.loc[t["user_id"] == 1, "item_id"].item() for t in picks])
    counts = user1.value_counts()
    assert set(counts.index) == {10, 20, 30}
    assert counts.min() > 60  # 100 expected for each of 3 items
    assert all(3 not in t["user_id"].tolist() for t in picks)


def test_leave_one_out_with_holdout():
    ratings = _ratings(timestamps=False)
    holdout = pd.DataFrame({"user_id": [1, 2], "item_id": [20, 20], "timestamp": [555, 666]})
    train, test = leave_one_out(ratings, holdout=holdout, strategy="random")
    assert test[["user_id", "item_id"]].values.tolist() == [[1, 20], [2, 20]]
    assert test["timestamp"].tolist() == [555, 666]
    assert test["rating"].tolist() == [3, 5]  # ratings come from `ratings`
    assert len(train) == 4 and train.dtypes.equals(ratings.dtypes)
    # Timestamps present in ratings win over the holdout's.
    _, test = leave_one_out(_ratings(), holdout=holdout)
    assert test["timestamp"].tolist() == [200, 40]


def test_leave_one_out_holdout_pair_not_in_ratings():
    holdout = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [20, 99, 98]})
    with pytest.raises(ValueError, match=r"2 of 3 holdout .*not in ratings.*\(2, 99\)"):
        leave_one_out(_ratings(), holdout=holdout)


def test_leave_one_out_holdout_two_rows_for_a_user():
    holdout = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 20]})
    with pytest.raises(ValueError, match="at most one row per user.*user_id 1"):
        leave_one_out(_ratings(), holdout=holdout)


def test_leave_one_out_holdout_missing_columns():
    with pytest.raises(ValueError, match=r"holdout .*\['item_id'\]"):
        leave_one_out(_ratings(), holdout=pd.DataFrame({"user_id": [1]}))


def test_leave_one_out_last_without_timestamps():
    with pytest.raises(ValueError, match="no timestamp column.*holdout=.*random"):
        leave_one_out(_ratings(timestamps=False))
    with pytest.raises(ValueError, match="timestamp.*holdout=.*random"):
        leave_one_out(_ratings().drop(columns="timestamp"))
    partial = _ratings()
    partial.loc[7, "timestamp"] = pd.NA
    with pytest.raises(ValueError, match="1 of 6 ratings have no timestamp"):
        leave_one_out(partial)


def test_leave_one_out_unknown_strategy():
    with pytest.raises(ValueError) as info:
        leave_one_out(_ratings(), strategy="first")
    message = str(info.value)
    assert "strategy" in message and "'last'" in message and "'random'" in message
    assert "'first'" in message


def test_leave_one_out_missing_columns():
    with pytest.raises(ValueError, match=r"missing required columns \['user_id'\]"):
        leave_one_out(_ratings().drop(columns="user_id"))


def test_leave_one_out_empty():
    train, test = leave_one_out(_ratings().iloc[:0])
    assert len(train) == len(test) == 0


# ----------------------------------------------------------- real data (slow-ish)


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not REAL_DATA_DIR:
        pytest.skip(
            "TFPRIVADV_DATA_DIR not set; point it at a folder holding ml-100k/ and "
            "ml-1m/ to run the real-data checks"
        )
    folder = Path(REAL_DATA_DIR)
    if not folder.is_dir():
        pytest.skip(f"TFPRIVADV_DATA_DIR={folder} is not a folder")
    return folder


def _real(real_dir: Path, name: str) -> Path:
    if not (real_dir / name).is_dir():
        pytest.skip(f"{real_dir / name} not found (TFPRIVADV_DATA_DIR={real_dir})")
    return real_dir / name


@pytest.fixture(scope="module")
def real_100k(real_dir) -> MovieLens:
    return load_movielens("100k", path=_real(real_dir, "ml-100k"))


@pytest.fixture(scope="module")
def real_1m(real_dir) -> MovieLens:
    return load_movielens("1m", path=_real(real_dir, "ml-1m"))


def test_real_100k_counts(real_100k):
    r = real_100k.ratings
    assert len(r) == 100_000
    assert r["user_id"].nunique() == 943 and r["item_id"].nunique() == 1682
    assert len(real_100k.users) == 943 and len(real_100k.items) == 1682
    assert r["rating"].value_counts().sort_index().tolist() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]
    assert r["timestamp"].notna().all()
    assert real_100k.items.loc[real_100k.items["item_id"] == 1, "title"].item() == (
        "Toy Story (1995)"
    )
    train, test = leave_one_out(r)
    assert len(test) == 943 and len(train) == 100_000 - 943


def test_real_1m_counts(real_1m):
    r = real_1m.ratings
    assert len(r) == 1_000_209
    assert r["user_id"].nunique() == 6040 and r["item_id"].nunique() == 3706
    assert len(real_1m.users) == 6040 and len(real_1m.items) == 3883
    assert r["timestamp"].isna().all()  # this ratings.dat has 3 columns
    assert real_1m.holdout is not None and len(real_1m.holdout) == 6040
    users = real_1m.users
    assert round((users["gender"] == "M").mean() * 100, 1) == 71.7
    assert round((users["age_group"] == 25).mean() * 100, 1) == 34.7
    assert set(users["occupation"]) <= set(ML1M_OCCUPATIONS)


def test_real_1m_leave_one_out_with_holdout(real_1m):
    train, test = leave_one_out(real_1m.ratings, holdout=real_1m.holdout)
    assert len(train) == 994_169 and len(test) == 6040
    assert test["timestamp"].notna().all()
    assert test["user_id"].tolist() == list(range(1, 6041))
    with pytest.raises(ValueError, match="no timestamp column"):
        leave_one_out(real_1m.ratings)


def test_real_data_dir_env_resolution(real_dir, monkeypatch, tmp_path, no_network):
    _real(real_dir, "ml-100k")
    monkeypatch.setenv("TFPRIVADV_DATA_DIR", str(real_dir))
    data = load_movielens("100k", cache_dir=tmp_path, download=False)
    assert data.source == str(real_dir / "ml-100k")


def test_real_recbole_wheel_matches_grouplens(real_100k, tmp_path):
    """Downloads the real recbole==1.2.1 wheel from PyPI (skips when offline)."""
    cache = tmp_path / "cache"
    try:
        ml._fetch_recbole_wheel(cache)
    except Exception as exc:  # offline, PyPI down, pip missing, ...
        pytest.skip(f"pip download of recbole==1.2.1 failed: {exc}")
    data = load_movielens("100k", cache_dir=cache, download=False)
    assert data.source.startswith("recbole==1.2.1 wheel at")
    for frame in ("ratings", "users", "items"):
        pd.testing.assert_frame_equal(getattr(data, frame), getattr(real_100k, frame))
