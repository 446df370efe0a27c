"""One experiment: a typed config -> victim simulation -> attack -> scores. The unit a sweep runs.

The ground truth is produced by the victim and handed only to ``score``; the attack sees the Observation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.base import Reconstruction
from gradleak.baselines import ImageGuesses
from gradleak.config import build, check_attack_settings, read_file
from gradleak.data import check_image_size, load_dataset
from gradleak.defenses import build_defense
from gradleak.defenses.base import Defense
from gradleak.errors import ConfigError
from gradleak.malicious import simulate_aggregate
from gradleak.metrics import Scores, score
from gradleak.model_spec import model_spec_for
from gradleak.observation import GroundTruth, LocalTraining, Observation
from gradleak.report.files import metrics_dict, write_report
from gradleak.training import pretrained
from gradleak.victim import simulate


@dataclass(frozen=True)
class ExperimentConfig:
    """Victim, protocol and attack of one run. ``indices`` picks the private batch; when empty, ``batch_size``
    images are drawn with ``seed``. ``num_classes`` defaults to the dataset's (the model's head size).
    ``pretrain_steps`` > 0 trains the model first on the other images (the training stage of the attack).
    ``defense`` names a defense of ``gradleak.defenses`` applied in the client's step (``defense_kwargs`` its
    parameters); secure aggregation draws the other clients from the dataset's images outside the batch.
    ``clients`` > 1 splits the batch into that many equal client batches and the server observes the *sum* of
    their FedSGD updates (``malicious.simulate_aggregate``); the attack is asked for every client's images."""

    dataset: str = "faces"
    image_size: int = 32
    channels: int | None = None
    indices: tuple[int, ...] = ()
    batch_size: int = 1
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    model_mode: Literal["train", "eval"] = "train"
    protocol: Literal["fedsgd", "fedavg"] = "fedsgd"
    local_steps: int = 1
    local_lr: float = 0.1
    local_batch_size: int | None = None
    leak_labels: bool = False
    pretrain_steps: int = 0
    attack: str = "idlg"
    attack_kwargs: dict[str, Any] = field(default_factory=dict)
    defense: str | None = None
    defense_kwargs: dict[str, Any] = field(default_factory=dict)
    clients: int = 1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1 and not self.indices:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.protocol not in ("fedsgd", "fedavg"):
            raise ConfigError(f"protocol must be 'fedsgd' or 'fedavg', got {self.protocol!r}")
        check_image_size(self.image_size, self.channels)
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {self.num_classes}")
        check_attack_settings(self.attack, self.attack_kwargs, "attack_kwargs")  # fails here, before any work
        if self.clients < 1 or (self.clients > 1 and (self.protocol != "fedsgd" or self.defense is not None)):
            raise ConfigError(f"clients must be >= 1, and > 1 only with protocol 'fedsgd' and no defense; got "
                              f"clients={self.clients}, protocol={self.protocol!r}, defense={self.defense!r}")
        self.build_defense()  # validates the defense's name and parameters early

    def build_defense(self) -> Defense | None:
        """The configured defense (``defense`` by registry name, ``defense_kwargs`` its parameters), or None."""
        return build_defense(self.defense, **self.defense_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    observation: Observation
    truth: GroundTruth
    reconstruction: Reconstruction
    scores: Scores
    metrics: dict[str, Any]


def make_victim(config: ExperimentConfig) -> tuple[Observation, GroundTruth]:
    """Load the data, pick the batch, build the model and simulate the client's update."""
    ds = load_dataset(config.dataset, size=config.image_size, channels=config.channels)
    if config.indices:
        indices = list(config.indices)
    else:
        if config.batch_size > len(ds):
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {len(ds)} images of {ds.name!r}")
        gen = torch.Generator().manual_seed(config.seed)
        indices = torch.randperm(len(ds), generator=gen)[: config.batch_size].tolist()
    inputs, labels = ds.batch(indices)
    num_classes = config.num_classes or ds.num_classes
    if num_classes < ds.num_classes:
        raise ConfigError(f"num_classes {num_classes} is smaller than the {ds.num_classes} classes of {ds.name!r}")
    c, h, _ = ds.input_shape
    spec = model_spec_for(config.model, {"in_channels": c, "num_classes": num_classes, "image_size": h,
                                         **config.model_kwargs}, flag="--model (or trust_model)")
    private = set(indices)
    rest = [i for i in range(len(ds)) if i not in private]  # images the victim's batch does not hold
    torch.manual_seed(config.seed)
    model = spec.build()
    if config.pretrain_steps > 0:
        model.load_state_dict(pretrained(spec, ds, rest, steps=config.pretrain_steps, seed=config.seed,
                                         device=config.device))
    local = None
    if config.protocol == "fedavg":
        local = LocalTraining(config.local_steps, config.local_lr, config.local_batch_size or len(indices))
    defense = config.build_defense()
    population = None
    if defense is not None:
        others = torch.tensor(rest, dtype=torch.long)
        population = (ds.images[others], ds.labels[others])
    if config.clients > 1:
        if len(indices) % config.clients:
            raise ConfigError(f"a batch of {len(indices)} images does not split into {config.clients} equal clients")
        size = len(indices) // config.clients
        batches = [(inputs[i * size : (i + 1) * size], labels[i * size : (i + 1) * size]) for i in range(config.clients)]
        return simulate_aggregate(spec, batches, num_classes=num_classes, mean=ds.mean, std=ds.std, model=model,
                                  model_mode=config.model_mode, device=config.device,
                                  info={"dataset": ds.name, "indices": indices})
    return simulate(
        spec, inputs, labels, num_classes=num_classes, mean=ds.mean, std=ds.std, protocol=config.protocol,
        local_training=local, model=model, model_mode=config.model_mode, leak_labels=config.leak_labels,
        device=config.device, info={"dataset": ds.name, "indices": indices}, defense=defense,
        population=population, seed=None if defense is None else config.seed,
    )


def public_set(config: ExperimentConfig, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
    """The attacker's auxiliary data for this experiment: the dataset's images that share nothing with the
    private batch (``obs.info["indices"]``; ``ImageDataset.disjoint_from``), at the victim's size, with their
    labels (the label prior)."""
    ds = load_dataset(config.dataset, size=config.image_size, channels=config.channels)
    rest = torch.tensor(ds.disjoint_from(list(obs.info.get("indices", ()))), dtype=torch.long)
    return ds.images[rest], ds.labels[rest]


def run_experiment(config: ExperimentConfig, out: str | Path | None = None, progress: bool = False) -> ExperimentResult:
    """Run one experiment; with ``out``, write the report there."""
    obs, truth = make_victim(config)
    attack = ATTACKS.build(config.attack, **config.attack_kwargs)
    recon = attack.reconstruct(obs, device=config.device, seed=config.seed, progress=progress)
    public, public_labels = public_set(config, obs)
    guesses = ImageGuesses.of(obs.inputs, public, seed=config.seed)  # the attacker's guesses: never the truth
    scores = score(recon.inputs, recon.labels, truth, guesses=guesses, public_labels=public_labels)
    extra = {"config": config.to_dict()}
    if out is not None:
        metrics = write_report(out, obs, recon, scores, truth, seed=config.seed, device=config.device, extra=extra)
    else:
        metrics = {**metrics_dict(obs, recon, scores, truth, seed=config.seed, device=config.device), **extra}
    return ExperimentResult(config, obs, truth, recon, scores, metrics)


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """An ``ExperimentConfig`` from a file (top-level keys, or an ``[experiment]`` table)."""
    data = read_file(path)
    if set(data) == {"experiment"}:
        return build(ExperimentConfig, data["experiment"], str(path), "experiment")
    return build(ExperimentConfig, data, str(path))
