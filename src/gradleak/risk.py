"""Leakage risk of one update, without running an attack (issue 14, part 1).

Indicators are read from the update and the model alone, in milliseconds:

- ``log_batch``: log2 of the batch size the client claims; optimisation attacks degrade with it
  (Geiping et al. 2020, Yin et al. 2021).
- ``classifier_rank``: effective rank (exp of the singular-value entropy, Roy and Vetterli 2007) of the last linear
  layer's weight gradient. Each sample adds at most one rank-one term ``(p - onehot(y)) h^T``, so it counts the
  samples that layer's gradient separates (Fowl et al. 2022 read samples off linear layers the same way).
- ``negative_bias``: how many classifier bias entries have a negative gradient: the distinct labels the iDLG rule
  (Zhao et al. 2020) recovers.
- ``log_norm_per_sample``: log10 of the update's L2 norm divided by the claimed batch size. A trained model's
  gradients are small, noise makes them large.
- ``first_layer_share``: share of the squared update norm in the first parameter tensor (input-side layers carry
  the most input information; pruning and noise change it).
- ``sparsity``: share of exactly-zero entries (pruning, quantisation).

``RiskModel`` combines them linearly into the PSNR (dB) an optimisation attack (iDLG, 100 L-BFGS iterations) is
predicted to reach. Its coefficients are fitted by ``benchmarks/calibrate_risk.py`` (ordinary least squares from
scikit-learn on ``benchmarks/data/risk_calibration.csv``) and stored as JSON in ``risk_model.json``: no pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gradleak.errors import ConfigError
from gradleak.limits import parse_json

FEATURES: tuple[str, ...] = (
    "log_batch", "classifier_rank", "negative_bias", "log_norm_per_sample", "first_layer_share", "sparsity",
)
MODEL_FILE = "risk_model.json"


def _effective_rank(matrix: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values); 0 for a zero matrix."""
    s = torch.linalg.svdvals(matrix.double().reshape(matrix.shape[0], -1))
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _classifier(model: nn.Module, num_classes: int | None) -> tuple[str, str | None]:
    """Names of the last ``nn.Linear``'s weight and bias (with ``num_classes`` outputs when given)."""
    found: tuple[str, str | None] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (num_classes is None or module.out_features == num_classes):
            prefix = f"{name}." if name else ""
            found = (prefix + "weight", prefix + "bias" if module.bias is not None else None)
    if found is None:
        raise ConfigError(f"the model has no linear layer with {num_classes} outputs: the risk score needs the classifier")
    return found


