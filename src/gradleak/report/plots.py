"""Leakage plots for reports: reconstruction quality against a swept setting, mean and spread over seeds."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from gradleak.report.grid import pyplot


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def defense_strength(row: dict[str, Any]) -> tuple[str, float | None]:
    """``(defense name, strength)`` of a results row: no defense is ``('none', 0.0)``; otherwise the
    ``strength`` setting if there is one, else the defense's only numeric setting (``None`` if ambiguous)."""
    name = row.get("defense")
    if name in (None, "", "none"):
        return "none", 0.0
    kwargs = row.get("defense_kwargs") or {}
    if not isinstance(kwargs, dict):
        return str(name), None
    if "strength" in kwargs:
        return str(name), _number(kwargs["strength"])
    numeric = [_number(v) for v in kwargs.values() if _number(v) is not None]
    return str(name), (numeric[0] if len(numeric) == 1 else None)


def series(
    rows: Sequence[dict[str, Any]], x: Callable[[dict[str, Any]], float | None], group: Callable[[dict[str, Any]], str],
    y: str = "psnr",
) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per group: sorted ``(x, mean y, std y, n)`` over the ok rows that have both values."""
    buckets: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        xv, yv = x(row), _number(row.get(y))
        if xv is None or yv is None:
            continue
        buckets[group(row)][xv].append(yv)
    out: dict[str, list[tuple[float, float, float, int]]] = {}
    for g, points in sorted(buckets.items()):
        line = []
        for xv in sorted(points):
            vals = points[xv]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            line.append((xv, mean, std, len(vals)))
        out[g] = line
    return out


def line_plot(data: dict[str, list[tuple[float, float, float, int]]], xlabel: str, ylabel: str, title: str,
              logx: bool = False) -> bytes:
    """PNG bytes of one line per group with +-1 std error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for name, line in data.items():
        xs, ms, ss = [p[0] for p in line], [p[1] for p in line], [p[2] for p in line]
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, linewidth=1.5, label=name)
    if logx:
        ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _varies(data: dict[str, list[tuple[float, float, float, int]]]) -> bool:
    return len({p[0] for line in data.values() for p in line}) > 1


def leakage_vs_batch_size(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """One line per attack; when defenses vary too, only the undefended runs."""
    undefended = [r for r in rows if defense_strength(r)[0] == "none"]
    defended = len(undefended) < len(rows)
    data = series(undefended or rows, lambda r: _number(r.get("batch_size")), lambda r: str(r.get("attack")))
    if not _varies(data):
        return None
    title = "Leakage vs batch size" + (" (no defense)" if defended and undefended else "")
    return line_plot(data, "batch size", "PSNR (dB)", title)


def leakage_vs_defense_strength(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """One line per (defense, attack); the undefended runs of the attack are each line's point at 0."""
    names = {defense_strength(r)[0] for r in rows} - {"none"}
    if not names:
        return None
    by_batch = len({r.get("batch_size") for r in rows}) > 1

    def group(r: dict[str, Any]) -> str:
        return str(r.get("attack")) + (f", batch {r.get('batch_size')}" if by_batch else "")

    data: dict[str, list[tuple[float, float, float, int]]] = {}
    for name in sorted(names):
        subset = [r for r in rows if defense_strength(r)[0] in (name, "none")]
        for label, line in series(subset, lambda r: defense_strength(r)[1], group).items():
            data[f"{name} / {label}"] = line
    if not _varies(data):
        return None
    return line_plot(data, "defense strength", "PSNR (dB)", "Leakage vs defense strength", logx=True)


def leakage_vs_training_stage(rows: Sequence[dict[str, Any]]) -> bytes | None:
    data = series(rows, lambda r: _number(r.get("pretrain_steps")), lambda r: str(r.get("attack")))
    if not _varies(data):
        return None
    return line_plot(data, "pre-training steps (training stage)", "PSNR (dB)", "Leakage vs training stage")


def leakage_per_round(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Audit rows: best PSNR per round, one line per update source."""
    data = series(rows, lambda r: _number(r.get("round")), lambda r: str(r.get("source")), y="psnr_best")
    if not data:
        return None
    return line_plot(data, "round", "best PSNR (dB)", "Leakage per round and client")
