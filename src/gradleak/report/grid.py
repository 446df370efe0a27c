"""Image grids as papers show them: one row of true images over one row of reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the file-only Agg backend, loaded on first use: a command that draws nothing
    (capture, inspect, list, an attack without a report) does not pay the second its import takes."""
    import matplotlib  # heavy: only a command that draws loads it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid(
    rows: list[torch.Tensor],
    row_titles: list[str],
    path: str | Path,
    captions: list[list[str]] | None = None,
    max_columns: int = 16,
) -> Path:
    """Save images ``(B, C, H, W)`` in [0, 1], one tensor per row, as a PNG with titles and captions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = min(max(r.shape[0] for r in rows), max_columns)
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols + 1.2, 1.6 * len(rows)), squeeze=False)
    for i, (images, title) in enumerate(zip(rows, row_titles)):
        for j in range(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= images.shape[0]:
                continue
            img = images[j].detach().cpu().float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            if captions is not None and captions[i] and j < len(captions[i]):
                ax.set_xlabel(captions[i][j], fontsize=7)
        axes[i][0].set_ylabel(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_trace_plot(trace: torch.Tensor, path: str | Path, title: str = "objective") -> Path:
    """Plot the attack objective per iteration (one line per restart, log scale)."""
    path = Path(path)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = trace.detach().cpu().double().clamp_min(1e-30)
    for r in range(values.shape[1]):
        ax.plot(values[:, r].numpy(), linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration (objective evaluations)")
    ax.set_ylabel(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
