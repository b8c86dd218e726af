"""Audit two recommenders and write a report people can read.

Trains BPR on MovieLens 100K without protection (lambda = 0) and with adversarial
gender and age heads (lambda = 0.03), then audits each with the paper's attacker
suite on the user vectors and on the top-10 lists, plus fairlearn parity of HR@10
across gender and age groups. Each report is written as Markdown, a self-contained
HTML page (plots embedded) and JSON under `runs/audit-example/lambda-*/`.

Run: `python examples/audit_report.py` (a few minutes on 2 CPU cores).
"""

from pathlib import Path

import tfprivadv  # noqa: F401  (first: makes tf.keras Keras 2, as TFRS needs)
from tfprivadv.audit import audit
from tfprivadv.experiment import RunConfig, load_split, train_and_evaluate

OUTPUT = Path("runs/audit-example")
base = RunConfig(dataset="100k", epochs=60, batch_size=4096, learning_rate=0.01, verbose=0)
data, train, test = load_split(base)

for adversary_weight in (0.0, 0.03):
    config = RunConfig(**{**base.__dict__, "adversary_weight": adversary_weight})
    model = train_and_evaluate(config, data, train, test)["model"]
    report = audit(model, train, test, data.users, attackers="paper", progress=True)
    folder = OUTPUT / f"lambda-{adversary_weight:g}"
    folder.mkdir(parents=True, exist_ok=True)
    report.save(folder)
    print(f"\n== lambda = {adversary_weight} ({folder}) ==")
    print(report.summary())
