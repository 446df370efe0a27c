"""The price of a defense: test accuracy of a model trained with it, beside the same training without it.

Both runs share everything (data split, initial weights, batch draws, schedule) and the training step of
``training.train``, whose every step is ``defenses.defended_update``, the victim simulation's code path. So
the accuracy reported is that of the exact computation the attack was measured against. Epsilon, where a
defense has one, is Opacus's accountant for *this* training schedule (train-set size, batch size, steps).
Text models are measured here the same way (``text_defense_cost``: the same batch draws, client-step gradient,
defended update and loop, ``training.defended_steps``), fine-tuned with Adam and scored by perplexity (decoders)
or accuracy (encoders) on held-out records. DP-SGD on text runs through Opacus
(``defenses.dp.dp_text_gradient``: per-record clipping and noise at every step, on Poisson batches of expected
size ``batch_size``) and reports epsilon from Opacus's RDP accountant for those batches (``steps`` steps at sample
rate ``batch_size / train_records``, delta 1e-5); other step defenses (microbatch clipping) are refused.
``tradeoff`` reads its accuracy column from ``measure_utility``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gradleak.client_step import changes_step, step_gradient_of
from gradleak.data import load_dataset
from gradleak.defenses.base import Defense, Privacy, Schedule, Update, defended_update, draw_batches
from gradleak.defenses.dp import DPSGD
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.model_spec import model_spec_for
from gradleak.training_task import Task, forward
from gradleak.text.corpus import private_records
from gradleak.text.models import TEXT_MODELS, text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import encode_records
from gradleak.training import accuracy, defended_steps, split_indices, train


@dataclass(frozen=True)
class UtilityConfig:
    """A short fixed training schedule on a bundled dataset: ``steps`` SGD steps (momentum) of ``batch_size``
    on a seeded ``1 - test_fraction`` split, accuracy on the rest."""

    dataset: str = "digits"
    image_size: int = 32
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    test_fraction: float = 0.25
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"utility training needs steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class UtilityResult:
    """Accuracy with the defense and without it (same schedule), and the privacy guarantee if any."""

    defense: str
    settings: dict[str, Any]
    accuracy: float
    baseline_accuracy: float
    privacy: Privacy | None
    train_size: int
    test_size: int
    config: UtilityConfig
    wall_time_s: float

    @property
    def epsilon(self) -> float | None:
        return None if self.privacy is None else self.privacy.epsilon

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = self.epsilon
        out["delta"] = None if self.privacy is None else self.privacy.delta
        return out


def train_with_defense(
    defense: Defense | None, config: UtilityConfig = UtilityConfig()
) -> tuple[torch.nn.Module, float, Schedule]:
    """Train a fresh model (seeded init) with ``defense`` on the config's split; return it, its test accuracy and
    the schedule of the batches it drew (what ``defense.privacy`` accounts)."""
    ds = load_dataset(config.dataset, size=config.image_size)
    train_idx, test_idx = split_indices(len(ds), config.test_fraction, config.seed)
    c, h, _ = ds.input_shape
    torch.manual_seed(config.seed)
    model = model_spec_for(config.model, {"in_channels": c, "num_classes": config.num_classes or ds.num_classes,
                                          "image_size": h, **config.model_kwargs}).build()
    schedule = train(model, ds, train_idx, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                     momentum=config.momentum, seed=config.seed, device=config.device, defense=defense)
    assert schedule is not None  # UtilityConfig refuses steps < 1
    return model, accuracy(model, ds, test_idx, device=config.device), schedule


def measure_utility(
    defense: Defense | None, config: UtilityConfig = UtilityConfig(), *, baseline_accuracy: float | None = None
) -> UtilityResult:
    """Test accuracy with ``defense`` beside the undefended baseline (trained here unless given)."""
    start = time.perf_counter()
    if baseline_accuracy is None:
        _, baseline_accuracy, _ = train_with_defense(None, config)
    _, acc, schedule = train_with_defense(defense, config)
    ds_len = len(load_dataset(config.dataset, size=config.image_size))
    return UtilityResult(
        defense="none" if defense is None else defense.name,
        settings={} if defense is None else defense.settings(),
        accuracy=acc,
        baseline_accuracy=baseline_accuracy,
        privacy=None if defense is None else defense.privacy(schedule),
        train_size=schedule.dataset_size,
        test_size=ds_len - schedule.dataset_size,
        config=config,
        wall_time_s=time.perf_counter() - start,
    )


# -- text models -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextUtility:
    """``metric`` is ``"accuracy"`` (encoders, higher is better) or ``"perplexity"`` (decoders, lower is better)."""

    model: str
    defense: str
    metric: str
    value: float
    steps: int
    #: (epsilon, delta)-DP of the run for DP-SGD (Opacus RDP accountant); ``None`` for other defenses
    epsilon: float | None = None


def text_defense_cost(defense: Defense | None = None, *, model: str = "bert-tiny", steps: int = 60,
                      batch_size: int = 16, lr: float = 3e-3, vocab_size: int = 512, train_records: int = 256,
                      test_records: int = 128, seq_len: int = 64, seed: int = 0) -> TextUtility:
    """Fine-tune ``model`` from random init for ``steps`` Adam steps on defended updates; score held-out records."""
    dp = changes_step(defense)
    if dp and not isinstance(defense, DPSGD):
        raise ConfigError(f"defense {defense.name!r} changes the training step (per-example gradients); on text "
                          "only Opacus DP-SGD ('dpsgd') does, beside the update transforms (noise, clipping, "
                          "pruning, quantization, secure aggregation)")
    if steps < 1 or batch_size < 1 or train_records < batch_size or test_records < 1:
        raise ConfigError(f"need steps >= 1, 1 <= batch_size <= train_records, test_records >= 1; got "
                          f"steps={steps}, batch_size={batch_size}, train_records={train_records}, "
                          f"test_records={test_records}")
    tokenizer = load_tokenizer("bpe", vocab_size)
    encoder = TEXT_MODELS[model][0] == "bert"
    records = private_records(train_records + test_records, seed=4242 + seed)
    ids = encode_records(tokenizer, records, seq_len)
    labels = torch.tensor([r.label for r in records])
    mask = (ids != tokenizer.pad_id).long()
    task = Task.classification(4) if encoder else Task.causal_lm()
    spec = text_model_spec(model, tokenizer.vocab_size, tokenizer.pad_id, eos_id=tokenizer.eos_id, num_labels=4)
    torch.manual_seed(seed)
    net = spec.build()
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    draws = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)

    batches, schedule = draw_batches(train_records, batch_size, steps,
                                     poisson=defense is not None and defense.sampling == "poisson", generator=draws)

    spec_in = TokenInput(seq_len, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.name)
    step = step_gradient_of(defense, spec_in, task, generator=noise, expected_batch_size=schedule.batch_size)

    def update_of(x: torch.Tensor, y: torch.Tensor) -> Update:
        return step(net, x, y if encoder else None)

    net.train()
    defended_steps(params, optimizer, batches,
                   lambda pick: defended_update(defense, net, ids[pick], labels[pick], generator=noise,
                                                update_of=update_of))
    net.eval()
    test_ids, test_labels, test_mask = ids[train_records:], labels[train_records:], mask[train_records:]
    with torch.no_grad():
        if encoder:
            logits = forward(net, test_ids, test_mask)
            value = float((logits.argmax(-1) == test_labels).float().mean())
        else:
            value = math.exp(float(task.loss(net, test_ids, None, test_mask)))
    epsilon = None
    if dp:
        privacy = defense.privacy(schedule)  # type: ignore[union-attr]
        epsilon = None if privacy is None else privacy.epsilon
    return TextUtility(model, "none" if defense is None else defense.name,
                       "accuracy" if encoder else "perplexity", value, steps, epsilon)
