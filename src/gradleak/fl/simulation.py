"""A simulated Flower federation in one process (``flwr.simulation.run_simulation``), recorded for an audit.

``run_federation(FederationConfig(...))`` starts N virtual clients on IID shards of a bundled dataset, runs
``rounds`` rounds of FedAvg aggregation over FedSGD, FedAvg or DP-SGD clients, and returns what the server
recorded: every client's update, or, with ``secure_aggregation``, only the aggregates Flower's SecAgg+ lets
the server unmask.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gradleak import limits
from gradleak.attacks import ATTACKS
from gradleak.config import build, check_tables, read_file
from gradleak.data import check_image_size, load_dataset
from gradleak.errors import ConfigError
from gradleak.fl.audit import AuditTarget
from gradleak.fl.clients import ClientSetup, make_client_app, make_secagg_client_app
from gradleak.fl.filtering import FilteringStrategy, RoundFilterReport, check_threshold
from gradleak.fl.recording_strategy import RecordedUpdate, RecordingLegacyStrategy, RecordingStrategy, UpdateRecorder
from gradleak.model_spec import model_spec_for
from gradleak.observation import GroundTruth, ModelSpec


@dataclass(frozen=True)
class FederationConfig:
    """A federation to simulate. ``examples_per_round`` is each client's private batch per round;
    ``local_batch_size`` (FedAvg/DP) defaults to it. ``client_cpus`` is the Ray CPU share of one client.
    ``examples_by_client`` overrides ``examples_per_round`` for the first clients (mixed small and large batches).
    ``filter_threshold`` (dB) puts ``FilteringStrategy`` in front of FedAvg: updates whose predicted attack PSNR
    is above it are dropped, clipped or flagged (``filter_action``); the recorder sees what FedAvg aggregates."""

    dataset: str = "digits"
    image_size: int = 32
    channels: int | None = None
    num_clients: int = 4
    rounds: int = 2
    protocol: Literal["fedsgd", "fedavg", "dp"] = "fedsgd"
    examples_per_round: int = 1
    local_steps: int = 1
    local_lr: float = 0.1
    local_batch_size: int | None = None
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = 100
    dp_noise_multiplier: float = 1.0
    dp_max_grad_norm: float = 1.0
    secure_aggregation: bool = False
    seed: int = 0
    client_cpus: float = 1.0
    ray_num_cpus: int | None = 2
    examples_by_client: tuple[int, ...] = ()
    filter_threshold: float | None = None
    #: ``None``: 'drop' where a threshold is set; an action without a threshold is refused (it would do nothing)
    filter_action: Literal["drop", "clip", "flag"] | None = None

    def __post_init__(self) -> None:
        if self.num_clients < 2:
            raise ConfigError(f"num_clients must be >= 2, got {self.num_clients}")
        if self.secure_aggregation and self.num_clients < 3:
            raise ConfigError(f"secure_aggregation (SecAgg+) needs >= 3 clients, got {self.num_clients}")
        if self.rounds < 1 or self.examples_per_round < 1 or self.local_steps < 1:
            raise ConfigError("rounds, examples_per_round and local_steps must be >= 1")
        self._check_sizes()
        if self.protocol not in ("fedsgd", "fedavg", "dp"):
            raise ConfigError(f"protocol must be 'fedsgd', 'fedavg' or 'dp', got {self.protocol!r}")
        if not self.local_lr > 0:
            raise ConfigError(f"local_lr must be positive, got {self.local_lr}")
        if len(self.examples_by_client) > self.num_clients or any(n < 1 for n in self.examples_by_client):
            raise ConfigError(f"examples_by_client must hold at most num_clients = {self.num_clients} positive "
                              f"integers, got {list(self.examples_by_client)}")
        if self.filter_action not in (None, "drop", "clip", "flag"):
            raise ConfigError(f"filter_action must be 'drop', 'clip' or 'flag', got {self.filter_action!r}")
        if self.filter_action is not None and self.filter_threshold is None:
            raise ConfigError(f"filter_action {self.filter_action!r} needs a filter_threshold (--filter-threshold "
                              "DB): without one no update is filtered")
        if self.filter_threshold is not None:
            check_threshold(self.filter_threshold, name="filter_threshold")
        if self.filter_threshold is not None and self.secure_aggregation:
            raise ConfigError("filter_threshold needs each client's update; under secure aggregation the server "
                              "sees only their sum")


    def _check_sizes(self) -> None:
        """The sizes the clients allocate, bounded as a capture's are (``gradleak.limits``, ``--allow-large``):
        each client's batch of images, its local steps, and the image size (before any dataset is loaded)."""
        check_image_size(self.image_size, self.channels, "image_size")
        channels = self.channels or 3
        for n, what in [(self.examples_per_round, "examples_per_round"),
                        *((n, f"examples_by_client[{i}]") for i, n in enumerate(self.examples_by_client))]:
            limits.check("batch_size", n, what)
            limits.check("batch_elements", n * channels * self.image_size ** 2, f"{what} x image elements")
        limits.check("local_steps", self.local_steps, "local_steps")
        if self.local_batch_size is not None:
            if self.local_batch_size < 1:
                raise ConfigError(f"local_batch_size must be >= 1, got {self.local_batch_size}")
            limits.check("batch_size", self.local_batch_size, "local_batch_size")

    @property
    def action(self) -> Literal["drop", "clip", "flag"]:
        """What the filter does with a risky update."""
        return self.filter_action or "drop"


