"""The training objective whose gradient the client shares: classification, causal or masked language modelling.

An attack simulates the client's update, so it must compute the same loss the client did. ``Task.loss`` is that
loss, the mean over the batch as ``torch.nn.functional.cross_entropy`` and Hugging Face's models compute it:

- ``classification``: cross-entropy of the logits against class labels (images, feature vectors, sequence
  classification);
- ``causal_lm``: next-token cross-entropy, logits at position t against the token at t+1, padding ignored;
- ``masked_lm``: cross-entropy at the masked positions only (labels are -100 elsewhere), as BERT is trained.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak import limits
from gradleak.errors import CaptureError

#: a model update keyed by parameter name
Update = dict[str, torch.Tensor]

TaskKind = Literal["classification", "causal_lm", "masked_lm"]
TASK_KINDS: tuple[str, ...] = ("classification", "causal_lm", "masked_lm")
IGNORE_INDEX = -100


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor, a Hugging Face ``ModelOutput`` or a tuple led by the logits."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise CaptureError(f"the model returned {type(output).__name__}, not logits (a tensor or an output with .logits)")


def is_huggingface(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers`` model, or a PEFT (LoRA) wrapper of one: keyword inputs
    ``input_ids``/``attention_mask``."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    return isinstance(base, transformers.PreTrainedModel)


def forward(model: nn.Module, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
            embeddings: bool = False) -> torch.Tensor:
    """Logits of ``model`` on ``inputs``: token ids (or input embeddings when ``embeddings``) for language models,
    model-space tensors otherwise."""
    if is_huggingface(model):
        key = "inputs_embeds" if embeddings else "input_ids"
        kwargs: dict[str, Any] = {key: inputs}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        return logits_of(model(**kwargs))
    return logits_of(model(inputs))


@dataclass(frozen=True)
class Task:
    """What the client trains for. ``num_classes`` is set for classification only."""

    kind: TaskKind
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise CaptureError(f"task must be one of {list(TASK_KINDS)}, got {self.kind!r}")
        if self.kind == "classification":
            n = self.num_classes
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise CaptureError(f"a classification task needs an integer num_classes >= 2, got {n!r}")
            limits.check("num_classes", n, "num_classes")
        elif self.num_classes is not None:
            raise CaptureError(f"num_classes is for classification, not {self.kind}")

    @classmethod
    def classification(cls, num_classes: int) -> Task:
        return cls("classification", num_classes)

    @classmethod
    def causal_lm(cls) -> Task:
        return cls("causal_lm")

    @classmethod
    def masked_lm(cls) -> Task:
        return cls("masked_lm")

    def loss_from_logits(self, logits: torch.Tensor, labels: torch.Tensor | None, inputs: torch.Tensor | None = None,
                         attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The mean loss given the model's ``logits``. Classification: ``labels`` are class indices ``(B,)`` or, for
        a soft label (DLG), logits ``(B, K)``. Causal LM: targets are ``inputs`` shifted (``labels`` overrides
        them); masked LM: ``labels`` ``(B, L)`` with -100 where nothing is predicted."""
        if self.kind == "classification":
            if labels is None:
                raise CaptureError("a classification loss needs labels")
            if labels.dtype.is_floating_point:
                return -(F.softmax(labels, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
            return F.cross_entropy(logits, labels)
        if self.kind == "causal_lm":
            targets = inputs if labels is None else labels
            if targets is None:
                raise CaptureError("a causal LM loss needs the token ids")
            targets = targets[:, 1:]
            if attention_mask is not None:
                targets = targets.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
            shifted = logits[:, :-1]
            return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        if labels is None:
            raise CaptureError("a masked LM loss needs labels (-100 where nothing is masked)")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)

    def loss(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The client's mean loss of ``model`` on model-space ``inputs`` (normalised pixels, features, token ids)."""
        logits = forward(model, inputs, attention_mask)
        return self.loss_from_logits(logits, labels, inputs, attention_mask)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_classes": self.num_classes}


def task_from_json(data: Any) -> Task:
    if not isinstance(data, dict):
        raise CaptureError(f"'task' must be an object with a 'kind', got {type(data).__name__}")
    return Task(data.get("kind"), data.get("num_classes"))  # type: ignore[arg-type]


def batch_gradient(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, task: Task | None = None,
    attention_mask: torch.Tensor | None = None,
) -> Update:
    """Gradient of the task's mean loss (default: cross-entropy classification) of ``model`` on model-space
    ``inputs`` (normalised pixels or features, token ids), keyed by parameter name, trainable parameters only."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    if task is None:
        loss = F.cross_entropy(model(inputs), labels)
    else:
        loss = task.loss(model, inputs, labels, attention_mask)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: g.detach() for n, g in zip(names, grads) if g is not None}
