"""The `tfprivadv` command: quickstart, train, audit, export and sweep."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _adversary_weight(text: str) -> float | dict[str, float]:
    """ "0.5" -> 0.5; "gender=1,age_group=0.5" -> {"gender": 1.0, "age_group": 0.5}."""
    try:
        if "=" not in text:
            return float(text)
        pairs = (item.split("=", 1) for item in text.split(","))
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--adversary-weight must be a float or name=float pairs like "
            f"'gender=1,age_group=0.5'. Received: {text!r}"
        ) from None


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like '64' or '64,32'. Received: {text!r}"
        ) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _add_adversary_flags(parser: argparse.ArgumentParser, adversary_sample: int | None) -> None:
    parser.add_argument("--schedule", choices=("ganin", "linear", "constant"), default="ganin")
    parser.add_argument(
        "--objective",
        choices=("reversal", "confusion"),
        default="reversal",
        help="how the vectors fight the heads: maximise their loss (the paper's gradient "
        "reversal) or pull their predictions to the mean (stable at large lambda)",
    )
    parser.add_argument(
        "--weighting",
        choices=("user", "interaction"),
        default="user",
        help="heads read a uniform user sample, or batch rows (see PrivacyAdversarialModel)",
    )
    parser.add_argument(
        "--adversary-sample",
        type=int,
        default=adversary_sample,
        help="with --weighting interaction: rows of each batch the heads read "
        f"(default: {adversary_sample or 'all'})",
    )


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=("100k", "1m"), default="100k")
    parser.add_argument(
        "--data-path",
        default=None,
        help="MovieLens folder or zip (default: $TFPRIVADV_DATA_DIR, cache, download)",
    )
    parser.add_argument("--dim", type=int, default=10, help="embedding size")
    parser.add_argument("--attributes", type=_names, default=("gender", "age_group"))
    parser.add_argument(
        "--head-hidden-units",
        type=_int_tuple,
        default=(64,),
        help="hidden layers of each adversary head; '' for linear heads",
    )
    _add_adversary_flags(parser, adversary_sample=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--lr-decay", choices=("none", "cosine"), default="none")
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--split", choices=("last", "random", "holdout"), default="last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--attackers",
        type=_names,
        default=None,
        help="probe attackers, e.g. 'logistic,mlp,gradient_boosting' (default: logistic; "
        "quickstart: logistic,mlp)",
    )
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)


# Settings tuned per data set (the README's figures come from these).
_DEFAULTS = {
    "100k": {"epochs": 60, "batch_size": 4096, "learning_rate": 0.01},
    "1m": {"epochs": 20, "batch_size": 8192, "learning_rate": 0.01},
}


def _config(
    args: argparse.Namespace,
    adversary_weight,
    probe_attackers=("logistic",),
    *,
    defaults: dict | None = None,
    **overrides,
):
    """The RunConfig of the training flags; unset flags take `defaults` (per data set)."""
    if args.attackers:
        probe_attackers = args.attackers
    from tfprivadv.experiment import RunConfig

    defaults = _DEFAULTS[args.dataset] if defaults is None else defaults

    def pick(name: str):
        value = getattr(args, name)
        return defaults.get(name) if value is None else value

    fields = dict(
        dataset=args.dataset,
        data_path=args.data_path,
        embedding_dim=getattr(args, "dim", 10),
        adversary_weight=adversary_weight,
        attributes=args.attributes,
        head_hidden_units=args.head_hidden_units,
        schedule=args.schedule,
        adversary_objective=args.objective,
        adversary_weighting=args.weighting,
        adversary_sample=args.adversary_sample,
        epochs=pick("epochs"),
        batch_size=pick("batch_size"),
        learning_rate=pick("learning_rate"),
        num_negatives=pick("num_negatives"),
        lr_decay=args.lr_decay,
        l2=args.l2,
        split=args.split,
        seed=args.seed,
        verbose=getattr(args, "verbose", 0),
        probe_attackers=probe_attackers,
    )
    return RunConfig(**{**fields, **overrides})


#: lambda of the quickstart's protected model.
QUICKSTART_LAMBDA = 0.03


def _default_output(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def _describe(data, train, test) -> str:
    return (
        f"MovieLens {data.name.upper()} from {data.source}: {len(data.ratings):,} ratings, "
        f"{len(data.users):,} users, {data.ratings['item_id'].nunique():,} items; "
        f"train {len(train):,} / test {len(test):,} (one held-out item per user)"
    )


def _summary(rows, k: int) -> str:
    lines = [f"{'model':<28}{f'HR@{k}':>8}{f'NDCG@{k}':>9}{'fit s':>7}"]
    for label, metrics in rows:
        fit = metrics.get("fit_seconds")
        lines.append(
            f"{label:<28}{metrics[f'hr@{k}']:>8.4f}{metrics[f'ndcg@{k}']:>9.4f}"
            + (f"{fit:>7.1f}" if fit is not None else f"{'':>7}")
        )
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from tfprivadv.callbacks import TrainingCheckpoint
    from tfprivadv.experiment import (
        leakage_table,
        load_split,
        train_and_evaluate,
        write_run,
    )

    config = _config(args, args.adversary_weight)
    config.validate()
    output = Path(args.output) if args.output else _default_output("train")
    if output.exists():
        raise SystemExit(f"error: --output {output} exists; choose another folder.")
    checkpoint = checkpoint_dir(output)
    if args.restart and checkpoint.exists():
        shutil.rmtree(checkpoint)
    elif epochs := TrainingCheckpoint.epochs_saved(checkpoint):
        print(f"Resuming after epoch {epochs} from {checkpoint} (--restart starts over).")
    data, train, test = load_split(config)
    print(_describe(data, train, test))
    outcome = train_and_evaluate(config, data, train, test, checkpoint_dir=checkpoint)
    print(_summary([(f"BPR, lambda={config.adversary_weight}", outcome["metrics"])], config.k))
    print(f"popularity HR@{config.k}: {outcome['metrics'][f'popularity_hr@{config.k}']:.4f}")
    print("\nAudit (5-fold CV attackers on the user vectors and top-k lists, held-out users):")
    print(leakage_table(outcome["leakage"]))
    print(outcome["report"].summary())
    write_run(output, config, outcome)
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(f"\nRun folder: {output}")
    return 0


def checkpoint_dir(output: Path) -> Path:
    """Where `train` keeps its per-epoch checkpoint until `output` is written: a
    hidden sibling, so a killed run leaves no half-written run folder."""
    return output.parent / f".{output.name}.checkpoint"


def cmd_quickstart(args: argparse.Namespace) -> int:
    from tfprivadv.evaluation import popularity_baseline
    from tfprivadv.experiment import (
        leakage_table,
        load_split,
        train_and_evaluate,
        write_run,
    )

    output = Path(args.output) if args.output else _default_output("quickstart")
    if output.exists():
        raise SystemExit(f"error: --output {output} exists; choose another folder.")
    args.attributes = ("gender", "age_group")
    args.head_hidden_units = (64,)
    base = _config(args, 0.0)
    data, train, test = load_split(base)
    print(_describe(data, train, test))
    rows, outcomes = [], []
    popularity = popularity_baseline(train, test, k=base.k)
    rows.append(("popularity", popularity.metrics))
    for weight in (0.0, args.adversary_weight):
        # A nonlinear attacker too: linear probes at chance can hide nonlinear leakage.
        config = _config(args, weight, probe_attackers=("logistic", "mlp"))
        print(f"\n== Training BPR dim {config.embedding_dim}, lambda = {weight} ==")
        outcome = train_and_evaluate(config, data, train, test)
        rows.append((f"BPR dim {config.embedding_dim}, lambda={weight}", outcome["metrics"]))
        outcomes.append((config, outcome))
    print("\n== Utility (full ranking over unseen items) ==")
    print(_summary(rows, base.k))
    for config, outcome in outcomes:
        print(
            f"\n== Audit, lambda={config.adversary_weight}: attackers on the user vectors and "
            "on the top-10 lists (5-fold CV, held-out users) =="
        )
        print(leakage_table(outcome["leakage"]))
        print(outcome["report"].summary())
    for config, outcome in outcomes:
        write_run(output / f"lambda-{config.adversary_weight:g}", config, outcome)
    print(f"\nRun folders: {output}/lambda-0, {output}/lambda-{args.adversary_weight:g}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tfprivadv.audit import audit
    from tfprivadv.experiment import load_run, load_split

    run_dir = Path(args.run_dir)
    config, model = load_run(run_dir)
    if args.data_path:
        config.data_path = args.data_path
    data, train, test = load_split(config)
    report = audit(
        model,
        train,
        test,
        data.users,
        attributes=list(config.attributes),
        k=config.k,
        attackers=args.attackers,
        cv=args.cv,
        n_bootstrap=args.bootstrap,
        recommendations=not args.no_recommendations,
        random_state=config.seed,
        progress=True,
    )
    print(report.summary())
    written = report.save(run_dir)
    print("\nWrote " + ", ".join(str(path) for path in written.values()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tfprivadv.experiment import load_run, load_split
    from tfprivadv.export import export_for_serving, signature_summary

    run_dir = Path(args.run_dir)
    config, model = load_run(run_dir)
    exclude = None
    if args.exclude_seen:
        # The run's own training split: the items each user was trained on.
        if args.data_path:
            config.data_path = args.data_path
        _, exclude, _ = load_split(config)
    path = export_for_serving(
        model,
        Path(args.export_dir) / args.name,
        version=args.version,
        k=config.k if args.k is None else args.k,
        exclude_seen=exclude,
    )
    seen = "no exclusions"
    if exclude is not None:
        seen = f"{len(exclude):,} training interactions excluded"
    print(f"Wrote {path} (TF Serving model '{args.name}', version {path.name}; {seen})")
    print(signature_summary(path))
    return 0


def _model_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.isdigit():
        raise argparse.ArgumentTypeError(
            "--name must be one folder name (TF Serving's model name), not a path or a "
            f"number. Received: {text!r}"
        )
    return text


#: The sweep's training recipe per data set. The ML-1M one was picked in single-seed
#: exploratory runs (see README, "The paper's sweep"); 100K reuses it with its epochs.
_SWEEP_DEFAULTS = {
    "100k": {"epochs": 60, "batch_size": 4096, "learning_rate": 0.01, "num_negatives": 4},
    "1m": {"epochs": 20, "batch_size": 8192, "learning_rate": 0.01, "num_negatives": 4},
}


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like '0,0.1,1'. Received: {text!r}"
        ) from None


def cmd_sweep(args: argparse.Namespace) -> int:
    import shlex

    from tfprivadv.sweep import SweepConfig, run_sweep

    base = _config(
        args,
        0.0,
        defaults=_SWEEP_DEFAULTS[args.dataset],
        adversary_sample=args.adversary_sample if args.weighting == "interaction" else None,
        validation=not args.no_validation,
        recommendation_attackers=args.recommendation_attackers,
        audit_recommendations=not args.no_recommendations,
        n_bootstrap=args.bootstrap,
        verbose=0,
    )
    table1 = None if args.no_table1 else (args.table1_dim, args.table1_lambda)
    config = SweepConfig(
        base=base,
        dims=args.dims,
        lambdas=args.lambdas,
        table1_cell=table1,
        table1_attackers=args.table1_attackers,
    )
    output = Path(args.output) if args.output else Path("runs") / f"sweep-{args.dataset}"
    command = "tfprivadv " + " ".join(shlex.quote(x) for x in args.argv)
    frame = run_sweep(config, output, progress=not args.no_progress, command=command)
    from tfprivadv.sweep import stability, target_check

    k = base.k
    shown = ["cell", f"hr@{k}"] + [
        c
        for c in frame.columns
        if c.startswith("embeddings.") and c.endswith("best_balanced_accuracy")
    ]
    print(frame[shown].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    stable = stability(frame, base.attributes)
    if not stable.empty:
        print(f"\nStable (no protected cell leaks more than lambda 0): {bool(stable['ok'].all())}")
    target = target_check(frame, k)
    if not target.empty:
        print(f"Size-10 target met by: {list(target.loc[target['meets_target'], 'cell'])}")
    print(f"\nWrote {output}/README.md, cells.csv, leakage.csv, tables.md and the plots.")
    return 0


def _attackers_flag(text: str) -> str | tuple[str, ...]:
    names = _names(text)
    return names[0] if len(names) == 1 else names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfprivadv",
        description="Privacy-adversarial recommender training and auditing.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser(
        "quickstart",
        help="train lambda=0 and a protected model on ML-100K; print utility and leakage",
    )
    _add_training_flags(quick)
    quick.add_argument(
        "--adversary-weight",
        type=float,
        default=QUICKSTART_LAMBDA,
        help="lambda of the protected model",
    )
    quick.add_argument("--output", default=None, help="run folder (default runs/quickstart-TIME)")
    quick.set_defaults(handler=cmd_quickstart)
    train = sub.add_parser("train", help="train one model and write a run folder")
    _add_training_flags(train)
    train.add_argument(
        "--adversary-weight",
        type=_adversary_weight,
        default=0.0,
        help="lambda: a float, or per attribute 'gender=1,age_group=0.5'",
    )
    train.add_argument(
        "--output",
        default=None,
        help="run folder (default runs/train-TIME); rerun with the same --output to "
        "resume a killed run from its last finished epoch",
    )
    train.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint of a killed run with this --output and start over",
    )
    train.set_defaults(handler=cmd_train)
    audit = sub.add_parser(
        "audit",
        help="audit a run folder: attackers on vectors and top-k lists, parity; writes "
        "report.md / report.html / report.json",
    )
    audit.add_argument("run_dir", help="a folder written by `tfprivadv train` or `quickstart`")
    audit.add_argument(
        "--attackers",
        type=_attackers_flag,
        default="paper",
        help="'paper' (the paper's Table 1 attackers), 'strong' (+ MLP, hist. gradient "
        "boosting), or comma-separated attacker names",
    )
    audit.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    audit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    audit.add_argument(
        "--no-recommendations",
        action="store_true",
        help="skip the top-k list leakage and exposure parity",
    )
    audit.add_argument("--data-path", default=None, help="override the run's data path")
    audit.set_defaults(handler=cmd_audit)
    export = sub.add_parser(
        "export",
        help="export a run folder's recommender (no heads) as a TF Serving SavedModel "
        "into EXPORT_DIR/NAME/VERSION",
    )
    export.add_argument("run_dir", help="a folder written by `tfprivadv train` or `quickstart`")
    export.add_argument("--name", required=True, type=_model_name, help="TF Serving model name")
    export.add_argument("--version", type=int, default=None, help="default: the next free one")
    export.add_argument("--k", type=int, default=None, help="items per user (default: the run's k)")
    export.add_argument(
        "--exclude-seen",
        action="store_true",
        help="never serve a user the items of their training split (baked into the export)",
    )
    export.add_argument("--export-dir", default="saved_models", help="default: saved_models")
    export.add_argument("--data-path", default=None, help="override the run's data path")
    export.set_defaults(handler=cmd_export)
    _add_sweep_parser(sub)
    return parser


def _add_sweep_parser(sub) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="the paper's grid (sizes x lambda): train, audit, tables beside the paper's, "
        "plots; resumable",
    )
    sweep.add_argument("--dataset", choices=("100k", "1m"), default="1m")
    sweep.add_argument("--data-path", default=None, help="MovieLens folder or zip")
    sweep.add_argument("--dims", type=_int_tuple, default=(10, 20, 50))
    sweep.add_argument("--lambdas", type=_floats, default=(0.0, 0.01, 0.1, 1.0, 10.0))
    sweep.add_argument("--attributes", type=_names, default=("gender", "age_group"))
    sweep.add_argument("--head-hidden-units", type=_int_tuple, default=(64,))
    _add_adversary_flags(sweep, adversary_sample=1024)
    sweep.add_argument("--epochs", type=int, default=None)
    sweep.add_argument("--batch-size", type=int, default=None)
    sweep.add_argument("--learning-rate", type=float, default=None)
    sweep.add_argument("--lr-decay", choices=("none", "cosine"), default="cosine")
    sweep.add_argument("--num-negatives", type=int, default=None)
    sweep.add_argument("--l2", type=float, default=0.0)
    sweep.add_argument("--split", choices=("last", "random", "holdout"), default="last")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument(
        "--no-validation",
        action="store_true",
        help="evaluate the last epoch instead of selecting one on a validation split",
    )
    sweep.add_argument(
        "--attackers",
        type=_attackers_flag,
        default=("logistic", "mlp", "hist_gradient_boosting"),
        help="attackers on the vectors of every cell (a suite name or names)",
    )
    sweep.add_argument(
        "--recommendation-attackers",
        type=_attackers_flag,
        default=("logistic",),
        help="attackers on the top-k lists of every cell",
    )
    sweep.add_argument("--no-recommendations", action="store_true", help="skip top-k lists")
    sweep.add_argument("--table1-dim", type=int, default=10)
    sweep.add_argument("--table1-lambda", type=float, default=1.0)
    sweep.add_argument(
        "--table1-attackers",
        type=_attackers_flag,
        default="paper",
        help="attackers of the Table-1 cell (default: the paper's suite)",
    )
    sweep.add_argument("--no-table1", action="store_true", help="skip the Table-1 attackers")
    sweep.add_argument("--bootstrap", type=int, default=0, help="parity bootstrap resamples")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    sweep.add_argument(
        "--output", default=None, help="sweep folder (default runs/sweep-DATASET); resumes"
    )
    sweep.set_defaults(handler=cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the sweep's results document names the command that made it
    try:
        return args.handler(args)
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        FloatingPointError,  # a diverged run (NonFiniteLossError): nothing was written
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