@dataclass
class FederationRun:
    """What a simulated federation leaves behind: the server's records and, for scoring, the private data."""

    config: FederationConfig
    setup: ClientSetup
    target: AuditTarget
    updates: list[RecordedUpdate]
    #: the global model after the last round (``None`` under secure aggregation)
    final_weights: dict[str, torch.Tensor] | None = None
    #: what the update filter did each round (empty without ``filter_threshold``)
    filter_rounds: list[RoundFilterReport] = field(default_factory=list)

    def truth(self, update: RecordedUpdate) -> GroundTruth | None:
        """The private batch behind ``update``: the client's (found by the ``partition-id`` the simulated
        client reports) or, for an aggregate, every client's batch of that round."""
        ds = self.setup.load()
        if update.is_aggregate:
            parts = range(self.config.num_clients)
        elif "partition-id" in update.metrics:
            parts = [int(update.metrics["partition-id"])]
        else:
            return None
        indices = [i for p in parts for i in self.setup.batch_indices(p, update.round)]
        return GroundTruth(*ds.batch(indices))

    def public_images(self) -> torch.Tensor:
        """The auditor's public set: the dataset's images that no client trained on in any round (the attacker's
        auxiliary data, scored as a guess beside every reconstruction; ``ImageDataset.disjoint_from``)."""
        ds = self.setup.load()
        used = {i for p in range(self.config.num_clients) for r in range(1, self.config.rounds + 1)
                for i in self.setup.batch_indices(p, r)}
        return ds.images[ds.disjoint_from(sorted(used))]


def _setup(config: FederationConfig) -> tuple[ClientSetup, AuditTarget]:
    ds = load_dataset(config.dataset, size=config.image_size, channels=config.channels)
    num_classes = config.num_classes or ds.num_classes
    if num_classes < ds.num_classes:
        raise ConfigError(f"num_classes {num_classes} is smaller than the {ds.num_classes} classes of {ds.name!r}")
    shard = len(ds) // config.num_clients
    largest = max((config.examples_per_round, *config.examples_by_client))
    if largest > shard:
        raise ConfigError(f"a client's batch of {largest} examples per round is more than its shard holds: "
                          f"{len(ds)} images of {ds.name!r} over {config.num_clients} clients is {shard} each")
    c, h, _ = ds.input_shape
    kwargs = {"in_channels": c, "num_classes": num_classes, "image_size": h, **config.model_kwargs}
    spec = model_spec_for(config.model, kwargs)  # the user's own factory only when trusted (--trust-model)
    setup = ClientSetup(
        dataset=config.dataset, image_size=config.image_size, channels=config.channels, model_spec=spec,
        num_clients=config.num_clients, examples_per_round=config.examples_per_round, protocol=config.protocol,
        seed=config.seed, dp_noise_multiplier=config.dp_noise_multiplier, dp_max_grad_norm=config.dp_max_grad_norm,
        examples_by_partition=config.examples_by_client,
    )
    target = AuditTarget(spec, ds.input_shape, num_classes, ds.mean, ds.std)
    return setup, target


