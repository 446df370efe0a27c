"""``gradleak capture``: simulate a client's update and save what the server sees (safetensors), with the ground
truth in a separate file. The model is a registry name or the user's own factory (``--model pkg.mod:factory``
or ``path/file.py:factory``), which the capture records so that ``attack`` can rebuild it."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradleak.capture import save_capture, save_truth
from gradleak.cli.checks import check_experiment_memory
from gradleak.cli.flags import experiment_config
from gradleak.experiment import make_victim
from gradleak.outputs import check_distinct, check_new_file


def run(args: argparse.Namespace) -> int:
    path = check_new_file(args.out, "--out", force=args.force)
    truth_path = Path(args.truth) if args.truth else path.with_name(path.stem + ".truth.safetensors")
    check_new_file(truth_path, "--truth", force=args.force)
    check_distinct({"--out": path, "--truth": truth_path})
    config = experiment_config(args)
    check_experiment_memory(config)
    obs, truth = make_victim(config)
    path = save_capture(obs, path, force=True)
    save_truth(truth, truth_path, capture=obs)
    print(f"capture: {path} ({obs.update_kind}, batch {obs.batch_size}, model {obs.model_spec.name})")
    print(f"ground truth (keep it away from the attacker): {truth_path}")
    return 0
