"""Checks that refuse a run before any work: a device this machine lacks, an ``--out`` folder that is a file, a
batch and model the memory cannot hold, token labels outside the vocabulary."""

from __future__ import annotations

import argparse
import math
from typing import Any

from gradleak.config import check_attack_settings
from gradleak.devices import check_device
from gradleak.errors import ConfigError, GradleakError
from gradleak.memory import check_memory, run_bytes
from gradleak.model_spec import model_spec_for
from gradleak.outputs import check_out_dir


#: commands whose --out is a folder (capture writes a file, report an HTML file)
FOLDER_OUT = ("demo", "attack", "tradeoff", "defend", "fl-audit", "audit", "sweep", "split")


def check_paths_and_device(args: argparse.Namespace) -> None:
    """One-line errors before any work: a device this machine lacks, an --out folder that is a file."""
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if args.command in FOLDER_OUT and getattr(args, "out", None):
        check_out_dir(args.out)


def check_experiment_memory(config: Any) -> None:
    """Refuse, before the victim is built, a run whose batch and model cannot fit in the memory available."""
    batch = len(config.indices) or config.batch_size
    channels = config.channels or 3
    attack = check_attack_settings(config.attack, config.attack_kwargs, "attack_kwargs")
    restarts = max(1, int(getattr(attack, "restarts", 1) or 1))
    elements = restarts * batch * channels * config.image_size ** 2
    try:
        spec = model_spec_for(config.model, {"in_channels": channels, "num_classes": config.num_classes or 100,
                                             "image_size": config.image_size, **config.model_kwargs})
        params = spec.count_parameters() or 0
    except GradleakError:
        params = 0  # a bad model setting is reported where the model is built, with its own message
    check_memory(run_bytes(elements, params),
                 f"a batch of {batch} {channels}x{config.image_size}x{config.image_size} images ({restarts} "
                 f"restarts) and a {params}-parameter model")


def check_observation_memory(obs: Any, attack: Any, device: str) -> None:
    """Refuse, before the attack starts, an observation whose batch and model cannot fit in the memory available
    (with --allow-large the size bounds no longer do)."""
    if not str(device).startswith("cpu"):
        return  # the accelerator's memory: its allocator's error is caught and named at the top level
    restarts = max(1, int(getattr(attack, "restarts", 1) or 1))
    elements = restarts * obs.batch_size * math.prod(obs.input_shape)
    params = sum(int(v.numel()) for v in obs.weights.values())
    check_memory(run_bytes(elements, params), f"attacking a batch of {obs.batch_size} inputs of shape "
                 f"{tuple(obs.input_shape)} ({restarts} restarts) on a {params}-parameter model")


def check_token_labels(obs: Any) -> None:
    """Leaked labels of a language-modelling capture are token ids shaped like the batch: each in the vocabulary,
    or -100 (no target). The Observation checks classification labels only; a causal-LM capture's labels reach
    the attack's loss (an index out of range there is a traceback from inside PyTorch)."""
    labels, inputs = obs.labels, obs.inputs
    if labels is None or obs.task.kind == "classification" or getattr(inputs, "kind", None) != "tokens":
        return
    shape = (obs.batch_size, inputs.seq_len)
    if tuple(labels.shape) != shape:
        raise ConfigError(f"the capture's labels have shape {tuple(labels.shape)}; {obs.task.kind} labels are token "
                          f"ids shaped {shape}")
    ids = labels[labels != -100]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= inputs.vocab_size):
        worst = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ConfigError(f"the capture's labels hold token id {worst}; {obs.task.kind} labels must lie in "
                          f"[0, {inputs.vocab_size}) or be -100")
