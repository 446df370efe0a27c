"""Update filtering for a Flower server: score each client's update for leakage risk before aggregation.

``FilteringStrategy`` wraps a Message-API strategy (as ``RecordingStrategy`` does) and, in ``aggregate_train``,
turns each reply into a weight delta (``returned - sent``), scores it with ``gradleak.risk`` (predicted attack PSNR,
dB, from the delta, the model and the ``batch-size`` the client reports) and drops, clips (scales the delta by
``clip_factor``) or flags the replies above ``threshold`` before the wrapped strategy aggregates. What it did each
round is kept in ``.rounds``. The same rule for non-Flower loops is ``gradleak.risk.filter_updates``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from flwr.app import ArrayRecord
from torch import nn

from gradleak.errors import ConfigError
from gradleak.fl.recording_strategy import StrategyWrapper, _pick, _reply_metrics, _tensors
from gradleak.risk import RiskModel, indicators


def check_threshold(threshold: float, risk_model: RiskModel | None = None, name: str = "filter threshold") -> None:
    """A threshold must lie in the risk score's range [floor, ceiling) dB: below the floor every update is above
    it (each round aggregates nothing), at or above the ceiling none is (the filter does nothing)."""
    model = risk_model or RiskModel.load()
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ConfigError(f"{name} must be a finite number of dB, got {threshold!r}")
    if threshold < model.floor:
        raise ConfigError(f"{name} {threshold:g} dB is below the risk score's range [{model.floor:.1f}, "
                          f"{model.ceiling:.1f}) dB: every update would be filtered in every round")
    if threshold >= model.ceiling:
        raise ConfigError(f"{name} {threshold:g} dB is not below the risk score's ceiling "
                          f"{model.ceiling:.1f} dB: no update would ever be filtered")


@dataclass
class RoundFilterReport:
    """One round: per client node ``(score, action)`` with action 'keep', 'drop', 'clip' or 'flag'."""

    round: int
    decisions: dict[int, tuple[float, str]] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for _, a in self.decisions.values() if a == action)


class FilteringStrategy(StrategyWrapper):
    """Wrap a Flower strategy; score every client update and act on those predicted to leak above ``threshold`` dB.

    ``model_factory`` builds the model (architecture only: the indicators need parameter names and the classifier
    layer); ``num_classes`` picks the classifier. Clients must reply with an ``ArrayRecord`` keyed by parameter name
    and a ``num-examples`` (or ``batch-size``) metric, as gradleak's clients do; a reply without one counts as one
    example (the riskiest).
    """

    def __init__(
        self,
        strategy: Any,
        model_factory: Callable[[], nn.Module],
        num_classes: int | None = None,
        threshold: float = 15.0,
        action: Literal["drop", "clip", "flag"] = "drop",
        clip_factor: float = 0.1,
        risk_model: RiskModel | None = None,
        arrayrecord_key: str | None = None,
    ) -> None:
        if action not in ("drop", "clip", "flag"):
            raise ConfigError(f"filter action must be 'drop', 'clip' or 'flag', got {action!r}")
        if not 0.0 <= clip_factor <= 1.0:
            raise ConfigError(f"filter clip_factor must be in [0, 1], got {clip_factor}")
        self.risk_model = risk_model or RiskModel.load()
        check_threshold(threshold, self.risk_model)
        super().__init__(strategy, arrayrecord_key)
        self.model = model_factory()
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.action = action
        self.clip_factor = float(clip_factor)
        self.rounds: list[RoundFilterReport] = []
        self._sent: dict[int, dict[str, torch.Tensor]] = {}

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        self._sent[server_round] = _tensors(arrays)
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        sent = self._sent.pop(server_round, None)
        report = RoundFilterReport(server_round)
        passed = []
        for msg in replies:
            if msg.has_error() or not msg.has_content() or sent is None:
                passed.append(msg)
                continue
            record = _pick(msg.content.array_records, self.arrayrecord_key, "array")
            if record is None:
                passed.append(msg)
                continue
            returned = _tensors(record)
            metrics = _reply_metrics(msg)
            # the examples behind the update (FedAvg's mini-batches all mix into one delta), not the mini-batch size
            batch = int(metrics.get("num-examples", metrics.get("batch-size", 1)) or 1)
            delta = {k: returned[k].float() - sent[k].float() for k in returned if k in sent and returned[k].is_floating_point()}
            score = self.risk_model.predict(indicators(delta, self.model, batch, self.num_classes, "delta"))
            node = msg.metadata.src_node_id
            if score <= self.threshold:
                report.decisions[node] = (score, "keep")
                passed.append(msg)
            elif self.action == "drop":
                report.decisions[node] = (score, "drop")
            elif self.action == "flag":
                report.decisions[node] = (score, "flag")
                passed.append(msg)
            else:
                report.decisions[node] = (score, "clip")
                clipped = {k: (sent[k] + self.clip_factor * delta[k]).to(v.dtype) if k in delta else v
                           for k, v in returned.items()}
                key = next(k for k, r in msg.content.array_records.items() if r is record)
                msg.content[key] = ArrayRecord(clipped)
                passed.append(msg)
        self.rounds.append(report)
        if not passed:  # every update dropped: keep the global model as it is
            return None, None
        return self.strategy.aggregate_train(server_round, passed)
