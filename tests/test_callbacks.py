"""Tests for tfprivadv.callbacks: the schedules and AdversaryWeightScheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfprivadv import callbacks, data
from tfprivadv._keras import keras
from tfprivadv.callbacks import AdversaryWeightScheduler, GaninSchedule, LinearSchedule
from tfprivadv.heads import CategoricalHead
from tfprivadv.models import BPRRetrievalModel, PrivacyAdversarialModel

LAMBDA = 0.5
GANIN_AT_1 = 2.0 / (1.0 + math.exp(-10.0)) - 1.0


# ------------------------------------------------------------------- schedules
def test_ganin_schedule_values():
    schedule = GaninSchedule()
    assert schedule(0.0) == 0.0
    assert schedule(1.0) == pytest.approx(GANIN_AT_1, abs=1e-15)
    assert schedule(0.1) == pytest.approx(2.0 / (1.0 + math.exp(-1.0)) - 1.0)
    values = [schedule(p) for p in np.linspace(0.0, 1.0, 101)]
    assert np.all(np.diff(values) > 0)
    assert 0.0 <= min(values) and max(values) < 1.0
    gentle = GaninSchedule(gamma=2.0)
    assert gentle(0.5) < schedule(0.5)
    assert "gamma=2.0" in repr(gentle)


@pytest.mark.parametrize(("gamma", "error"), [(0.0, ValueError), ("10", TypeError)])
def test_ganin_schedule_bad_gamma(gamma, error):
    with pytest.raises(error, match="`gamma`"):
        GaninSchedule(gamma)


def test_linear_schedule_values():
    schedule = LinearSchedule(warmup=0.5)
    assert [schedule(p) for p in (0.0, 0.25, 0.5, 0.9, 1.0)] == [
        0.0,
        0.5,
        1.0,
        1.0,
        1.0,
    ]
    with pytest.raises(ValueError, match="`warmup`"):
        LinearSchedule(warmup=1.5)


def test_get_resolves_names_and_callables():
    assert isinstance(callbacks.get("ganin"), GaninSchedule)
    assert isinstance(callbacks.get("linear"), LinearSchedule)
    assert callbacks.get("constant")(0.3) == 1.0

    def custom(progress):
        return progress / 2

    assert callbacks.get(custom) is custom


def test_get_bad_name_lists_the_names():
    with pytest.raises(ValueError, match="`schedule`") as info:
        callbacks.get("cosine")
    for name in ("ganin", "linear", "constant"):
        assert name in str(info.value)


def test_get_bad_type():
    with pytest.raises(TypeError, match="`schedule`"):
        callbacks.get(3)
    with pytest.raises(TypeError, match="`schedule`"):
        AdversaryWeightScheduler(None)


# ------------------------------------------------------------------- scheduler in fit
class _Recorder(keras.callbacks.Callback):
    """Records (optimizer step, lambda of the gender reversal) before every batch."""

    def __init__(self):
        super().__init__()
        self.steps: list[tuple[int, float]] = []
        self.by_epoch: dict[int, set[float]] = {}
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        scale = self.model.current_adversary_weight["gender"]
        self.steps.append((step, scale))
        self.by_epoch.setdefault(self._epoch, set()).add(scale)


def _setup(ratings, users, user_ids, item_ids, batch_size, **compile_kwargs):
    bpr = BPRRetrievalModel(user_ids, item_ids, embedding_dim=4, seed=0)
    model = PrivacyAdversarialModel(
        bpr, heads={"gender": CategoricalHead(2)}, adversary_weight=LAMBDA
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False, **compile_kwargs)
    dataset = data.training_dataset(
        ratings, users, attributes=["gender"], item_ids=item_ids, batch_size=batch_size
    )
    return model, dataset


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_scheduler_moves_the_reversal_scales(
    ratings, users, user_ids, item_ids, steps_per_execution
):
    model, dataset = _setup(
        ratings, users, user_ids, item_ids, 100, steps_per_execution=steps_per_execution
    )
    steps_per_epoch = len(dataset)
    assert steps_per_epoch == 4
    epochs = 2
    total = steps_per_epoch * epochs
    recorder = _Recorder()
    history = model.fit(
        dataset,
        epochs=epochs,
        verbose=0,
        callbacks=[AdversaryWeightScheduler("ganin"), recorder],
    ).history
    schedule = GaninSchedule()
    steps = [step for step, _ in recorder.steps]
    assert steps == list(range(0, total, steps_per_execution))
    for step, scale in recorder.steps:
        assert scale == pytest.approx(LAMBDA * schedule(step / total), abs=1e-6)
    scales = [scale for _, scale in recorder.steps]
    assert scales[0] == 0.0
    assert np.all(np.diff(scales) > 0)
    # After fit the reversal holds lambda * schedule(1); the target is unchanged.
    assert model.current_adversary_weight["gender"] == pytest.approx(LAMBDA * GANIN_AT_1, abs=1e-6)
    assert model.adversary_weight == {"gender": LAMBDA}
    # The logged factor is the one applied to the epoch's last executed batch.
    last = [max(s for s in steps if s < (e + 1) * steps_per_epoch) for e in range(epochs)]
    np.testing.assert_allclose(
        history["adversary_factor"], [schedule(s / total) for s in last], rtol=1e-12
    )


def test_scheduler_with_custom_callable(ratings, users, user_ids, item_ids):
    model, dataset = _setup(ratings, users, user_ids, item_ids, 200)
    recorder = _Recorder()
    model.fit(
        dataset,
        epochs=1,
        verbose=0,
        callbacks=[
            AdversaryWeightScheduler(lambda progress: 0.25 - progress),
            recorder,
        ],
    )
    assert [scale for _, scale in recorder.steps] == pytest.approx([LAMBDA * 0.25, LAMBDA * -0.25])
    assert model.current_adversary_weight["gender"] == pytest.approx(LAMBDA * -0.75)


def test_scheduler_without_known_steps_uses_epochs(ratings, users, user_ids, item_ids):
    model, dataset = _setup(ratings, users, user_ids, item_ids, 200)
    unknown = dataset.filter(lambda batch: True)  # cardinality becomes unknown
    recorder = _Recorder()
    model.fit(
        unknown,
        epochs=2,
        verbose=0,
        callbacks=[AdversaryWeightScheduler("linear"), recorder],
    )
    # Progress per epoch: epoch / epochs with LinearSchedule(warmup=0.5). (Keras
    # may begin one extra batch in the first epoch to find the end of the data.)
    assert recorder.by_epoch == {0: {0.0}, 1: {LAMBDA}}


def test_scheduler_rejects_non_adversarial_model(ratings, user_ids, item_ids):
    model = BPRRetrievalModel(user_ids, item_ids, embedding_dim=4, seed=0)
    model.compile(jit_compile=False)
    dataset = data.training_dataset(ratings, item_ids=item_ids, batch_size=200)
    with pytest.raises(TypeError, match="PrivacyAdversarialModel"):
        model.fit(dataset, epochs=1, verbose=0, callbacks=[AdversaryWeightScheduler()])


# ------------------------------------------------------------------- model selection
def _fit_with_selection(ratings, users, user_ids, item_ids, epochs=4, **kwargs):
    from tfprivadv.callbacks import RankingValidation
    from tfprivadv.datasets import leave_one_out

    fit_train, valid = leave_one_out(ratings, strategy="random", seed=0)
    model, dataset = _setup(fit_train, users, user_ids, item_ids, 100)
    selection = RankingValidation(fit_train, valid, k=5, **kwargs)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([v.numpy() for v in self.model.trainable_variables])

    history = model.fit(
        dataset, epochs=epochs, verbose=0, callbacks=[selection, Snapshot()]
    ).history
    return model, selection, history, snapshots, fit_train, valid


def test_ranking_validation_logs_and_restores_the_best_epoch(ratings, users, user_ids, item_ids):
    from tfprivadv.evaluation import evaluate

    model, selection, history, snapshots, fit_train, valid = _fit_with_selection(
        ratings, users, user_ids, item_ids
    )
    assert len(history["val_hr@5"]) == len(history["val_ndcg@5"]) == 4
    best = int(np.argmax(history["val_hr@5"]))  # first maximum wins
    assert selection.best_epoch == best
    assert selection.best["val_hr@5"] == history["val_hr@5"][best]
    for variable, value in zip(model.trainable_variables, snapshots[best], strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    # The logged figure is the evaluation module's, on the restored weights.
    assert evaluate(model, fit_train, valid, k=5).hr == pytest.approx(history["val_hr@5"][best])


def test_ranking_validation_start_epoch_and_patience(ratings, users, user_ids, item_ids):
    _, selection, history, _, _, _ = _fit_with_selection(
        ratings, users, user_ids, item_ids, epochs=6, start_epoch=2, patience=1
    )
    assert selection.best_epoch >= 2
    scores = history["val_hr@5"]  # logged from epoch 2 on
    ran = len(history["loss"])
    assert len(scores) == ran - 2
    assert selection.best["val_hr@5"] == max(scores)
    # Training stops one epoch after the first epoch >= 2 that did not improve.
    if ran < 6:
        assert scores[-1] <= max(scores[:-1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"k": 0}, "`k`"), ({"monitor": "auc"}, "`monitor`"), ({"patience": 0}, "`patience`")],
)
def test_ranking_validation_bad_arguments(ratings, kwargs, match):
    from tfprivadv.callbacks import RankingValidation

    with pytest.raises(ValueError, match=match):
        RankingValidation(ratings, ratings.drop_duplicates("user_id"), **kwargs)


# ------------------------------------------------------------------- divergence
def test_non_finite_loss_stops_fit_naming_lambda_and_learning_rate(
    ratings, users, user_ids, item_ids
):
    from tfprivadv.callbacks import NonFiniteLossError, StopOnNonFiniteLoss

    model, dataset = _setup(ratings, users, user_ids, item_ids, 100)
    table = model.retrieval_model.user_embedding.embeddings
    table.assign(table.numpy() * np.nan)  # every score, hence the loss, is NaN
    with pytest.raises(NonFiniteLossError) as raised:
        model.fit(
            dataset,
            epochs=2,
            verbose=0,
            callbacks=[StopOnNonFiniteLoss(), AdversaryWeightScheduler("ganin")],
        )
    message = str(raised.value)
    assert "epoch 1, batch 1" in message
    assert f"lambda {{'gender': {LAMBDA}}}" in message
    assert "learning rate 0.01" in message
    assert isinstance(raised.value, FloatingPointError)


def test_finite_losses_pass(ratings, users, user_ids, item_ids):
    from tfprivadv.callbacks import StopOnNonFiniteLoss

    model, dataset = _setup(ratings, users, user_ids, item_ids, 100)
    history = model.fit(dataset, epochs=1, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    assert np.isfinite(history.history["loss"][0])


# ------------------------------------------------------------------- checkpoints
class _Killed(Exception):
    pass


class _KillAfter(keras.callbacks.Callback):
    """Raises at the end of an epoch, after the checkpoint was written: a crash."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Killed


