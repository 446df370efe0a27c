"""Simulated Flower clients: FedSGD, FedAvg and DP-SGD (Opacus) on a partition of a bundled dataset.

Each client trains the model the server sent on its round's private batch and replies with its new weights
as an ``ArrayRecord`` keyed by parameter name, so a server (and the auditor) can map every array back to a
parameter. FedSGD (McMahan et al., 2017) is one full-batch gradient step of ``lr``: the server's
``weights_after - weights_before`` is ``-lr`` times the client's gradient. FedAvg runs ``local-steps`` SGD
steps on mini-batches. DP clients run DP-SGD (Abadi et al., 2016) through Opacus: per-sample clipping to
``max_grad_norm`` and Gaussian noise of ``noise_multiplier * max_grad_norm``.

The server sets ``lr``, ``local-steps`` and ``batch-size`` in the train config; a client reports
``num-examples``, ``batch-size``, ``partition-id`` (simulation only, to score the audit) and, for DP,
``dp-epsilon`` (Opacus's RDP accountant, delta 1e-5 in ``dp-delta``, all rounds so far, for the batches it ran:
fixed slices of its shard, so without amplification by sampling, which ``dp-sample-rate`` 1.0 states, over
``dp-accounted-steps``, the most steps one example took part in; see ``dp_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import nn

from gradleak.data import load_dataset
from gradleak.data.dataset import ImageDataset
from gradleak.defenses.base import Privacy, Schedule
from gradleak.client_step import local_sgd, normalize, step_gradient_of
from gradleak.defenses.dp import DPSGD, check_opacus_compatible
from gradleak.errors import ConfigError
from gradleak.inputs import ImageInput
from gradleak.observation import LocalTraining, ModelSpec
from gradleak.training_task import Task

DP_DELTA = 1e-5


@dataclass(frozen=True)
class ClientSetup:
    """What every simulated client knows: the data, its partition and how it trains."""

    dataset: str
    image_size: int
    channels: int | None
    model_spec: ModelSpec
    num_clients: int
    examples_per_round: int
    protocol: Literal["fedsgd", "fedavg", "dp"]
    seed: int = 0
    dp_noise_multiplier: float = 1.0
    dp_max_grad_norm: float = 1.0
    #: per-partition examples per round (overrides ``examples_per_round`` for the partitions it lists), to mix
    #: small- and large-batch clients in one federation (update filtering, ``gradleak.fl.filtering``)
    examples_by_partition: tuple[int, ...] = ()

    def examples(self, partition_id: int) -> int:
        if partition_id < len(self.examples_by_partition):
            return self.examples_by_partition[partition_id]
        return self.examples_per_round

    def load(self) -> ImageDataset:
        return _dataset(self.dataset, self.image_size, self.channels)

    def partition(self, partition_id: int) -> list[int]:
        """IID shard ``partition_id`` of a seeded permutation of the dataset."""
        n = len(self.load())
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        return perm[partition_id :: self.num_clients]

    def batch_indices(self, partition_id: int, server_round: int) -> list[int]:
        """The private batch of one client in one round: the next ``examples_per_round`` images of its shard."""
        shard = self.partition(partition_id)
        n = self.examples(partition_id)
        start = (server_round - 1) * n
        return [shard[(start + j) % len(shard)] for j in range(n)]


@lru_cache(maxsize=4)
def _dataset(name: str, size: int, channels: int | None) -> ImageDataset:
    return load_dataset(name, size=size, channels=channels)


def client_update(
    setup: ClientSetup,
    weights: dict[str, torch.Tensor],
    partition_id: int,
    server_round: int,
    lr: float,
    local_steps: int = 1,
    batch_size: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the server's ``weights`` on the client's batch of this round; return new weights and metrics."""
    ds = setup.load()
    indices = setup.batch_indices(partition_id, server_round)
    inputs, labels = ds.batch(indices)
    x = normalize(inputs, ds.mean, ds.std)
    model = setup.model_spec.build()
    model.load_state_dict(weights)
    model.train()
    n = len(indices)
    batch = min(batch_size or n, n)  # a client with fewer examples than the mini-batch trains on all it has
    metrics: dict[str, Any] = {"num-examples": n, "batch-size": batch, "partition-id": partition_id}
    if setup.protocol == "fedsgd":
        local_sgd(model, x, labels, LocalTraining(1, lr, n))
        metrics["batch-size"] = n
    elif setup.protocol == "fedavg":
        local_sgd(model, x, labels, LocalTraining(local_steps, lr, batch))
    elif setup.protocol == "dp":
        model, privacy = dp_sgd(model, x, labels, lr, local_steps, batch, setup, server_round, partition_id)
        metrics.update({"dp-epsilon": privacy.epsilon, "dp-delta": privacy.delta,
                        "dp-sample-rate": privacy.schedule.sample_rate,
                        "dp-accounted-steps": privacy.schedule.accounted_steps})
    else:
        raise ConfigError(f"client protocol must be 'fedsgd', 'fedavg' or 'dp', got {setup.protocol!r}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, metrics


def dp_sgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    steps: int,
    batch_size: int,
    setup: ClientSetup,
    server_round: int,
    partition_id: int,
) -> tuple[nn.Module, Privacy]:
    """``steps`` DP-SGD steps (``DPSGD``'s step through the client step's ``local_sgd``: per-sample clipping +
    Gaussian noise, Opacus's ``DPOptimizer.pre_step``) on contiguous mini-batches of this round's batch; returns
    the model and the guarantee (epsilon, delta, schedule) this client has spent over rounds ``1..server_round`` (``dp_schedule``: its batches
    are fixed slices, not Poisson samples, so the accountant gets no amplification by sampling)."""
    check_opacus_compatible(model, "the Flower DP client")
    defense = DPSGD(noise_multiplier=setup.dp_noise_multiplier, max_grad_norm=setup.dp_max_grad_norm, delta=DP_DELTA)
    data = setup.load()
    generator = torch.Generator().manual_seed(hash((setup.seed, partition_id, server_round)) % 2**62)
    step = step_gradient_of(defense, ImageInput(data.input_shape, tuple(data.mean), tuple(data.std)),
                            Task.classification(data.num_classes),
                            generator=generator, expected_batch_size=batch_size)
    local_sgd(model, x, y, LocalTraining(steps, lr, batch_size), step)
    privacy = defense.privacy(dp_schedule(setup, partition_id, server_round, steps, batch_size))
    assert privacy is not None
    return model, privacy


