"""``gradleak split``: split learning. The server inverts the smashed data it sees and infers labels from the
gradients it returns, with and without the client's defenses (noise, NoPeek)."""

from __future__ import annotations

import argparse
import json

from gradleak.split.defenses import SplitDefense
from gradleak.split.run import check_split_settings, run_split


def run(args: argparse.Namespace) -> int:
    check_split_settings(args.image_size, args.cut, args.steps, args.observe)  # before the defense's checks too
    defense = SplitDefense(args.smashed_noise, args.nopeek, args.gradient_noise)
    metrics = run_split(args.out, args.dataset, args.image_size, args.cut, args.steps, args.observe,
                        args.positive_class, defense, args.seed)
    print(json.dumps(metrics, indent=2))
    return 0
