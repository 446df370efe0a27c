"""The leakage auditor: attack every update a Flower server recorded and report, per round and client, how
much of the private data it gives away.

The auditor knows what a curious server knows (``AuditTarget``: the architecture, input shape, normalisation,
and the local-training settings it sent) and nothing else. Ground truth, when a simulation has it, is looked
up afterwards by ``truth(update)`` and used only to score.

Every score stands beside what the attacker could produce *without* the update (``gradleak.baselines``): a
mid-gray image, the public mean image and, when the audit is given ``public`` images (the attacker's auxiliary
data, disjoint from every client's batch), the best of them. A private sample is *leaked* when its reconstruction
beats the best guess by the margins (``baselines.Margins``: 3 dB PSNR and 0.1 SSIM); a row reports the share of
its private samples leaked and the mean PSNR of the best guess. The fixed ``leak_threshold_db`` line stays beside
it (``above_threshold``): on digits the best public image alone scores about 19 dB, so a dB line says little.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.base import Reconstruction
from gradleak.baselines import ImageGuesses, Margins
from gradleak.client_step import make_observation
from gradleak.errors import ConfigError
from gradleak.fl.recording_strategy import RecordedUpdate
from gradleak.metrics import BaselineScores, leaked_images, psnr, score, score_guesses, ssim
from gradleak.inputs import ImageInput
from gradleak.outputs import check_out_dir, clear_stale
from gradleak.report.grid import save_grid
from gradleak.report.html import render_audit_folder
from gradleak.training_task import Task
from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation, shared_buffer_names

TruthLookup = Callable[[RecordedUpdate], GroundTruth | None]
AggregateView = Literal["client", "batch"]

#: Columns of ``audit.csv``, in order.
#: ``best_baseline_psnr``/``_ssim``: mean over the private samples of the best guess's score (the same samples
#: ``psnr_mean`` averages); ``leaked``: the share of them leaked; ``samples``: how many there are;
#: ``above_threshold``: ``psnr_best`` reaches the fixed ``leak_threshold_db`` (the verdict before baselines).
AUDIT_COLUMNS = (
    "round", "source", "aggregate", "num_clients", "batch_size", "samples", "attack", "psnr_best", "psnr_mean",
    "best_baseline_psnr", "ssim_best", "ssim_mean", "best_baseline_ssim", "leaked", "above_threshold",
    "label_accuracy", "dp_epsilon", "wall_time_s", "error",
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
    """The attacker's view of one recorded update: a weight delta with the local-training settings (and the
    change of the BatchNorm running statistics when the client sent them).

    An aggregate of ``k`` clients is the mean of their deltas. ``aggregate_as='client'`` attacks it as one
    client's update (the per-client batch size the server configured); ``'batch'`` as one batch of all the
    examples behind it.
    """
    model = target.model_spec.build()
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in update.returned or n not in update.sent]
    if missing:
        raise ConfigError(f"round {update.round} {update.source}: arrays lack parameters {missing[:3]} "
                          f"of {target.model_spec.name!r}")
    delta = {n: (update.returned[n].float() - update.sent[n].float()) for n in names}
    # a client that sends its state dict (Flower's PyTorch examples) also moves the BatchNorm running statistics:
    # their change gives its batch statistics (attacks.bn_statistics); of an aggregate, the clients' mean
    delta.update({n: update.returned[n].float() - update.sent[n].float() for n in shared_buffer_names(model)
                  if n in update.returned and n in update.sent})
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
    return make_observation(
        target.model_spec, update.sent, delta,
        inputs=ImageInput(tuple(target.input_shape), tuple(target.mean), tuple(target.std)),
        task=Task.classification(target.num_classes), batch_size=batch,
        local_training=LocalTraining(steps, float(lr), local_batch), model_mode=target.model_mode,
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


@dataclass(frozen=True)
class JudgedScores:
    """Per private sample (truth order): the reconstruction's PSNR and SSIM, which reconstruction it is, the
    guesses' scores and the leaked verdict."""

    psnr: list[float]
    ssim: list[float]
    assignment: list[int]
    baselines: BaselineScores
    leaked: list[bool]


def judge(recon: torch.Tensor, truth: GroundTruth, guesses: ImageGuesses, margins: Margins = Margins()) -> JudgedScores:
    """Score a reconstruction beside the attacker's ``guesses``. Equal counts go through ``metrics.score`` (the
    optimal one-to-one matching); otherwise (one client's view of an aggregate of many) each private sample takes
    its best reconstruction, and the guesses are scored on the same samples."""
    if recon.shape == truth.inputs.shape:
        s = score(recon, None, truth, guesses=guesses, margins=margins)
        assert s.baselines is not None and s.leaked is not None
        return JudgedScores(s.psnr, s.ssim, s.assignment, s.baselines, s.leaked)
    values, ssims, assignment = match_scores(recon, truth)
    baselines = score_guesses(truth.inputs, guesses)
    return JudgedScores(values, ssims, assignment, baselines, leaked_images(values, ssims, baselines, margins))