def indicators(
    update: Mapping[str, torch.Tensor],
    model: nn.Module,
    batch_size: int,
    num_classes: int | None = None,
    update_kind: Literal["gradient", "delta"] = "gradient",
) -> dict[str, float]:
    """The indicators of one update (see the module docstring). ``update`` is keyed by parameter name as in
    ``model.named_parameters()``; a weight ``delta`` is turned into a gradient direction by its sign."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if update_kind not in ("gradient", "delta"):
        raise ConfigError(f"update_kind must be 'gradient' or 'delta', got {update_kind!r}")
    names = [n for n, _ in model.named_parameters() if n in update]
    if not names:
        raise ConfigError("the update holds none of the model's parameters (keys must be parameter names)")
    sign = 1.0 if update_kind == "gradient" else -1.0
    tensors = {n: update[n].detach().double().cpu() * sign for n in names}
    for n, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ConfigError(f"update tensor {n!r} holds NaN or inf")
    squares = {n: float((t * t).sum()) for n, t in tensors.items()}
    total = sum(squares.values())
    numel = sum(t.numel() for t in tensors.values())
    zeros = sum(int((t == 0).sum()) for t in tensors.values())
    weight, bias = _classifier(model, num_classes)
    rank = _effective_rank(tensors[weight]) if weight in tensors else 0.0
    negative = float((tensors[bias] < 0).sum()) if bias is not None and bias in tensors else 0.0
    return {
        "log_batch": math.log2(batch_size),
        "classifier_rank": rank,
        "negative_bias": negative,
        "log_norm_per_sample": math.log10(max(math.sqrt(total) / batch_size, 1e-12)),
        "first_layer_share": squares[names[0]] / total if total > 0 else 0.0,
        "sparsity": zeros / numel,
    }


@dataclass(frozen=True)
class RiskModel:
    """A linear model: predicted PSNR (dB) = ``intercept + sum(coef[f] * indicator[f])``, clipped to
    [``floor``, ``ceiling``] (the PSNR range seen in calibration)."""

    coefficients: dict[str, float]
    intercept: float
    floor: float = 0.0
    ceiling: float = 100.0
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [f for f in FEATURES if f not in self.coefficients]
        if missing:
            raise ConfigError(f"risk model lacks coefficients for {missing}; expected keys {list(FEATURES)}")

    def predict(self, values: Mapping[str, float]) -> float:
        psnr = self.intercept + sum(self.coefficients[f] * float(values[f]) for f in FEATURES)
        return min(max(psnr, self.floor), self.ceiling)

    def to_json(self) -> str:
        return json.dumps({"features": list(FEATURES), "coefficients": self.coefficients, "intercept": self.intercept,
                           "floor": self.floor, "ceiling": self.ceiling, "info": self.info}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "risk model") -> RiskModel:
        raw = parse_json(text, f"{source}: not a risk model JSON", ConfigError)
        try:
            return cls({k: float(v) for k, v in raw["coefficients"].items()}, float(raw["intercept"]),
                       float(raw.get("floor", 0.0)), float(raw.get("ceiling", 100.0)), dict(raw.get("info", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{source}: not a risk model JSON ({err})") from err

    @classmethod
    def load(cls, path: str | Path | None = None) -> RiskModel:
        """The fitted model shipped with gradleak, or the one at ``path``."""
        if path is None:
            text = resources.files("gradleak").joinpath(MODEL_FILE).read_text(encoding="utf-8")
            return cls.from_json(text, MODEL_FILE)
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))


def risk_score(
    update: Mapping[str, torch.Tensor],
    model: nn.Module,
    batch_size: int,
    num_classes: int | None = None,
    update_kind: Literal["gradient", "delta"] = "gradient",
    risk_model: RiskModel | None = None,
) -> float:
    """Predicted attack PSNR (dB) on this update: higher means riskier."""
    return (risk_model or RiskModel.load()).predict(indicators(update, model, batch_size, num_classes, update_kind))


@dataclass(frozen=True)
class FilterDecision:
    """What the filter did with one update: ``action`` is 'keep', 'drop', 'clip' or 'flag'."""

    index: int
    score: float
    action: str


def filter_updates(
    updates: Sequence[Mapping[str, torch.Tensor]],
    model: nn.Module,
    batch_sizes: Sequence[int],
    threshold: float = 15.0,
    action: Literal["drop", "clip", "flag"] = "drop",
    num_classes: int | None = None,
    update_kind: Literal["gradient", "delta"] = "gradient",
    clip_factor: float = 0.1,
    risk_model: RiskModel | None = None,
) -> tuple[list[dict[str, torch.Tensor]], list[FilterDecision]]:
    """Score each update and drop, clip (scale by ``clip_factor``) or flag those whose predicted PSNR exceeds
    ``threshold``; the library call behind ``gradleak.fl.filtering.FilteringStrategy`` for non-Flower loops.
    Returns the updates kept (clipped ones scaled) and one decision per input update."""
    if action not in ("drop", "clip", "flag"):
        raise ConfigError(f"filter action must be 'drop', 'clip' or 'flag', got {action!r}")
    if len(updates) != len(batch_sizes):
        raise ConfigError(f"{len(updates)} updates but {len(batch_sizes)} batch sizes")
    if not 0.0 <= clip_factor <= 1.0:
        raise ConfigError(f"clip_factor must be in [0, 1], got {clip_factor}")
    rm = risk_model or RiskModel.load()
    kept: list[dict[str, torch.Tensor]] = []
    decisions: list[FilterDecision] = []
    for i, (update, b) in enumerate(zip(updates, batch_sizes)):
        s = risk_score(update, model, b, num_classes, update_kind, rm)
        if s <= threshold:
            decisions.append(FilterDecision(i, s, "keep"))
            kept.append(dict(update))
        elif action == "drop":
            decisions.append(FilterDecision(i, s, "drop"))
        elif action == "clip":
            decisions.append(FilterDecision(i, s, "clip"))
            kept.append({k: v * clip_factor for k, v in update.items()})
        else:
            decisions.append(FilterDecision(i, s, "flag"))
            kept.append(dict(update))
    return kept, decisions
