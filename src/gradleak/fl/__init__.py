"""Federated leakage audits with Flower (``flwr[simulation]==1.41``, Message API).

- ``RecordingStrategy(strategy)``: wrap any Message-API strategy; ``.recorder.updates`` holds every client's
  update per round. ``RecordingLegacyStrategy`` does the same for a legacy strategy under Flower's SecAgg+,
  where only the aggregate is visible.
- ``audit(updates, target, attack=...)``: attack each recorded update, write a per-round, per-client report.
- ``run_federation(FederationConfig(...))``: a simulated federation (``run_simulation``), recorded.
"""

from gradleak.fl.audit import AuditReport, AuditTarget, audit, to_observation, write_audit
from gradleak.fl.recording_strategy import RecordedUpdate, RecordingLegacyStrategy, RecordingStrategy, UpdateRecorder
from gradleak.fl.simulation import AuditSettings, FederationConfig, FederationRun, run_federation

__all__ = [
    "AuditReport", "AuditSettings", "AuditTarget", "FederationConfig", "FederationRun", "RecordedUpdate",
    "RecordingLegacyStrategy", "RecordingStrategy", "UpdateRecorder", "audit", "run_federation", "to_observation",
    "write_audit",
]