def _step_slices(n: int, steps: int, batch_size: int) -> list[torch.Tensor]:
    """The positions in a round's batch of ``n`` examples that each local step trains on: contiguous slices
    of ``batch_size``, wrapping around."""
    return [torch.arange(step * batch_size, (step + 1) * batch_size) % n for step in range(steps)]


def dp_schedule(setup: ClientSetup, partition_id: int, server_round: int, steps: int, batch_size: int) -> Schedule:
    """The schedule a DP client ran over rounds ``1..server_round`` (``steps`` local steps of ``batch_size`` a
    round, the server's settings of this round assumed for every round): fixed batches of its shard, each
    example counted in every step whose slice held it."""
    shard = {index: position for position, index in enumerate(setup.partition(partition_id))}
    batches = []
    for r in range(1, server_round + 1):
        indices = torch.tensor([shard[i] for i in setup.batch_indices(partition_id, r)])
        batches += [indices[idx] for idx in _step_slices(len(indices), steps, min(batch_size, len(indices)))]
    return Schedule.of_fixed_batches(len(shard), batches)


def _config_values(config: Any) -> tuple[float, int, int | None]:
    try:
        lr = float(config["lr"])
    except KeyError:
        raise ConfigError("the server's train config has no 'lr'") from None
    steps = int(config.get("local-steps", 1)) if hasattr(config, "get") else 1
    batch = config.get("batch-size") if hasattr(config, "get") else None
    return lr, steps, (int(batch) if batch else None)


def make_client_app(setup: ClientSetup) -> Any:
    """A Message-API ``ClientApp`` whose ``train`` handler runs ``client_update`` on its partition."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one Ray CPU per client
        pid = int(context.node_config["partition-id"])
        weights = msg.content["arrays"].to_torch_state_dict()
        lr, steps, batch = _config_values(msg.content["config"])
        server_round = int(msg.content["config"]["server-round"])
        new, metrics = client_update(setup, weights, pid, server_round, lr, steps, batch)
        content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    return app


def make_secagg_client_app(setup: ClientSetup) -> Any:
    """A ``ClientApp`` for Flower's SecAgg+ (``secaggplus_mod``), which in Flower 1.41 speaks the legacy fit
    protocol: the weights travel as a list in ``state_dict`` order and are masked before they leave."""
    from flwr.app import Context
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    names = list(setup.model_spec.build().state_dict())

    class SecAggClient(NumPyClient):
        def __init__(self, partition_id: int) -> None:
            self.partition_id = partition_id

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
            torch.set_num_threads(1)  # one Ray CPU per client
            weights = {n: torch.as_tensor(a) for n, a in zip(names, parameters)}
            lr, steps, batch = _config_values(config)
            server_round = int(config["server-round"])
            new, metrics = client_update(setup, weights, self.partition_id, server_round, lr, steps, batch)
            return [new[n].numpy() for n in names], int(metrics["num-examples"]), metrics

    def client_fn(context: Context) -> Any:
        return SecAggClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
