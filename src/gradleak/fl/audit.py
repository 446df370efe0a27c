"""The leakage auditor: attack every update a Flower server recorded and report, per round and client, how
much of the private data it gives away.

The auditor knows what a curious server knows (``AuditTarget``: the architecture, input shape, normalisation,
and the local-training settings it sent) and nothing else. Ground truth, when a simulation has it, is looked
up afterwards by ``truth(update)`` and used only to score.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.base import Reconstruction
from gradleak.errors import ConfigError
from gradleak.fl.recording import RecordedUpdate
from gradleak.metrics import psnr, score, ssim
from gradleak.inputs import ImageInput
from gradleak.tasks import Task
from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation

TruthLookup = Callable[[RecordedUpdate], GroundTruth | None]
AggregateView = Literal["client", "batch"]

#: Columns of ``audit.csv``, in order.
AUDIT_COLUMNS = (
    "round", "source", "aggregate", "num_clients", "batch_size", "attack", "psnr_best", "psnr_mean", "ssim_best",
    "label_accuracy", "leaked", "dp_epsilon", "wall_time_s", "error",
)


@dataclass(frozen=True)
class AuditTarget:
    """What the server knows about the federation's model and training.

    ``lr_key``/``steps_key``/``batch_key`` name the train-config (or reply-metric) entries holding the local
    learning rate, local steps and local batch size; ``examples_key`` the reply metric with the example count.
    """

    model_spec: ModelSpec
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_mode: Literal["train", "eval"] = "train"
    lr_key: str = "lr"
    steps_key: str = "local-steps"
    batch_key: str = "batch-size"
    examples_key: str = "num-examples"


def _setting(update: RecordedUpdate, key: str, default: Any = None) -> Any:
    if key in update.metrics:
        return update.metrics[key]
    return update.config.get(key, default)


def to_observation(update: RecordedUpdate, target: AuditTarget, aggregate_as: AggregateView = "client") -> Observation:
    """The attacker's view of one recorded update: a weight delta with the local-training settings.

    An aggregate of ``k`` clients is the mean of their deltas. ``aggregate_as='client'`` attacks it as one
    client's update (the per-client batch size the server configured); ``'batch'`` as one batch of all the
    examples behind it.
    """
    names = [n for n, _ in target.model_spec.build().named_parameters()]
    missing = [n for n in names if n not in update.returned or n not in update.sent]
    if missing:
        raise ConfigError(f"round {update.round} {update.source}: arrays lack parameters {missing[:3]} "
                          f"of {target.model_spec.name!r}")
    delta = {n: (update.returned[n].float() - update.sent[n].float()) for n in names}
    lr = _setting(update, target.lr_key)
    if lr is None:
        raise ConfigError(f"round {update.round} {update.source}: no learning rate under {target.lr_key!r} "
                          "in config or metrics")
    steps = int(_setting(update, target.steps_key, 1))
    examples = int(_setting(update, target.examples_key, 0) or 0)
    per_client = int(update.config.get(target.batch_key) or 0) or max(1, examples // max(1, update.num_clients))
    local_batch = int(_setting(update, target.batch_key, 0) or 0) or per_client
    if update.is_aggregate:
        batch = per_client if aggregate_as == "client" else max(examples, update.num_clients)
        local_batch = batch if aggregate_as == "batch" and steps == 1 else min(local_batch, batch)
    else:
        batch = examples or local_batch
    return Observation(
        model_spec=target.model_spec, weights=update.sent, update=delta,
        inputs=ImageInput(tuple(target.input_shape), tuple(target.mean), tuple(target.std)),
        task=Task.classification(target.num_classes), batch_size=batch, update_kind="weight_delta", local_training=LocalTraining(steps, float(lr), local_batch),
        model_mode=target.model_mode,
        info={"round": update.round, "source": update.source, "num_clients": update.num_clients},
    )


def match_scores(recon: torch.Tensor, truth: GroundTruth) -> tuple[list[float], list[float], list[int]]:
    """Per true image: PSNR and SSIM of its reconstruction and which one it is. Equal counts use the optimal
    one-to-one matching of ``metrics.score``; otherwise each true image takes its best reconstruction."""
    if recon.shape == truth.inputs.shape:
        s = score(recon, None, truth)
        return s.psnr, s.ssim, s.assignment
    n, m = truth.inputs.shape[0], recon.shape[0]
    rows = truth.inputs.repeat_interleave(m, 0)
    cols = recon.repeat(n, 1, 1, 1)
    table = psnr(cols, rows).view(n, m)
    best = table.argmax(1)
    matched = recon[best]
    return table.max(1).values.tolist(), ssim(matched, truth.inputs).tolist(), best.tolist()


@dataclass
class AuditEntry:
    """One attacked update: its row in the report, and the images behind it."""

    row: dict[str, Any]
    update: RecordedUpdate
    reconstruction: Reconstruction | None = None
    truth: GroundTruth | None = None
    assignment: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)


@dataclass
class AuditReport:
    entries: list[AuditEntry]
    settings: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [e.row for e in self.entries]

    def best_psnr(self, aggregate: bool | None = None) -> float | None:
        values = [
            e.row["psnr_best"] for e in self.entries
            if e.row["psnr_best"] is not None and (aggregate is None or e.row["aggregate"] == aggregate)
        ]
        return max(values) if values else None


def audit(
    updates: Sequence[RecordedUpdate],
    target: AuditTarget,
    attack: str = "idlg",
    attack_kwargs: dict[str, Any] | None = None,
    *,
    truth: TruthLookup | None = None,
    aggregate_as: AggregateView = "client",
    leak_threshold_db: float = 25.0,
    rounds: Sequence[int] | None = None,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
) -> AuditReport:
    """Attack each update (optionally only ``rounds``) with ``attack``; score it where ``truth`` knows the data.

    A failing attack is recorded in the row's ``error`` and the audit goes on. ``leaked`` marks rows whose
    best PSNR reaches ``leak_threshold_db``. With ``out``, writes ``audit.csv``, ``audit.json``, one grid PNG
    per update and ``report.html``.
    """
    if aggregate_as not in ("client", "batch"):
        raise ConfigError(f"aggregate_as must be 'client' or 'batch', got {aggregate_as!r}")
    kwargs = dict(attack_kwargs or {})
    runner = ATTACKS.build(attack, **kwargs)
    entries: list[AuditEntry] = []
    for update in updates:
        if rounds is not None and update.round not in rounds:
            continue
        row: dict[str, Any] = {c: None for c in AUDIT_COLUMNS}
        row.update(round=update.round, source=update.source, aggregate=update.is_aggregate,
                   num_clients=update.num_clients, attack=attack, leaked=False, error="",
                   dp_epsilon=update.metrics.get("dp-epsilon"))
        entry = AuditEntry(row, update)
        start = time.perf_counter()
        try:
            obs = to_observation(update, target, aggregate_as)
            row["batch_size"] = obs.batch_size
            recon = runner.reconstruct(obs, device=device, seed=seed, progress=progress)
            entry.reconstruction = recon
        except Exception as exc:  # noqa: BLE001 - one bad update must not stop the audit
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["wall_time_s"] = round(time.perf_counter() - start, 3)
        gt = truth(update) if truth is not None else None
        entry.truth = gt
        if gt is not None and entry.reconstruction is not None:
            values, ssims, assignment = match_scores(entry.reconstruction.inputs.detach().cpu(), gt)
            entry.psnr, entry.assignment = values, assignment
            row["psnr_best"] = max(values)
            row["psnr_mean"] = sum(values) / len(values)
            row["ssim_best"] = max(ssims)
            row["leaked"] = row["psnr_best"] >= leak_threshold_db
            rec_labels = entry.reconstruction.labels
            if rec_labels is not None and rec_labels.numel() == gt.labels.numel():
                row["label_accuracy"] = float((rec_labels.cpu()[assignment] == gt.labels).float().mean())
        entries.append(entry)
    report = AuditReport(entries, {"attack": attack, "attack_kwargs": kwargs, "aggregate_as": aggregate_as,
                                   "leak_threshold_db": leak_threshold_db, "seed": seed, "device": device})
    if out is not None:
        write_audit(report, out)
    return report


def write_audit(report: AuditReport, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``audit.csv``, ``audit.json``, per-update grids under ``grids/`` and ``report.html``."""
    from gradleak.report.grid import save_grid
    from gradleak.report.html import render_audit_folder

    from gradleak.outputs import check_out_dir, clear_stale

    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale(out, ("audit.csv", "audit.json", "report.html"), ("grids/round*_*.png",))  # no earlier run's grids
    with (out / "audit.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(AUDIT_COLUMNS))
        writer.writeheader()
        writer.writerows(report.rows)
    summary = {"settings": report.settings, "rows": report.rows, **(extra or {})}
    (out / "audit.json").write_text(json.dumps(summary, indent=2))
    for e in report.entries:
        if e.reconstruction is None:
            continue
        name = f"round{e.row['round']}_{e.row['source']}.png"
        if e.truth is not None and e.assignment:
            save_grid([e.truth.inputs, e.reconstruction.inputs[e.assignment]], ["truth", e.row["attack"]],
                      out / "grids" / name, [[], [f"{p:.1f} dB" for p in e.psnr]])
        else:
            save_grid([e.reconstruction.inputs], [e.row["attack"]], out / "grids" / name)
    (out / "report.html").write_text(render_audit_folder(out))
    return out
