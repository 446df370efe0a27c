"""Record what a Flower server sees: a wrapper around any Flower strategy, not a fork of one.

``RecordingStrategy`` wraps a Message-API strategy (``flwr.serverapp.strategy``) and keeps, per round, the
arrays the server sent, the train config, and every client's reply (arrays keyed by parameter name, metrics).
Under secure aggregation the server never sees a client's update: Flower 1.41 runs SecAgg+
(``SecAggPlusWorkflow`` + ``secaggplus_mod``) through its legacy ``LegacyContext``/``configure_fit`` API, so
``RecordingLegacyStrategy`` wraps a legacy strategy and records only the unmasked aggregate it receives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.serverapp.strategy import Strategy

AGGREGATE = "aggregate"


@dataclass
class RecordedUpdate:
    """One update as the server saw it. ``source`` is ``node-<id>`` or ``'aggregate'`` (a sum the server could
    unmask, never a single client's). ``sent`` are the weights the server sent for the round, ``returned`` the
    arrays that came back (a client's new weights, or the aggregate's), both keyed by parameter name."""

    round: int
    source: str
    sent: dict[str, torch.Tensor]
    returned: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    num_clients: int = 1

    @property
    def is_aggregate(self) -> bool:
        return self.source == AGGREGATE


class UpdateRecorder:
    """A thread-safe list of ``RecordedUpdate`` (the ServerApp runs in its own thread in a simulation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._updates: list[RecordedUpdate] = []

    def add(self, update: RecordedUpdate) -> None:
        with self._lock:
            self._updates.append(update)

    @property
    def updates(self) -> list[RecordedUpdate]:
        with self._lock:
            return sorted(self._updates, key=lambda u: (u.round, u.source))

    def rounds(self) -> list[int]:
        return sorted({u.round for u in self.updates})

    def __len__(self) -> int:
        with self._lock:
            return len(self._updates)


def _tensors(record: Any) -> dict[str, torch.Tensor]:
    """An ``ArrayRecord`` as a state dict (copies, on CPU)."""
    return {k: v.detach().cpu().clone() for k, v in record.to_torch_state_dict().items()}


def _pick(records: Any, key: str, kind: str) -> Any:
    """The record at ``key``, or the only record of its kind; ``None`` when there is none."""
    if key in records:
        return records[key]
    if len(records) == 1:
        return next(iter(records.values()))
    if not records:
        return None
    raise KeyError(f"reply holds {kind} records {sorted(records)}; expected key {key!r}")


def _scalars(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dict(record).items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


def _reply_metrics(msg: Any) -> dict[str, Any]:
    """Every scalar metric of a client's reply, all metric records merged."""
    metrics: dict[str, Any] = {}
    for m in msg.content.metric_records.values():
        metrics.update(_scalars(m))
    return metrics


class StrategyWrapper(Strategy):
    """A Message-API Flower strategy that wraps another: everything is delegated to ``strategy`` unless a subclass
    overrides it (Flower's way of extending a server: wrap the strategy, do not fork it). ``arrayrecord_key`` is
    where the client replies hold their arrays (the wrapped strategy's, by default)."""

    def __init__(self, strategy: Any, arrayrecord_key: str | None = None) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(
                f"{type(self).__name__} wraps a flwr.serverapp.strategy.Strategy, got {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.arrayrecord_key = arrayrecord_key or getattr(strategy, "arrayrecord_key", "arrays")

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def __getattr__(self, name: str) -> Any:
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)


class RecordingStrategy(StrategyWrapper):
    """Wrap a Message-API Flower strategy and record every client's update per round.

    Everything is delegated to ``strategy``; the wrapper only reads the messages going out in
    ``configure_train`` and the replies coming back in ``aggregate_train``. Clients must reply with an
    ``ArrayRecord`` keyed by parameter name (``ArrayRecord(model.state_dict())``), at ``arrayrecord_key``.

    ``RecordingStrategy(FedAvg(...)).start(grid=grid, initial_arrays=..., num_rounds=3)`` works as the
    wrapped strategy does; ``.recorder.updates`` holds what was seen.
    """

    def __init__(
        self,
        strategy: Any,
        recorder: UpdateRecorder | None = None,
        arrayrecord_key: str | None = None,
        configrecord_key: str | None = None,
    ) -> None:
        super().__init__(strategy, arrayrecord_key)
        self.recorder = recorder if recorder is not None else UpdateRecorder()
        self.configrecord_key = configrecord_key or getattr(strategy, "configrecord_key", "config")
        self._sent: dict[tuple[int, int], tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}

    # -- recording hooks ---------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        cache: dict[int, dict[str, torch.Tensor]] = {}
        for msg in messages:
            record = _pick(msg.content.array_records, self.arrayrecord_key, "array")
            cfg = _pick(msg.content.config_records, self.configrecord_key, "config")
            if record is None:
                continue
            weights = cache.setdefault(id(record), _tensors(record))
            self._sent[(server_round, msg.metadata.dst_node_id)] = (weights, _scalars(cfg) if cfg is not None else {})
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        replies = list(replies)
        for msg in replies:
            if msg.has_error() or not msg.has_content():
                continue
            node = msg.metadata.src_node_id
            record = _pick(msg.content.array_records, self.arrayrecord_key, "array")
            sent = self._sent.pop((server_round, node), None)
            if record is None or sent is None:
                continue
            self.recorder.add(RecordedUpdate(server_round, f"node-{node}", sent[0], _tensors(record), dict(sent[1]),
                                             _reply_metrics(msg)))
        return self.strategy.aggregate_train(server_round, replies)


class RecordingLegacyStrategy(LegacyStrategy):
    """Wrap a legacy Flower strategy (``flwr.server.strategy``) run under ``SecAggPlusWorkflow``; record the
    aggregate the server unmasks each round. ``param_names`` are the state-dict keys in the order of the
    legacy parameter list (``list(model.state_dict())``)."""

    def __init__(self, strategy: Any, param_names: Sequence[str], recorder: UpdateRecorder | None = None) -> None:
        if not isinstance(strategy, LegacyStrategy):
            raise TypeError(
                f"RecordingLegacyStrategy wraps a flwr.server.strategy.Strategy, got {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.param_names = list(param_names)
        self.recorder = recorder if recorder is not None else UpdateRecorder()
        self._sent: dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}

    def _named(self, parameters: Any) -> dict[str, torch.Tensor]:
        from flwr.common import parameters_to_ndarrays

        arrays = parameters_to_ndarrays(parameters)
        if len(arrays) != len(self.param_names):
            raise ValueError(
                f"got {len(arrays)} arrays, expected {len(self.param_names)} ({self.param_names[:3]}, ...)"
            )
        return {n: torch.from_numpy(np.array(a, copy=True)) for n, a in zip(self.param_names, arrays)}

    def initialize_parameters(self, client_manager: Any) -> Any:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        config = dict(instructions[0][1].config) if instructions else {}
        self._sent[server_round] = (self._named(parameters), _scalars(config))
        return instructions

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        sent = self._sent.pop(server_round, None)
        if aggregated is not None and sent is not None:
            examples = sum(int(res.num_examples) for _, res in results)
            self.recorder.add(
                RecordedUpdate(
                    server_round, AGGREGATE, sent[0], self._named(aggregated), dict(sent[1]),
                    {"num-examples": examples}, num_clients=len(results),
                )
            )
        return aggregated, metrics

    def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Any) -> Any:
        return self.strategy.evaluate(server_round, parameters)

    def __getattr__(self, name: str) -> Any:
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)
