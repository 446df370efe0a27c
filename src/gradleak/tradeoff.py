"""Leakage against utility: one attack against one defense at several strengths, both sides measured.

For every strength (and the undefended baseline) the attack runs on each of ``images`` (one private batch
per index, the experiment's victim otherwise unchanged) and the defense trains a model on the utility
schedule (``utility.measure_utility``). The table has one row per strength: PSNR, SSIM, label accuracy
(means over the images), test accuracy, and epsilon where the defense has one (for the utility schedule).
Written as ``tradeoff.csv``, ``tradeoff.json``, ``tradeoff.md`` and the plot ``tradeoff.png``
(reconstruction PSNR against test accuracy).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak.defenses import DEFENSES, build_defense
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, run_experiment
from gradleak.utility import UtilityConfig, measure_utility

COLUMNS = ("defense", "strength", "psnr", "ssim", "label_accuracy", "test_accuracy", "epsilon")


@dataclass(frozen=True)
class TradeoffConfig:
    """``defense`` at each of ``strengths`` (values of its parameter ``param``, by default the defense's
    ``strength`` parameter), other parameters in ``defense_kwargs``; the victim and attack of ``experiment``
    on each index of ``images``; utility on ``utility``."""

    defense: str
    strengths: tuple[Any, ...]
    param: str | None = None
    defense_kwargs: dict[str, Any] = field(default_factory=dict)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    images: tuple[int, ...] = (0, 1, 2)
    utility: UtilityConfig = field(default_factory=UtilityConfig)

    def __post_init__(self) -> None:
        if not self.strengths:
            raise ConfigError("a trade-off needs at least one strength")
        if not self.images:
            raise ConfigError("a trade-off needs at least one image index to attack")
        for s in self.strengths:  # every strength must be a valid defense
            build_defense(self.defense, **self.kwargs_at(s))

    @property
    def strength_param(self) -> str:
        if self.param is not None:
            return self.param
        return DEFENSES.get(self.defense).strength  # type: ignore[attr-defined]

    def kwargs_at(self, strength: Any) -> dict[str, Any]:
        return {**self.defense_kwargs, self.strength_param: strength}


@dataclass(frozen=True)
class TradeoffRow:
    defense: str
    strength: Any
    psnr: float
    ssim: float
    label_accuracy: float | None
    test_accuracy: float
    epsilon: float | None

    def cells(self) -> list[str]:
        def fmt(v: Any, spec: str) -> str:
            if v is None:
                return "n/a"
            if isinstance(v, float) and math.isinf(v):
                return "inf"
            return format(v, spec) if isinstance(v, float) else str(v)

        return [self.defense, fmt(self.strength, "g"), fmt(self.psnr, ".2f"), fmt(self.ssim, ".3f"),
                fmt(self.label_accuracy, ".2f"), fmt(self.test_accuracy, ".3f"), fmt(self.epsilon, ".3g")]


def _leakage(exp: ExperimentConfig, images: Sequence[int], defense: str | None, kwargs: dict[str, Any]) -> tuple[float, float, float | None]:
    psnr, ssim, labels = [], [], []
    for index in images:
        result = run_experiment(dataclasses.replace(exp, indices=(index,), defense=defense, defense_kwargs=kwargs))
        means = result.scores.means()
        psnr.append(float(means["psnr"]))  # type: ignore[arg-type]
        ssim.append(float(means["ssim"]))  # type: ignore[arg-type]
        if means["label_accuracy"] is not None:
            labels.append(float(means["label_accuracy"]))
    n = len(images)
    finite = [min(p, 100.0) for p in psnr]  # an exact recovery has infinite PSNR; cap it for the mean
    return sum(finite) / n, sum(ssim) / n, (sum(labels) / len(labels) if labels else None)


def run_tradeoff(config: TradeoffConfig, progress: Callable[[TradeoffRow], None] | None = None) -> list[TradeoffRow]:
    """The baseline row (``defense='none'``) and one row per strength, in the order given."""
    base_psnr, base_ssim, base_labels = _leakage(config.experiment, config.images, None, {})
    base_utility = measure_utility(None, config.utility)
    rows = [TradeoffRow("none", None, base_psnr, base_ssim, base_labels, base_utility.accuracy, None)]
    if progress:
        progress(rows[-1])
    for strength in config.strengths:
        kwargs = config.kwargs_at(strength)
        psnr, ssim, labels = _leakage(config.experiment, config.images, config.defense, kwargs)
        defense = build_defense(config.defense, **kwargs)
        utility = measure_utility(defense, config.utility, baseline_accuracy=base_utility.accuracy)
        rows.append(TradeoffRow(config.defense, strength, psnr, ssim, labels, utility.accuracy, utility.epsilon))
        if progress:
            progress(rows[-1])
    return rows


def markdown_table(rows: Sequence[TradeoffRow], param: str = "strength") -> str:
    header = [c if c != "strength" else param for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def plot_tradeoff(rows: Sequence[TradeoffRow], path: str | Path, title: str = "", param: str = "strength") -> Path:
    """Reconstruction PSNR (leakage, lower is better) against test accuracy (utility, higher is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    defended = [r for r in rows if r.defense != "none"]
    ax.plot([r.test_accuracy for r in defended], [r.psnr for r in defended], "o-", color="tab:blue", label=rows[-1].defense)
    for r in defended:
        label = f"{param}={r.strength:g}" if isinstance(r.strength, (int, float)) else f"{r.strength}"
        if r.epsilon is not None:
            label += "\neps=inf" if math.isinf(r.epsilon) else f"\neps={r.epsilon:.3g}"
        ax.annotate(label, (r.test_accuracy, r.psnr), textcoords="offset points", xytext=(5, 4), fontsize=7)
    for r in rows:
        if r.defense == "none":
            ax.plot([r.test_accuracy], [r.psnr], "*", color="tab:red", markersize=12, label="no defense")
    ax.set_xlabel("test accuracy (utility)")
    ax.set_ylabel("reconstruction PSNR, dB (leakage)")
    ax.set_title(title or "leakage against utility", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_tradeoff(rows: Sequence[TradeoffRow], config: TradeoffConfig, out: str | Path) -> dict[str, Path]:
    """Write the table (CSV, JSON with the config, Markdown) and the plot into folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    param = config.strength_param
    paths = {"csv": out / "tradeoff.csv", "json": out / "tradeoff.json", "md": out / "tradeoff.md",
             "png": out / "tradeoff.png"}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c if c != "strength" else param for c in COLUMNS])
        for r in rows:
            writer.writerow([r.defense, r.strength, r.psnr, r.ssim, r.label_accuracy, r.test_accuracy, r.epsilon])

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) and not math.isinf(v) else (
            "inf" if isinstance(v, float) and math.isinf(v) else v)

    payload = {
        "schema": "gradleak.tradeoff", "version": 1, "param": param,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "rows": [{k: clean(v) for k, v in dataclasses.asdict(r).items()} for r in rows],
    }
    paths["json"].write_text(json.dumps(payload, indent=2))
    paths["md"].write_text(markdown_table(rows, param) + "\n")
    exp = config.experiment
    title = (f"{exp.attack} on {exp.model}/{exp.dataset} vs {config.defense}; "
             f"utility: {config.utility.model}/{config.utility.dataset}, {config.utility.steps} steps")
    plot_tradeoff(rows, paths["png"], title=title, param=param)
    return paths
