"""Audits of user representations: can an attacker read private attributes back,
from the user vectors or from the recommendations, and are outcomes fair?

Modules import TensorFlow only where a model is involved (`audit`); the attackers
and the fairness report work on plain arrays and DataFrames.
"""

from tfprivadv.audit.fairness import FairnessReport, fairness_report
from tfprivadv.audit.probes import ATTACKERS, SUITES, best_attackers, probe_embeddings
from tfprivadv.audit.recommendations import recommendation_leakage
from tfprivadv.audit.report import AuditReport, audit

__all__ = [
    "ATTACKERS",
    "SUITES",
    "AuditReport",
    "FairnessReport",
    "audit",
    "best_attackers",
    "fairness_report",
    "probe_embeddings",
    "recommendation_leakage",
]
