"""The price of an update defense on text: held-out accuracy (BERT-style classifier of a record's locale) or
perplexity (GPT-2-style decoder) of a tiny model fine-tuned here with every step's update defended, beside the
same run undefended. Same seed, same records, same initial weights and batch draws for every defense.

The measurement is the images' (``utility``/``training``) with text data and a text metric: batches from
``defenses.draw_batches``, each step's update from the client step's gradient (``client_step.step_gradient_of``)
through ``defenses.defended_update``, the loop ``training.defended_steps``, epsilon from ``defense.privacy`` for
the schedule that ran. Defenses that only transform the shared update (Gaussian/Laplacian noise, clipping,
pruning, quantization, secure aggregation) apply as they do to images. DP-SGD (Abadi et al. 2016) runs through
Opacus (``defenses.dp.dp_text_gradient``: per-record clipping and noise at every step, on Poisson batches of
expected size ``batch_size``) and reports epsilon from Opacus's RDP accountant for those batches (``steps`` steps
at sample rate ``batch_size / train_records``, delta 1e-5). Other step defenses (microbatch clipping) are refused
with a ``ConfigError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradleak.client_step import changes_step, step_gradient_of
from gradleak.defenses.base import Defense, Update, defended_update, draw_batches
from gradleak.defenses.dp import DPSGD
from gradleak.errors import ConfigError
from gradleak.inputs import TokenInput
from gradleak.tasks import Task, forward
from gradleak.text.corpus import private_records
from gradleak.text.models import TEXT_MODELS, text_model_spec
from gradleak.text.tokenizer import load_tokenizer
from gradleak.text.victim import encode_records
from gradleak.training import defended_steps


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