def _checkpointed_fit(ratings, users, user_ids, item_ids, directory, kill_after=None):
    from tfprivadv.callbacks import RankingValidation, TrainingCheckpoint
    from tfprivadv.datasets import leave_one_out

    keras.utils.set_random_seed(0)
    fit_train, valid = leave_one_out(ratings, strategy="random", seed=0)
    bpr = BPRRetrievalModel(user_ids, item_ids, embedding_dim=4, seed=0)
    model = PrivacyAdversarialModel(
        bpr, heads={"gender": CategoricalHead(2, hidden_units=(4,))}, adversary_weight=LAMBDA
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    selection = RankingValidation(fit_train, valid, k=5, start_epoch=1)
    stateful = [AdversaryWeightScheduler("ganin"), selection]
    checkpoint = TrainingCheckpoint(directory, fingerprint={"run": 1}, callbacks=stateful)
    start = checkpoint.restore(model)
    dataset = data.training_dataset(
        fit_train,
        users,
        attributes=["gender"],
        item_ids=item_ids,
        batch_size=100,
        seed=2,
        epochs=6,
        initial_epoch=start,
    )
    extra = [] if kill_after is None else [_KillAfter(kill_after)]
    model.fit(
        dataset,
        epochs=6,
        initial_epoch=start,
        verbose=0,
        callbacks=[*stateful, checkpoint, *extra],
    )
    return model, selection, checkpoint, start


def test_checkpoint_resume_equals_uninterrupted_fit(ratings, users, user_ids, item_ids, tmp_path):
    model, selection, checkpoint, start = _checkpointed_fit(
        ratings, users, user_ids, item_ids, tmp_path / "a"
    )
    assert start == 0
    with pytest.raises(_Killed):
        _checkpointed_fit(ratings, users, user_ids, item_ids, tmp_path / "b", kill_after=3)
    # Only the last finished epoch is on disk.
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "epoch-0004-callbacks.npz",
        "epoch-0004.data-00000-of-00001",
        "epoch-0004.index",
        "state.json",
    ]
    keras.backend.clear_session()
    resumed, resumed_selection, resumed_checkpoint, start = _checkpointed_fit(
        ratings, users, user_ids, item_ids, tmp_path / "b"
    )
    assert start == 4
    assert resumed_checkpoint.history.keys() == checkpoint.history.keys()
    for key, values in checkpoint.history.items():
        np.testing.assert_allclose(resumed_checkpoint.history[key], values, rtol=1e-6, err_msg=key)
    assert len(checkpoint.history["loss"]) == 6
    # The selection carried its best epoch and weights across the crash.
    assert resumed_selection.best_epoch == selection.best_epoch
    assert resumed.current_adversary_weight == pytest.approx(model.current_adversary_weight)
    for got, want in zip(resumed.trainable_variables, model.trainable_variables, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6, err_msg=want.name)
    assert int(resumed.optimizer.iterations) == int(model.optimizer.iterations)


def test_checkpoint_of_another_run_is_refused(ratings, users, user_ids, item_ids, tmp_path):
    from tfprivadv.callbacks import TrainingCheckpoint

    with pytest.raises(_Killed):
        _checkpointed_fit(ratings, users, user_ids, item_ids, tmp_path, kill_after=0)
    model, _ = _setup(ratings, users, user_ids, item_ids, 100)
    with pytest.raises(ValueError, match="belongs to another run"):
        TrainingCheckpoint(tmp_path, fingerprint={"run": 2}).restore(model)
    uncompiled = PrivacyAdversarialModel(
        BPRRetrievalModel(user_ids, item_ids, embedding_dim=4, seed=0),
        heads={"gender": CategoricalHead(2, hidden_units=(4,))},
    )
    with pytest.raises(ValueError, match="compiled"):
        TrainingCheckpoint(tmp_path, fingerprint={"run": 1}).restore(uncompiled)
    TrainingCheckpoint(tmp_path).delete()
    assert not tmp_path.exists()
