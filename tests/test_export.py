"""Tests for tfprivadv.export: the TF Serving SavedModel.

Unit tests use the tiny synthetic log of conftest.py. The integration tests train a
privacy-adversarial model on real ML-100K for a few epochs and check the export in a
fresh process that imports TensorFlow only (no tfprivadv, no custom objects), with
`saved_model_cli`, and through `tfprivadv export`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfprivadv import cli, data
from tfprivadv import export as export_lib
from tfprivadv._keras import keras, tf
from tfprivadv.export import SIGNATURES, WARMUP_FILE, export_for_serving
from tfprivadv.heads import CategoricalHead
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

DIM = 8
# Names that only the adversary part of a PrivacyAdversarialModel carries.
ADVERSARY_WORDS = (b"reversal", b"head", b"gender", b"age_group", b"adversar", b"adam")
SERVING_VARIABLES = {
    "user_vectors",
    "item_vectors",
    "item_biases",
    "oov_item_vector",
    "oov_item_bias",
    "catalog",
    "sorted_ids",
    "sorted_rows",
    "seen_row_splits",
    "seen_items",
}


def _fit(model: keras.Model, dataset: tf.data.Dataset, epochs: int = 3) -> keras.Model:
    model.compile(keras.optimizers.Adam(0.05), jit_compile=False)
    model.fit(dataset, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained() -> BPRRetrievalModel:
    """A BPR model fitted for 3 epochs on the synthetic log (shared: exports only read it)."""
    from conftest import _RATINGS, _USERS

    keras.utils.set_random_seed(0)
    model = BPRRetrievalModel(
        _USERS["user_id"].to_numpy(), np.arange(100, 130), embedding_dim=DIM, seed=0
    )
    dataset = data.training_dataset(_RATINGS, item_ids=model.item_vocabulary, batch_size=64)
    return _fit(model, dataset)


def _load(path: Path):
    return tf.saved_model.load(str(path))


def _serve(loaded, user_ids, dtype=tf.int64) -> tuple[np.ndarray, np.ndarray]:
    out = loaded.signatures["serving_default"](user_id=tf.constant(user_ids, dtype))
    items = out["item_ids"].numpy()
    return (items.astype(str) if dtype == tf.string else items), out["scores"].numpy()


def assert_same_top_k(items, scores, expected_items, expected_scores, tolerance=1e-5):
    """Same lists as `recommend`. Items may trade places only where their scores tie
    to float32 rounding (numpy's and TensorFlow's matmul may round differently)."""
    items, expected_items = np.asarray(items), np.asarray(expected_items)
    assert items.shape == expected_items.shape
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=tolerance)
    for row in np.flatnonzero((items != expected_items).any(axis=1)):
        differ = items[row] != expected_items[row]
        assert np.ptp(expected_scores[row][differ]) < tolerance, (
            row,
            items[row],
            expected_items[row],
            expected_scores[row],
        )


def _folder(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# ------------------------------------------------------------------ signatures
def test_serving_default_matches_recommend_with_exclusion(tmp_path, trained, ratings):
    path = export_for_serving(trained, tmp_path / "movies", k=5, exclude_seen=ratings)
    assert path == tmp_path / "movies" / "1"
    loaded = _load(path)
    assert set(loaded.signatures) == set(SIGNATURES)
    users = trained.user_vocabulary
    items, scores = _serve(loaded, users)
    expected_items, expected_scores = trained.recommend(users, 5, exclude=ratings)
    assert items.dtype == np.int64 and items.shape == (len(users), 5)
    assert_same_top_k(items, scores, expected_items, expected_scores)
    seen = set(map(tuple, ratings[["user_id", "item_id"]].to_numpy().tolist()))
    assert not any((u, i) in seen for u, row in zip(users, items, strict=True) for i in row)


def test_serving_default_without_exclusion_ranks_every_catalog_item(tmp_path, trained, ratings):
    loaded = _load(export_for_serving(trained, tmp_path / "m", k=30))
    users = trained.user_vocabulary[:7]
    items, scores = _serve(loaded, users)
    expected_items, expected_scores = trained.recommend(users, 30)
    assert_same_top_k(items, scores, expected_items, expected_scores)
    assert all(sorted(row) == sorted(trained.item_vocabulary) for row in items)


def test_fully_excluded_users_get_excluded_items_last_as_recommend_does(tmp_path, trained):
    # User 1 has seen all but two items: with k = 5 the last three are excluded
    # ones, scored -inf, in catalog order, exactly as `recommend` returns them.
    catalog = trained.item_vocabulary
    exclude = {1: catalog[2:].tolist(), 2: catalog.tolist()}
    loaded = _load(export_for_serving(trained, tmp_path / "m", k=5, exclude_seen=exclude))
    items, scores = _serve(loaded, [1, 2, 3])
    expected_items, expected_scores = trained.recommend([1, 2, 3], 5, exclude=exclude)
    np.testing.assert_array_equal(items, expected_items)
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[0, :2]).all()
    assert np.isneginf(scores[1]).all()
    np.testing.assert_array_equal(items[1], catalog[:5])
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_unknown_users_get_the_oov_vector_and_a_bias_ranking(tmp_path, trained, ratings):
    loaded = _load(export_for_serving(trained, tmp_path / "m", k=10, exclude_seen=ratings))
    unknown = [0, -7, 10**12, 41]
    items, scores = _serve(loaded, unknown)
    biases = trained.item_biases(trained.item_vocabulary).numpy()
    by_bias = trained.item_vocabulary[np.argsort(-biases, kind="stable")[:10]]
    for row in range(len(unknown)):
        np.testing.assert_array_equal(items[row], by_bias)
    np.testing.assert_allclose(scores[0], np.sort(biases)[::-1][:10], atol=1e-6)
    embedding = loaded.signatures["user_embedding"](user_id=tf.constant(unknown, tf.int64))
    np.testing.assert_array_equal(embedding["embedding"].numpy(), 0.0)


def test_user_embedding_and_score_signatures_match_the_model(tmp_path, trained):
    loaded = _load(export_for_serving(trained, tmp_path / "m"))
    users = np.array([1, 5, 40, 999, 3, 7], np.int64)
    items = np.array([100, 129, 115, 100, 12345, -1], np.int64)  # two unknown items
    embedding = loaded.signatures["user_embedding"](user_id=tf.constant(users))["embedding"]
    np.testing.assert_allclose(embedding.numpy(), trained.user_embeddings(users).numpy())
    assert embedding.shape == (len(users), DIM)
    score = loaded.signatures["score"](user_id=tf.constant(users), item_id=tf.constant(items))
    expected = np.diag(trained.score_items(users, items))
    np.testing.assert_allclose(score["score"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert score["score"].shape == (len(users),)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same length"):
        loaded.signatures["score"](user_id=tf.constant(users), item_id=tf.constant(items[:1]))
    empty = tf.constant([], tf.int64)
    assert loaded.signatures["serving_default"](user_id=empty)["item_ids"].shape == (0, 10)
    assert loaded.signatures["score"](user_id=empty, item_id=empty)["score"].shape == (0,)


def test_string_ids_are_served_as_strings(tmp_path, ratings, user_ids, item_ids):
    as_str = ratings.assign(
        user_id=["u" + str(x) for x in ratings["user_id"]],
        item_id=["i" + str(x) for x in ratings["item_id"]],
    )
    model = BPRRetrievalModel(
        np.array(["u" + str(x) for x in user_ids]),
        np.array(["i" + str(x) for x in item_ids]),
        embedding_dim=DIM,
        seed=0,
    )
    _fit(model, data.training_dataset(as_str, item_ids=model.item_vocabulary, batch_size=64), 2)
    loaded = _load(export_for_serving(model, tmp_path / "m", k=4, exclude_seen=as_str))
    users = ["u1", "u2", "nobody"]
    items, scores = _serve(loaded, users, tf.string)
    expected_items, expected_scores = model.recommend(users, 4, exclude=as_str)
    assert_same_top_k(items, scores, expected_items, expected_scores)
    score = loaded.signatures["score"](
        user_id=tf.constant(["u1", "u1"]), item_id=tf.constant(["i100", "unknown"])
    )["score"].numpy()
    np.testing.assert_allclose(score, np.diag(model.score_items(["u1", "u1"], ["i100", "unknown"])))


# ------------------------------------------------------------------ no heads
def _adversarial(users: pd.DataFrame, ratings: pd.DataFrame) -> PrivacyAdversarialModel:
    encoded = data.encode_attributes(users, ["gender"])
    model = PrivacyAdversarialModel(
        BPRRetrievalModel(users["user_id"], np.arange(100, 130), embedding_dim=DIM, seed=0),
        heads={"gender": CategoricalHead(2, hidden_units=(8,))},
        adversary_weight=0.5,
    )
    dataset = data.training_dataset(
        ratings, encoded, attributes=["gender"], item_ids=np.arange(100, 130), batch_size=64
    )
    return _fit(model, dataset, epochs=2)


def _variable_names(loaded) -> dict[str, tuple[int, ...]]:
    names = {}
    for function in loaded.signatures.values():
        for variable in function.variables:
            names[variable.name.split(":")[0]] = tuple(variable.shape)
    return names


def test_adversarial_model_exports_the_recommender_only(tmp_path, users, ratings):
    model = _adversarial(users, ratings)
    path = export_for_serving(model, tmp_path / "m", k=3, exclude_seen=ratings)
    loaded = _load(path)
    names = _variable_names(loaded)
    assert set(names) == SERVING_VARIABLES, names
    assert names["user_vectors"] == (len(users) + 1, DIM)
    assert names["item_vectors"] == (30, DIM)
    checkpoint = [name for name, _ in tf.train.list_variables(str(path / "variables/variables"))]
    assert not [n for n in checkpoint if any(w.decode() in n.lower() for w in ADVERSARY_WORDS)]
    graph = (path / "saved_model.pb").read_bytes().lower()
    assert not [w for w in ADVERSARY_WORDS if w in graph]
    items, scores = _serve(loaded, users["user_id"].to_numpy())
    expected = model.retrieval_model.recommend(users["user_id"], 3, exclude=ratings)
    assert_same_top_k(items, scores, *expected)


# ------------------------------------------------------------------ warm-up
def test_warmup_requests_replay_against_the_signatures(tmp_path, trained):
    from tensorflow_serving.apis import prediction_log_pb2

    path = export_for_serving(trained, tmp_path / "movies", warmup_user_ids=[3, 1, 4])
    loaded = _load(path)
    signatures = []
    for record in tf.data.TFRecordDataset(str(path / WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "movies"
        inputs = {key: tf.constant(tf.make_ndarray(t)) for key, t in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert all(np.isfinite(v.numpy()).all() for v in outputs.values())
        signatures.append((request.model_spec.signature_name, len(inputs["user_id"])))
    assert signatures == [
        ("serving_default", 1),
        ("serving_default", 3),
        ("user_embedding", 1),
        ("score", 1),
    ]


# ------------------------------------------------------------------ versions
def test_versions_auto_increment_and_are_never_overwritten(tmp_path, trained):
    root = tmp_path / "movies"
    assert export_for_serving(trained, root, k=2).name == "1"
    assert export_for_serving(trained, root, k=2).name == "2"
    assert export_for_serving(trained, root, k=2, version=7).name == "7"
    (root / "notes").mkdir()
    (root / "99.txt").write_text("not a version")
    assert export_for_serving(trained, root, k=2).name == "8"
    before = (root / "7" / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"Version 7 exists.*next one \(9\)"):
        export_for_serving(trained, root, k=2, version=7)
    assert (root / "7" / "saved_model.pb").stat().st_mtime_ns == before
    assert _folder(root) == ["1", "2", "7", "8", "99.txt", "notes"]
    for version in ("1", "8"):
        assert {p.name for p in (root / version).iterdir()} >= {
            "saved_model.pb",
            "variables",
            "assets.extra",
        }


# ------------------------------------------------------------------ errors
def test_bad_arguments_raise_clear_errors_and_write_nothing(tmp_path, trained):
    root = tmp_path / "movies"
    cases = [
        (dict(k=0), ValueError, r"`k` must be an int >= 1"),
        (dict(k=31), ValueError, r"`k` must be <= the catalog size 30. Received: 31"),
        (dict(k="10"), TypeError, r"`k` must be an int"),
        (dict(version=0), ValueError, r"`version` must be an int >= 1"),
        (dict(version="2"), TypeError, r"`version` must be an int"),
        (dict(exclude_seen=[1, 2]), TypeError, r"`exclude_seen` must be None, a DataFrame"),
        (dict(warmup_user_ids=["a"]), ValueError, r"`warmup_user_ids` must be"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            export_for_serving(trained, root, **kwargs)
        assert not root.exists(), kwargs
    with pytest.raises(TypeError, match=r"`model` must be a BPRRetrievalModel"):
        export_for_serving(keras.Sequential(), root)
    with pytest.raises(TypeError, match=r"`export_dir` must be a path"):
        export_for_serving(trained, 3)
    assert _folder(tmp_path) == []


def test_export_dir_that_is_a_file_raises_value_error(tmp_path, trained):
    file = tmp_path / "model"
    file.write_text("x")
    with pytest.raises(ValueError, match=r"`export_dir` must be a folder.*an existing file"):
        export_for_serving(trained, file)
    with pytest.raises(ValueError, match=r"`export_dir` must be a folder.*Received: '.*model/m'"):
        export_for_serving(trained, file / "m")
    assert _folder(tmp_path) == ["model"]


def test_untrained_model_is_refused_unless_allowed(tmp_path, user_ids, item_ids):
    model = BPRRetrievalModel(user_ids, item_ids, embedding_dim=DIM, seed=0)
    with pytest.raises(ValueError, match=r"looks untrained.*allow_untrained=True"):
        export_for_serving(model, tmp_path / "m")
    assert _folder(tmp_path) == []
    path = export_for_serving(model, tmp_path / "m", allow_untrained=True)
    assert path.is_dir()


def test_trained_model_reloaded_without_optimizer_is_accepted(tmp_path, trained):
    trained.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert reloaded.optimizer is None
    assert export_for_serving(reloaded, tmp_path / "m").name == "1"


def test_failure_while_writing_leaves_no_version_and_no_staging(tmp_path, trained, monkeypatch):
    root = tmp_path / "movies"
    export_for_serving(trained, root, k=2)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_lib, "_write_warmup", broken)
    with pytest.raises(OSError, match="disk full"):
        export_for_serving(trained, root, k=2)
    assert _folder(root) == ["1"]
    with pytest.raises(OSError, match="disk full"):
        export_for_serving(trained, tmp_path / "new", k=2)
    assert not (tmp_path / "new").exists()


# ============================================================ on real ML-100K
@pytest.fixture(scope="module")
def ml100k_run(tmp_path_factory, ml100k_path):
    """A lambda = 0.03 run on ML-100K, 5 epochs, as a run folder (config.json +
    model.keras) like `tfprivadv train` writes, plus its split."""
    from tfprivadv.experiment import RunConfig, build_model, load_split

    config = RunConfig(
        dataset="100k",
        data_path=ml100k_path,
        adversary_weight=0.03,
        epochs=5,
        batch_size=4096,
        verbose=0,
    )
    data_set, train, test = load_split(config)
    keras.utils.set_random_seed(0)
    encoded = data.encode_attributes(data_set.users, list(config.attributes))
    model = build_model(config, train, data_set.users, encoded)
    dataset = data.training_dataset(
        train,
        encoded,
        attributes=list(config.attributes),
        item_ids=model.retrieval_model.item_vocabulary,
        batch_size=config.batch_size,
        seed=0,
    )
    model.compile(keras.optimizers.Adam(config.learning_rate), steps_per_execution=8)
    model.fit(dataset, epochs=config.epochs, verbose=0)
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "config.json").write_text(json.dumps(asdict(config)))
    model.save(run_dir / "model.keras")
    return run_dir, model, train


# Imports TensorFlow and nothing else: what a serving process has.
_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    path, request, result = sys.argv[1:]
    request = json.load(open(request))
    loaded = tf.saved_model.load(path)
    users = tf.constant(request["users"], tf.int64)
    served = loaded.signatures["serving_default"](user_id=users)
    embedding = loaded.signatures["user_embedding"](user_id=users)["embedding"]
    score = loaded.signatures["score"](
        user_id=users, item_id=tf.constant(request["items"], tf.int64))["score"]
    variables = {v.name.split(":")[0]: list(v.shape)
                 for f in loaded.signatures.values() for v in f.variables}
    np.savez(result, item_ids=served["item_ids"].numpy(), scores=served["scores"].numpy(),
             embedding=embedding.numpy(), score=score.numpy())
    print(json.dumps({
        "signatures": sorted(loaded.signatures),
        "variables": variables,
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                          ("tfprivadv", "tensorflow_recommenders", "tf_keras")),
    }))
    """
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.mark.integration
def test_fresh_tensorflow_process_serves_the_same_top_k_as_recommend(ml100k_run, tmp_path):
    run_dir, model, train = ml100k_run
    recommender = model.retrieval_model
    path = export_for_serving(model, tmp_path / "movielens", k=10, exclude_seen=train)
    users = np.concatenate([recommender.user_vocabulary, [0, 5000]])  # + two unknown users
    items = np.resize(np.concatenate([recommender.item_vocabulary, [99999]]), len(users))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"users": users.tolist(), "items": items.tolist()}))
    result = tmp_path / "result.npz"
    process = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(path), str(request), str(result)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert report["signatures"] == sorted(SIGNATURES)
    assert set(report["variables"]) == SERVING_VARIABLES
    assert report["variables"]["user_vectors"] == [944, 10]
    served = np.load(result)
    expected_items, expected_scores = recommender.recommend(users, 10, exclude=train)
    np.testing.assert_array_equal(served["item_ids"], expected_items)  # exact on this data
    assert_same_top_k(served["item_ids"], served["scores"], expected_items, expected_scores)
    np.testing.assert_allclose(served["embedding"], recommender.user_embeddings(users).numpy())
    np.testing.assert_allclose(served["embedding"][-2:], 0.0)
    np.testing.assert_allclose(
        served["score"], np.diag(recommender.score_items(users, items)), rtol=1e-5, atol=1e-5
    )


