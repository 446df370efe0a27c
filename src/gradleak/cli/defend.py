"""``gradleak defend``: a defense's price. Train a model with the defense (short fixed schedule) and report its
test accuracy beside the undefended baseline, and epsilon where it has one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradleak.cli.flags import parse_assignments, utility_config
from gradleak.defenses import build_defense
from gradleak.utility import measure_utility


def run(args: argparse.Namespace) -> int:
    defense = build_defense(args.defense, **parse_assignments(args.defense_arg, "--defense-arg"))
    result = measure_utility(defense, utility_config(args))
    cfg = result.config
    print(f"utility of {defense.describe() if defense else 'no defense'}: {cfg.model} on {cfg.dataset}, "
          f"{cfg.steps} steps of batch {cfg.batch_size} ({result.train_size} train / {result.test_size} test images)")
    print(f"test accuracy {result.accuracy:.3f} (undefended {result.baseline_accuracy:.3f})")
    if result.privacy is not None:
        print(result.privacy.describe())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "utility.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        print(f"report: {out / 'utility.json'}")
    return 0
