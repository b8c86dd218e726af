"""The `tfprivadv` command on real ML-100K (skipped without $TFPRIVADV_DATA_DIR)."""

from __future__ import annotations

import json

import pytest

from tfprivadv import cli


@pytest.mark.integration
def test_train_writes_a_complete_run_folder(ml100k_path, tmp_path, capsys):
    import tfprivadv  # noqa: F401
    from tfprivadv._keras import tf

    output = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--data-path",
            ml100k_path,
            "--epochs",
            "2",
            "--batch-size",
            "4096",
            "--adversary-weight",
            "gender=0.5,age_group=0.1",
            "--verbose",
            "0",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "HR@10" in printed and "bal.acc" in printed
    assert {p.name for p in output.iterdir()} == {
        "config.json",
        "metrics.json",
        "leakage.csv",
        "per_user.csv",
        "model.keras",
        "report.md",
        "report.html",
        "report.json",
    }
    config = json.loads((output / "config.json").read_text())
    assert config["adversary_weight"] == {"gender": 0.5, "age_group": 0.1}
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["hr@10"] <= 1.0
    assert len(metrics["history"]["loss"]) == 2
    model = tf.keras.models.load_model(output / "model.keras")
    assert model.adversary_weight == {"gender": 0.5, "age_group": 0.1}
    assert not list(tmp_path.glob(".run.*")), "staging folder left behind"


@pytest.mark.integration
def test_quickstart_prints_both_models_and_writes_runs(ml100k_path, tmp_path, capsys):
    code = cli.main(
        [
            "quickstart",
            "--data-path",
            ml100k_path,
            "--epochs",
            "2",
            "--verbose",
            "0",
            "--output",
            str(tmp_path / "qs"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for text in ("popularity", "lambda=0.0", "gender", "age_group", "bal.acc"):
        assert text in printed
    runs = sorted(p.name for p in (tmp_path / "qs").iterdir())
    assert runs == sorted(["lambda-0", f"lambda-{cli.QUICKSTART_LAMBDA:g}"])


def test_existing_output_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["train", "--output", str(tmp_path)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--adversary-weight", "gender:1"], "--adversary-weight"),
        (["train", "--dataset", "20m"], "invalid choice"),
        (["train", "--head-hidden-units", "a,b"], "comma-separated ints"),
    ],
)
def test_bad_flags_are_explained(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_values_give_a_clear_error(tmp_path, capsys):
    code = cli.main(["train", "--epochs", "0", "--output", str(tmp_path / "x")])
    assert code == 2
    assert "`epochs` must be an int >= 1" in capsys.readouterr().err
