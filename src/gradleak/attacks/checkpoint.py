"""Checkpoints of a running optimisation attack, so that a long attack that is killed resumes where it stopped.

The file holds plain tensors, numbers and strings only (candidates, optimizer state, iteration counters, the
objective trace) and is read back with ``torch.load(weights_only=True)``, which never unpickles code.

Three guards stand between a file and a resumed attack:

- **integrity**: the file is a header line, the SHA-256 of the rest, then the ``torch.save`` payload; one
  flipped or missing byte anywhere is refused before the payload is opened;
- **fingerprint**: a SHA-256 of everything that changes the computation (the engine settings, the attack's
  name and settings, the fixed labels or their absence, the seed, the observed updates, weights, model and
  input description), so a checkpoint of one attack (e.g. DLG) never resumes another (e.g. iDLG with the
  same engine settings);
- **state checks**: counters are non-negative integers within the iteration budget, every tensor is dense and has
  the shape and dtype of the run's own, the candidates and optimizer state are finite, the best value is a number;
  a crafted counter or NaN candidate is refused. A run whose candidates diverge to NaN is not saved over the last
  finite checkpoint.

The engine draws random numbers only at initialisation, so for Adam a resumed run repeats the uninterrupted
one exactly; L-BFGS is checkpointed between its outer steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import CaptureError
from gradleak.observation import Observation, check_plain_tensor, update_digest

MAGIC = b"gradleak-checkpoint v2 sha256="
_DIGEST_LEN = 64
#: evaluations an L-BFGS strong-Wolfe line search may run past the iteration budget (torch's ``max_ls``)
LINE_SEARCH_SLACK = 25


def fingerprint(
    config: Any,
    observations: Sequence[Observation],
    seed: int | None,
    labels: Sequence[torch.Tensor] | None = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """SHA-256 of every input of the computation: engine settings, ``context`` (attack name and settings),
    the labels held fixed (``None``: optimised jointly, as DLG does), the seed and each observation (update,
    weights, model, inputs, task, batch size, protocol, leaked labels, model mode)."""
    h = hashlib.sha256()

    def add(tag: str, value: Any) -> None:
        h.update(f"{tag}=".encode())
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b";")

    add("engine", dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config)
    context = dict(context or {})
    if isinstance(context.get("settings"), Mapping):  # where the checkpoint lives does not change the computation
        context["settings"] = {k: v for k, v in context["settings"].items() if k != "checkpoint"}
    add("context", context)
    add("seed", seed)
    add("labels", None if labels is None else [lab.detach().cpu().tolist() for lab in labels])
    for obs in observations:
        add("update", update_digest(obs.update))
        add("weights", update_digest(obs.weights))
        add("model", obs.model_spec.to_json())
        add("inputs", obs.inputs.to_json())
        add("task", obs.task.to_json())
        add("observation", [obs.batch_size, obs.update_kind, obs.model_mode,
                            None if obs.local_training is None else dataclasses.asdict(obs.local_training),
                            None if obs.labels is None else obs.labels.detach().cpu().tolist()])
    return h.hexdigest()


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with its digest, atomically: a kill mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """The payload of a checkpoint file whose digest matches its content; anything else is a ``CaptureError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaptureError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    head = len(MAGIC) + _DIGEST_LEN + 1
    if not data.startswith(MAGIC) or len(data) < head or data[head - 1 : head] != b"\n":
        raise CaptureError(f"checkpoint {path} is not a gradleak checkpoint (no integrity header); delete it or "
                           "choose another --checkpoint path")
    body = data[head:]
    if hashlib.sha256(body).hexdigest().encode() != data[len(MAGIC) : head - 1]:
        raise CaptureError(f"checkpoint {path} is damaged or altered (its content does not match its digest); "
                           "delete it to start over")
    try:
        saved = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a payload torch cannot read is the file's fault
        raise CaptureError(f"checkpoint {path} cannot be read as a gradleak checkpoint: {exc}") from None
    if not isinstance(saved, dict):
        raise CaptureError(f"checkpoint {path} does not hold a checkpoint dictionary")
    return saved


