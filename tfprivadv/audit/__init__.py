"""Audits of user representations: can an attacker read private attributes back?"""

from tfprivadv.audit.probes import ATTACKERS, probe_embeddings

__all__ = ["ATTACKERS", "probe_embeddings"]
