"""Checkpoints of a running optimisation attack, so that a long attack that is killed resumes where it stopped.

The file holds plain tensors, numbers and strings only (candidates, optimizer state, iteration counters, the
objective trace) and is read back with ``torch.load(weights_only=True)``, which never unpickles code. A
fingerprint of the attack's settings, seed and observed update guards against resuming a different attack.
The engine draws random numbers only at initialisation, so for Adam a resumed run repeats the uninterrupted
one exactly; L-BFGS is checkpointed between its outer steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import CaptureError
from gradleak.observation import Observation


def fingerprint(config: Any, observations: Sequence[Observation], seed: int | None) -> str:
    """SHA-256 of the engine settings, the seed and every observed update tensor."""
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    h.update(str(seed).encode())
    for obs in observations:
        for key in sorted(obs.update):
            h.update(key.encode())
            h.update(obs.update[key].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


class Checkpointer:
    """Saves and restores the engine state at ``path`` (no-op when ``path`` is None)."""

    def __init__(
        self, path: str | Path | None, config: Any, observations: Sequence[Observation], seed: int | None, every: int
    ) -> None:
        self.path = None if path is None else Path(path)
        self.every = every
        self.key = fingerprint(config, observations, seed) if self.path is not None else ""
        self.last_saved = -1

    def restore(
        self, state: dict[str, Any], variables: list[torch.Tensor], opt: torch.optim.Optimizer, trace: torch.Tensor
    ) -> bool:
        """Load a matching checkpoint into the engine state; False when there is none."""
        if self.path is None or not self.path.exists():
            return False
        try:
            saved = torch.load(self.path, map_location=trace.device, weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise CaptureError(f"checkpoint {self.path} cannot be read as a gradleak checkpoint: {exc}") from exc
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.key:
            raise CaptureError(
                f"checkpoint {self.path} belongs to another attack (settings, seed or observation differ); "
                "delete it or choose another --checkpoint path"
            )
        with torch.no_grad():
            for var, value in zip(variables, saved["variables"]):
                if var.shape != value.shape:
                    raise CaptureError(f"checkpoint {self.path}: variable of shape {tuple(value.shape)}, "
                                       f"expected {tuple(var.shape)}")
                var.copy_(value)
        opt.load_state_dict(saved["optimizer"])
        trace.copy_(saved["trace"])
        state.update({k: saved["state"][k] for k in ("evals", "best", "stall")})
        self.last_saved = state["evals"]
        return True

    def maybe_save(
        self, state: dict[str, Any], variables: list[torch.Tensor], opt: torch.optim.Optimizer, trace: torch.Tensor
    ) -> None:
        if self.path is not None and state["evals"] - max(self.last_saved, 0) >= self.every:
            self.save(state, variables, opt, trace)

    def finish(
        self, state: dict[str, Any], variables: list[torch.Tensor], opt: torch.optim.Optimizer, trace: torch.Tensor
    ) -> None:
        if self.path is not None and state["evals"] != self.last_saved:
            self.save(state, variables, opt, trace)

    def save(
        self, state: dict[str, Any], variables: list[torch.Tensor], opt: torch.optim.Optimizer, trace: torch.Tensor
    ) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "fingerprint": self.key,
            "variables": [v.detach().clone() for v in variables],
            "optimizer": opt.state_dict(),
            "trace": trace.detach().clone(),
            "state": {"evals": int(state["evals"]), "best": float(state["best"]), "stall": int(state["stall"])},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)  # atomic: a kill mid-write leaves the previous checkpoint intact
        self.last_saved = state["evals"]
