"""Plain supervised training on an ImageDataset: the "training stage" of a victim model, and the baseline
against which defended training is measured. Kept deliberately small: SGD with momentum, fixed steps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gradleak.cache import cached_weights
from gradleak.data.dataset import ImageDataset
from gradleak.model_spec import ModelSpec
from gradleak.defenses.base import Defense, Schedule, Update, defended_update, draw_batches
from gradleak.client_step import normalize



def split_indices(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded train/test split of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(n * (1 - test_fraction)))
    return perm[:cut], perm[cut:]


def defended_steps(params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                   batches: Sequence[torch.Tensor], update_of: Callable[[torch.Tensor], Update]) -> None:
    """The training loop of every defended model gradleak measures (images: ``train``; text:
    ``utility.text_defense_cost``): for each batch (positions drawn by ``defenses.draw_batches``) the
    optimizer steps on the update the client would share, ``update_of(positions)``. An empty Poisson batch is
    skipped, as Opacus's ``DPDataLoader`` does; a parameter whose update is withheld (absent) is not stepped."""
    for positions in batches:
        if positions.numel() == 0:
            continue
        update = update_of(positions)
        optimizer.zero_grad(set_to_none=True)
        for name, g in update.items():
            params[name].grad = g.to(params[name].dtype)
        optimizer.step()


def train(
    model: nn.Module,
    data: ImageDataset,
    indices: Sequence[int],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str = "cpu",
    defense: Defense | None = None,
) -> Schedule | None:
    """Train ``model`` in place for ``steps`` SGD steps on mini-batches drawn from ``indices``; return the
    ``Schedule`` of the batches drawn (what a DP defense's epsilon is accounted for), ``None`` for no steps.

    Each step applies the update a client would share (the plain mean gradient, or what ``defense``
    makes of it), computed by ``defenses.defended_update``, the victim simulation's code path: a FedSGD
    step of this client (and, under secure aggregation, of other clients drawn from ``indices``). Batches come
    from ``defenses.draw_batches``: a defense with Poisson sampling (DP-SGD) gets Poisson batches of expected
    size ``batch_size``, as its accountant assumes, and a step whose Poisson batch is empty is skipped; others
    get fixed-size draws, accounted without amplification. Parameters whose update a defense withholds are not
    changed."""
    if steps <= 0:
        return None
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    pool = torch.tensor(list(indices), dtype=torch.long)
    if defense is not None:
        defense.check_model(model)
    noise_gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    params = dict(model.named_parameters())
    poisson = defense is not None and defense.sampling == "poisson"
    batches, schedule = draw_batches(len(pool), batch_size, steps, poisson=poisson,
                                     generator=torch.Generator().manual_seed(seed))

    def draw_others(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = pool[torch.randint(len(pool), (n,), generator=g, device=g.device).cpu()]
        return normalize(data.images[idx].to(device), data.mean, data.std), data.labels[idx].to(device)

    def update_of(positions: torch.Tensor) -> Update:
        idx = pool[positions]
        x = normalize(data.images[idx].to(device), data.mean, data.std)
        return defended_update(
            defense, model, x, data.labels[idx].to(device), generator=noise_gen, draw_others=draw_others,
            expected_batch_size=schedule.batch_size,
        )

    defended_steps(params, opt, batches, update_of)
    return schedule


#: the optimiser settings of ``pretrained``, part of its cache key
PRETRAIN: dict[str, float] = {"batch_size": 32, "lr": 0.05, "momentum": 0.9}


def pretrained(
    spec: ModelSpec,
    data: ImageDataset,
    indices: Sequence[int],
    *,
    steps: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The state dict of ``spec`` initialised under ``seed`` and trained ``steps`` steps by ``train`` on
    ``indices`` of ``data``: the trained victim of an attack (Geiping et al. 2020 attack trained networks).
    Trained once per recipe and cached (``gradleak.cache``); the global random state is left as it was, so a
    cached and a fresh run go on identically."""
    pool = list(indices)
    recipe = {"model": spec.to_json(), "data": [data.name, list(data.input_shape), len(data)],
              "indices": hashlib.sha256(json.dumps(pool).encode()).hexdigest(), "steps": steps, "seed": seed,
              "recipe": PRETRAIN, "v": 1}

    def fit() -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.build()
            train(model, data, pool, steps=steps, seed=seed, device=device, **PRETRAIN)
        return model.state_dict()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = spec.build().state_dict()
    return cached_weights("image-models", recipe, fit, expected)


@torch.no_grad()
def accuracy(
    model: nn.Module, data: ImageDataset, indices: Sequence[int], device: torch.device | str = "cpu", chunk: int = 256
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``indices``."""
    was_training = model.training
    model.eval()
    correct = 0
    idx_all = torch.tensor(list(indices), dtype=torch.long)
    for start in range(0, len(idx_all), chunk):
        idx = idx_all[start : start + chunk]
        x = normalize(data.images[idx].to(device), data.mean, data.std)
        correct += int((model(x).argmax(1).cpu() == data.labels[idx]).sum())
    model.train(was_training)
    return correct / max(1, len(idx_all))
