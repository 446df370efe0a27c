"""DP-SGD on a text model's step through Opacus (Abadi et al. 2016): per-example clipping and Gaussian noise.

``dp_text_gradient`` wraps a Hugging Face GPT-2 or BERT model in ``opacus.GradSampleModule``, computes each
record's loss (causal LM: the mean over its own predicted tokens; classification: its cross-entropy), averages
them, and lets ``DPOptimizer.pre_step()`` clip each record's gradient to ``max_grad_norm`` (L2 over all trainable
parameters), sum, add ``N(0, (noise_multiplier * max_grad_norm)^2)`` and divide by the batch size. The shared
gradient is the resulting ``p.grad``, keyed without Opacus's ``_module.`` prefix.

Layer support (Opacus 1.6): ``nn.Embedding``, ``nn.Linear`` and ``nn.LayerNorm`` have grad samplers; GPT-2's
``transformers`` ``Conv1D`` has none, and Opacus computes its per-example gradients with its ``torch.func``
fallback (checked against autograd in ``tests/text/test_dp.py``); the tied input/output embedding accumulates
both uses per example. Position (and token-type) ids are passed expanded to the batch, since the models'
default ``(1, L)`` ids would make Opacus see a batch of one at the position embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.defenses.base import Update
from gradleak.defenses.dp import DPSGD, private_gradient
from gradleak.errors import ConfigError
from gradleak.tasks import IGNORE_INDEX, Task, logits_of


def _model_kwargs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    kind = getattr(getattr(inner, "config", None), "model_type", None)
    if kind not in ("gpt2", "bert"):
        raise ConfigError(f"DP-SGD on text knows GPT-2 and BERT layouts; this model is {kind!r}")
    b, length = ids.shape
    kwargs = {"input_ids": ids, "position_ids": torch.arange(length, device=ids.device).expand(b, length)}
    if kind == "bert":
        kwargs["token_type_ids"] = torch.zeros_like(ids)
    if mask is not None:
        kwargs["attention_mask"] = mask
    return kwargs


def per_example_loss(logits: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None, task: Task,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """Each record's loss ``(B,)``: causal LM averages over the record's own predicted tokens (padding left out),
    classification is the record's cross-entropy."""
    if task.kind == "classification":
        if labels is None:
            raise ConfigError("DP-SGD on a classifier needs labels")
        return F.cross_entropy(logits, labels, reduction="none")
    if task.kind != "causal_lm":
        raise ConfigError(f"DP-SGD on text: causal LM or classification, not {task.kind}")
    targets = ids[:, 1:]
    if mask is not None:
        targets = targets.masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    shifted = logits[:, :-1]
    token = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (targets != IGNORE_INDEX).sum(1).clamp_min(1)
    return token.sum(1) / counts


def dp_text_gradient(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor | None, task: Task,
                     defense: DPSGD, *, mask: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, expected_batch_size: int | None = None) -> Update:
    """The DP-SGD gradient of one step on a copy of ``model`` (the caller's is untouched), through
    ``defenses.dp.private_gradient``: ``(1/B) (sum_i clip(g_i, C) + N(0, sigma^2 C^2 I))`` with
    ``C = max_grad_norm``, ``sigma = noise_multiplier``; noise drawn from ``generator`` (reproducible), unless the
    defense asks for Opacus's ``secure_mode``. ``expected_batch_size`` (default: the batch's size) is what the
    noised sum is divided by: a Poisson batch's expected size, never its drawn size, which would leak it."""
    if not isinstance(defense, DPSGD):
        raise ConfigError(f"dp_text_gradient runs Opacus DP-SGD ('dpsgd'), not {getattr(defense, 'name', defense)!r}")
    kwargs = _model_kwargs(model, ids, mask)

    def loss_of(wrapped: nn.Module) -> torch.Tensor:
        return per_example_loss(logits_of(wrapped(**kwargs)), ids, labels, task, mask).mean()

    return private_gradient(model, loss_of, defense, expected_batch_size=expected_batch_size or int(ids.shape[0]),
                             generator=generator)