def _count(value: Any, name: str, path: Path, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise CaptureError(f"checkpoint {path}: {name} must be an integer in [0, {upper}], got {value!r}")
    return value


class Checkpointer:
    """Saves and restores the engine state at ``path`` (no-op when ``path`` is None)."""

    def __init__(
        self,
        path: str | Path | None,
        config: Any,
        observations: Sequence[Observation],
        seed: int | None,
        every: int,
        labels: Sequence[torch.Tensor] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.every = every
        self.iterations = int(getattr(config, "iterations", 0)) + LINE_SEARCH_SLACK
        self.key = fingerprint(config, observations, seed, labels, context) if self.path is not None else ""
        self.last_saved = -1

    def restore(
        self, state: dict[str, Any], variables: list[torch.Tensor], opt: torch.optim.Optimizer, trace: torch.Tensor
    ) -> bool:
        """Load a matching checkpoint into the engine state; False when there is none."""
        if self.path is None or not self.path.exists():
            return False
        path = self.path
        saved = read_checkpoint(path, map_location=trace.device)
        if saved.get("fingerprint") != self.key:
            raise CaptureError(
                f"checkpoint {path} belongs to another attack (settings, labels, seed or observation differ); "
                "delete it or choose another --checkpoint path"
            )
        counters = saved.get("state")
        if not isinstance(counters, dict):
            raise CaptureError(f"checkpoint {path}: 'state' must be a dictionary of counters")
        evals = _count(counters.get("evals"), "state.evals (iterations done)", path, self.iterations)
        stall = _count(counters.get("stall"), "state.stall", path, self.iterations)
        best = counters.get("best")
        if isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best):
            raise CaptureError(f"checkpoint {path}: state.best must be a number, got {best!r}")
        saved_vars, saved_trace = saved.get("variables"), saved.get("trace")
        if not isinstance(saved_vars, list) or len(saved_vars) != len(variables):
            raise CaptureError(f"checkpoint {path}: expected {len(variables)} variable tensors")
        for i, (var, value) in enumerate(zip(variables, saved_vars)):
            if not isinstance(value, torch.Tensor) or value.shape != var.shape or value.dtype != var.dtype:
                got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise CaptureError(f"checkpoint {path}: variable {got}, expected {var.dtype} {tuple(var.shape)}")
            check_plain_tensor(value, f"checkpoint {path}: variable {i}", cpu=False)
            if not torch.isfinite(value).all():  # NaN candidates would resume into a NaN "reconstruction"
                raise CaptureError(f"checkpoint {path}: variable {i} (the candidates) holds NaN or Inf; delete it to "
                                   "start over")
        if not isinstance(saved_trace, torch.Tensor) or saved_trace.shape != trace.shape:
            raise CaptureError(f"checkpoint {path}: trace must be a tensor of shape {tuple(trace.shape)}")
        check_plain_tensor(saved_trace, f"checkpoint {path}: trace", cpu=False)
        try:
            opt.load_state_dict(saved["optimizer"])
        except Exception as exc:  # noqa: BLE001 - a foreign optimizer state is the file's fault
            raise CaptureError(f"checkpoint {path}: optimizer state does not fit this attack ({exc})") from None
        _check_optimizer_state(opt, path, self.iterations)
        with torch.no_grad():
            for var, value in zip(variables, saved_vars):
                var.copy_(value)
            trace.copy_(saved_trace)
        state.update({"evals": evals, "best": float(best), "stall": stall})
        self.last_saved = evals
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
        """Write the state, unless its candidates are not finite (a diverged run): the last finite checkpoint stays."""
        assert self.path is not None
        if not all(bool(torch.isfinite(v).all()) for v in variables):
            return
        payload = {
            "fingerprint": self.key,
            "variables": [v.detach().clone() for v in variables],
            "optimizer": opt.state_dict(),
            "trace": trace.detach().clone(),
            "state": {"evals": int(state["evals"]), "best": float(state["best"]), "stall": int(state["stall"])},
        }
        write_checkpoint(self.path, payload)
        self.last_saved = state["evals"]


def _check_optimizer_state(opt: torch.optim.Optimizer, path: Path, iterations: int) -> None:
    """Counters inside the optimizer state (Adam's ``step``, L-BFGS's ``n_iter`` and ``func_evals``) must be
    non-negative integers no larger than the iteration budget, and its tensors finite."""
    for per_param in opt.state.values():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                check_plain_tensor(value, f"checkpoint {path}: optimizer state {name!r}", cpu=False)
            if name in ("step", "n_iter", "func_evals"):
                number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
                if isinstance(number, float) and number.is_integer():
                    number = int(number)
                _count(number, f"optimizer {name}", path, iterations)
            elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                raise CaptureError(f"checkpoint {path}: optimizer state {name!r} holds NaN or Inf")
