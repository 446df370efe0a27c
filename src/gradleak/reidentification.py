"""Re-identification: would the reconstruction pick the private sample out of a line-up?

PSNR correlates weakly with what a person recognises (SemSim, Sun et al. NeurIPS 2023). A closer question for
privacy is whether the reconstruction *identifies* its sample: put the true sample among ``N - 1`` other samples
of the same dataset, rank all ``N`` by similarity to the reconstruction, and report the true sample's rank; top-1
re-identification is the share of samples ranked first. Chance is ``1 / N``.

Similarity is measured in pixel space (negative mean squared error) and, where a feature model is given, in its
feature space (cosine similarity of the inputs to its classifier layer): a model trained locally on public data
(no downloaded weights), standing in for the perceptual features a person uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import ConfigError

#: candidates in a line-up (the truth and N - 1 others) unless the caller says otherwise
LINEUP = 100

Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reidentification:
    """Per true sample (truth order): the rank (1 = first) of the truth among ``lineup`` candidates."""

    space: str
    ranks: list[int]
    lineup: int

    @property
    def top1(self) -> float:
        return sum(r == 1 for r in self.ranks) / len(self.ranks)

    @property
    def chance(self) -> float:
        return 1.0 / self.lineup

    def to_json(self) -> dict[str, object]:
        return {"space": self.space, "ranks": self.ranks, "lineup": self.lineup, "top1": self.top1,
                "chance": self.chance}


def rank_in_lineup(recon: torch.Tensor, truth: torch.Tensor, others: torch.Tensor, *,
                   embed: Embed | None = None, space: str = "pixels") -> Reidentification:
    """Ranks of each ``truth[i]`` among ``[truth[i], *others]`` by similarity to ``recon[i]`` (``recon`` matched to
    ``truth`` already). A tie with another candidate counts against the truth, so a constant guess ranks last."""
    if len(recon) != len(truth):
        raise ConfigError(f"{len(recon)} reconstructions for {len(truth)} true samples")
    if len(others) < 1:
        raise ConfigError("a line-up needs at least one other sample")
    recon, truth, others = (t.detach().cpu().float() for t in (recon, truth, others))
    if embed is None:
        def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return -torch.cdist(a.flatten(1).double(), b.flatten(1).double()).pow(2)
    else:
        with torch.no_grad():
            feats = {"recon": embed(recon), "truth": embed(truth), "others": embed(others)}

        def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            fa = torch.nn.functional.normalize(a.flatten(1).double(), dim=1)
            fb = torch.nn.functional.normalize(b.flatten(1).double(), dim=1)
            return fa @ fb.T

        recon, truth, others = feats["recon"], feats["truth"], feats["others"]
    to_truth = similarity(recon, truth).diagonal()  # (B,)
    to_others = similarity(recon, others)  # (B, N - 1)
    ranks = (1 + (to_others >= to_truth[:, None]).sum(1)).tolist()
    return Reidentification(space, [int(r) for r in ranks], len(others) + 1)


def classifier_features(model: nn.Module, inputs_to_model: Callable[[torch.Tensor], torch.Tensor]) -> Embed:
    """An embedding: what ``model``'s last ``nn.Linear`` reads (the penultimate features), for pixels mapped to
    the model's inputs by ``inputs_to_model`` (normalisation)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not head:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    model.eval()

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = head[-1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
        try:
            out = []
            for chunk in pixels.split(256):
                seen.clear()
                model(inputs_to_model(chunk))
                out.append(seen[0].flatten(1))
        finally:
            handle.remove()
        return torch.cat(out)

    return embed