def _saved_model_cli() -> list[str]:
    binary = Path(sys.executable).with_name("saved_model_cli")
    if binary.exists():
        return [str(binary)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


@pytest.mark.integration
def test_cli_export_then_saved_model_cli_lists_the_three_signatures(ml100k_run, tmp_path, capsys):
    run_dir, model, train = ml100k_run
    args = ["export", str(run_dir), "--name", "movielens", "--export-dir", str(tmp_path)]
    assert cli.main([*args, "--exclude-seen"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "movielens" / "1"
    assert str(path) in printed and "99,057 training interactions excluded" in printed
    assert "serving_default: user_id int64[-1] -> item_ids int64[-1, 10]" in printed
    # saved_model_cli starts TensorFlow anew (seconds): let it run meanwhile.
    shown = subprocess.Popen(
        [*_saved_model_cli(), "show", "--all", "--dir", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        assert cli.main([*args, "--k", "5", "--version", "3"]) == 0
        assert "version 3; no exclusions" in capsys.readouterr().out
        assert _folder(tmp_path / "movielens") == ["1", "3"]
        assert (path / WARMUP_FILE).is_file()
        # The run's training split is baked in: the lists are `recommend`'s.
        users = model.retrieval_model.user_vocabulary[:50]
        items, scores = _serve(_load(path), users)
        expected = model.retrieval_model.recommend(users, 10, exclude=train)
        assert_same_top_k(items, scores, *expected)
        stdout, stderr = shown.communicate(timeout=300)
    finally:
        shown.kill()
    assert shown.returncode == 0, stderr[-3000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in stdout
    for line in ("inputs['user_id']", "inputs['item_id']", "outputs['item_ids']"):
        assert line in stdout
    assert "outputs['scores']" in stdout and "outputs['embedding']" in stdout
    assert "shape: (-1, 10)" in stdout  # item_ids and scores: [batch, k]
    assert "Method name is: tensorflow/serving/predict" in stdout
    assert not [w for w in ADVERSARY_WORDS if w.decode() in stdout.lower()]


def test_cli_export_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path), "--name", "m"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", str(tmp_path), "--name", "a/b"])
    assert "--name" in capsys.readouterr().err