@dataclass
class AuditEntry:
    """One attacked update: its row in the report, and the images behind it."""

    row: dict[str, Any]
    update: RecordedUpdate
    reconstruction: Reconstruction | None = None
    truth: GroundTruth | None = None
    assignment: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    #: per private sample: beats the best guess by the margins
    leaked: list[bool] = field(default_factory=list)


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

    def leaked_share(self, aggregate: bool | None = None) -> float | None:
        """The share of every scored private sample (over the rows, optionally only aggregates or only clients)
        whose reconstruction beats the best guess by the margins; ``None`` when nothing was scored."""
        verdicts = [v for e in self.entries if aggregate is None or e.row["aggregate"] == aggregate for v in e.leaked]
        return sum(verdicts) / len(verdicts) if verdicts else None


def audit(
    updates: Sequence[RecordedUpdate],
    target: AuditTarget,
    attack: str = "idlg",
    attack_kwargs: dict[str, Any] | None = None,
    *,
    truth: TruthLookup | None = None,
    aggregate_as: AggregateView = "client",
    leak_threshold_db: float = 25.0,
    public: torch.Tensor | None = None,
    margins: Margins = Margins(),
    rounds: Sequence[int] | None = None,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = False,
) -> AuditReport:
    """Attack each update (optionally only ``rounds``) with ``attack``; score it where ``truth`` knows the data.

    A failing attack is recorded in the row's ``error`` and the audit goes on. Each scored row holds the mean
    PSNR of the best guess an attacker makes without the update (mid-gray, the public mean image and, given
    ``public`` images ``(N, C, H, W)`` in [0, 1] that no client trained on, the best of them) and ``leaked``, the
    share of the private samples whose reconstruction beats that guess by ``margins``; ``above_threshold`` marks
    rows whose best PSNR reaches ``leak_threshold_db``. With ``out``, writes ``audit.csv``, ``audit.json``, one
    grid PNG per update and ``report.html``.
    """
    if aggregate_as not in ("client", "batch"):
        raise ConfigError(f"aggregate_as must be 'client' or 'batch', got {aggregate_as!r}")
    kwargs = dict(attack_kwargs or {})
    runner = ATTACKS.build(attack, **kwargs)
    # the attacker's guesses, from what it knows: the normalisation statistics and its public images
    guesses = ImageGuesses.of(ImageInput(tuple(target.input_shape), tuple(target.mean), tuple(target.std)), public,
                              seed=seed)
    entries: list[AuditEntry] = []
    for update in updates:
        if rounds is not None and update.round not in rounds:
            continue
        row: dict[str, Any] = {c: None for c in AUDIT_COLUMNS}
        row.update(round=update.round, source=update.source, aggregate=update.is_aggregate,
                   num_clients=update.num_clients, attack=attack, error="",
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
            judged = judge(entry.reconstruction.inputs.detach().cpu(), gt, guesses, margins)
            values, ssims, assignment = judged.psnr, judged.ssim, judged.assignment
            entry.psnr, entry.assignment, entry.leaked = values, assignment, judged.leaked
            n = len(values)
            row.update(samples=n, psnr_best=max(values), psnr_mean=sum(values) / n,
                       best_baseline_psnr=sum(judged.baselines.best_psnr) / n, ssim_best=max(ssims),
                       ssim_mean=sum(ssims) / n, best_baseline_ssim=sum(judged.baselines.best_ssim) / n,
                       leaked=sum(judged.leaked) / n)
            row["above_threshold"] = row["psnr_best"] >= leak_threshold_db
            rec_labels = entry.reconstruction.labels
            if rec_labels is not None and rec_labels.numel() == gt.labels.numel():
                row["label_accuracy"] = float((rec_labels.cpu()[assignment] == gt.labels).float().mean())
        entries.append(entry)
    report = AuditReport(entries, {"attack": attack, "attack_kwargs": kwargs, "aggregate_as": aggregate_as,
                                   "leak_threshold_db": leak_threshold_db, "seed": seed, "device": device,
                                   "guesses": [*guesses.constant, *(["public set (best)"] if len(guesses.public)
                                                                    else [])],
                                   "public_images": len(guesses.public), "margins": asdict(margins)})
    if out is not None:
        write_audit(report, out)
    return report


def write_audit(report: AuditReport, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``audit.csv``, ``audit.json``, per-update grids under ``grids/`` and ``report.html``."""
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
                      out / "grids" / name, [[], [f"{p:.1f} dB{' leaked' if leak else ''}"
                                                  for p, leak in zip(e.psnr, e.leaked or [False] * len(e.psnr))]])
        else:
            save_grid([e.reconstruction.inputs], [e.row["attack"]], out / "grids" / name)
    (out / "report.html").write_text(render_audit_folder(out))
    return out