def _train_config(config: FederationConfig) -> dict[str, Any]:
    batch = config.examples_per_round
    if config.protocol != "fedsgd" and config.local_batch_size:
        batch = config.local_batch_size
    return {"lr": float(config.local_lr), "local-steps": int(config.local_steps), "batch-size": int(batch)}


def _server_app(config: FederationConfig, setup: ClientSetup, initial: dict[str, torch.Tensor],
                recorder: UpdateRecorder, out: dict[str, Any]) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()
    n = config.num_clients

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy: Any = RecordingStrategy(
            FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n), recorder
        )
        if config.filter_threshold is not None:
            # the recorder sits inside the filter: it records exactly the updates FedAvg aggregates
            strategy = FilteringStrategy(strategy, setup.model_spec.build, num_classes=setup.model_spec.kwargs.get(
                "num_classes"), threshold=config.filter_threshold, action=config.action)
            out["filter_rounds"] = strategy.rounds
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=config.rounds,
                                train_config=ConfigRecord(_train_config(config)))
        out["final_weights"] = result.arrays.to_torch_state_dict()

    return app


def _secagg_server_app(config: FederationConfig, initial: dict[str, torch.Tensor], recorder: UpdateRecorder) -> Any:
    from flwr.app import Context
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()
    n = config.num_clients
    names = list(initial)
    train_config = _train_config(config)

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        inner = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([initial[k].numpy() for k in names]),
            on_fit_config_fn=lambda r: {**train_config, "server-round": r},
        )
        strategy = RecordingLegacyStrategy(inner, names, recorder)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=n // 2 + 1))
        workflow(grid, legacy)

    return app


def run_federation(config: FederationConfig, verbose: bool = False) -> FederationRun:
    """Run the federation with ``run_simulation`` (Ray backend, tiny resources) and return its records.

    Sets ``FLWR_TELEMETRY_ENABLED=0`` and, unless set, ``FLWR_HOME`` to a temporary folder. If Ray is already
    initialised (a sweep, a test fixture), Flower uses that session.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="gradleak-flwr-"))
    from flwr.simulation import run_simulation

    setup, target = _setup(config)
    torch.manual_seed(config.seed)
    initial = {k: v.detach().clone() for k, v in setup.model_spec.build().state_dict().items()}
    recorder = UpdateRecorder()
    out: dict[str, Any] = {}
    if config.secure_aggregation:
        server, client = _secagg_server_app(config, initial, recorder), make_secagg_client_app(setup)
    else:
        server, client = _server_app(config, setup, initial, recorder, out), make_client_app(setup)
    backend: dict[str, Any] = {"client_resources": {"num_cpus": config.client_cpus, "num_gpus": 0.0}}
    if config.ray_num_cpus is not None:
        backend["init_args"] = {"num_cpus": config.ray_num_cpus, "include_dashboard": False, "log_to_driver": verbose}
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=config.num_clients,
                       backend_config=backend, verbose_logging=verbose)
    finally:
        flwr_logger.setLevel(level)
    updates = recorder.updates
    filter_rounds = out.get("filter_rounds", [])
    dropped = sum(r.count("drop") for r in filter_rounds)
    expected = config.rounds * (1 if config.secure_aggregation else config.num_clients) - dropped
    if len(updates) != expected:
        raise RuntimeError(f"the federation recorded {len(updates)} updates, expected {expected}: see Flower's log")
    return FederationRun(config, setup, target, updates, out.get("final_weights"), filter_rounds)


@dataclass(frozen=True)
class AuditSettings:
    """How to audit a federation: which attack, how to view aggregates, which rounds (empty: all), where to
    write the report."""

    attack: str = "idlg"
    attack_kwargs: dict[str, Any] = field(default_factory=lambda: {"iterations": 200})
    aggregate_as: Literal["client", "batch"] = "client"
    leak_threshold_db: float = 25.0
    rounds: tuple[int, ...] = ()
    out: str = "out/fl-audit"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        ATTACKS.get(self.attack)


def load_audit_config(path: str | Path) -> tuple[FederationConfig, AuditSettings]:
    """``(FederationConfig, AuditSettings)`` from a file with ``[federation]`` and ``[audit]`` tables."""
    data = read_file(path)
    check_tables(data, ("federation", "audit"), str(path))
    fed = build(FederationConfig, data.get("federation", {}), str(path), "federation")
    settings = build(AuditSettings, data.get("audit", {}), str(path), "audit")
    return fed, settings
