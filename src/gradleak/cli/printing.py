"""What a command prints: a run's summary, the report files written, why nothing was recovered."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradleak.cli.status import NOTHING_RECOVERED


def print_summary(metrics: dict[str, Any], out: Path) -> None:
    mean = metrics["mean"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    if metrics["observation"]["inputs"].get("kind", "image") != "tokens":
        print(
            f"{metrics['attack']['name']}: PSNR {fmt(mean['psnr'], '.2f')} dB  SSIM {fmt(mean['ssim'], '.3f')}  "
            f"MSE {fmt(mean['mse'], '.2e')}  label accuracy {fmt(mean['label_accuracy'], '.2f')}  "
            f"({metrics['iterations']} iterations, {metrics['wall_time_s']:.1f} s)"
        )
        print(f"recovered labels {metrics['per_sample']['recovered_label']}, true "
              f"{metrics['per_sample']['true_label']}")
        print(f"verdict: {metrics['verdict']}")
    details = metrics.get("details", {})
    if details.get("sequences_found") is not None:
        print(f"{metrics['attack']['name']}: {details['sequences_found']} sequences found for a batch of "
              f"{metrics['observation']['batch_size']} ({metrics['wall_time_s']:.1f} s)")
    recovered = details.get("recovered")
    if recovered is not None:
        print(f"samples the attack flags as recovered: {sum(recovered)} of {len(recovered)} (details in metrics.json)")
    print_written(out, ("grid.png", "metrics.json", "reconstruction.safetensors"))


def print_written(out: Path, names: Sequence[str]) -> None:
    """Name the report files that exist: never one that was not written."""
    written = [str(out / n) for n in names if (out / n).is_file()]
    if written:
        print(f"report: {', '.join(written)}")


def nothing_recovered(recon: Any) -> str | None:
    """A one-line reason when a text attack found no sequence at all (its reconstruction is padding only)."""
    found = recon.details.get("sequences_found") if isinstance(recon.details, dict) else None
    if found != 0:
        return None
    why = recon.details.get("stopped")
    counts = recon.details.get("candidates_per_position") or []
    if not why and counts and max(counts) == 0:
        why = "no token lies inside the layer-1 span at any position"
    rank = recon.details.get("layer1_rank")
    reason = f" ({why})" if why else f" (layer-1 rank {rank})" if rank is not None else ""
    return (f"{recon.attack} found no token sequence in the update{reason}; nothing was written (exit status "
            f"{NOTHING_RECOVERED})")
