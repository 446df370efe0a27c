"""``gradleak inspect``: what a capture, truth or tensor file holds (model, input description, task, update, what
leaked), read without running any model code."""

from __future__ import annotations

import argparse
import json

from gradleak.inspection import describe_file


def run(args: argparse.Namespace) -> int:
    summary = describe_file(args.file)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if isinstance(value, list):
                print(f"{key}:")
                for item in value:
                    print(f"  {item}")
            else:
                print(f"{key}: {value}")
    return 0
