"""``gradleak list``: the registries (models, datasets, data formats, attacks, label rules, objectives, priors,
defenses) and which attack handles which inputs and tasks."""

from __future__ import annotations

import argparse
import json

from gradleak.attacks import ATTACKS, LABEL_RULES
from gradleak.attacks.objectives import OBJECTIVES
from gradleak.attacks.priors import PRIORS
from gradleak.data import DATASETS, FORMATS
from gradleak.defenses import DEFENSES
from gradleak.inputs import INPUT_KINDS
from gradleak.models import MODELS
from gradleak.training_task import TASK_KINDS


def run(args: argparse.Namespace) -> int:
    listing = {
        "models": MODELS.names(), "datasets": DATASETS.names(), "data formats": sorted(FORMATS),
        "attacks": ATTACKS.names(), "label rules": LABEL_RULES.names(), "objectives": OBJECTIVES.names(),
        "priors": PRIORS.names(), "defenses": DEFENSES.names(),
    }
    support = {name: {"inputs": sorted(getattr(ATTACKS.get(name), "input_kinds", ())),
                      "tasks": sorted(getattr(ATTACKS.get(name), "tasks", ()))} for name in ATTACKS.names()}
    if args.json:
        print(json.dumps({**listing, "attack support": support}, indent=2))
    else:
        for key, names in listing.items():
            print(f"{key:>12}: {', '.join(names)}")

        columns = [*INPUT_KINDS, *TASK_KINDS]
        print("\nwhich attack handles what (x = yes):")
        print(f"{'attack':>16}  " + "  ".join(f"{c:>14}" for c in columns))
        for name, s in support.items():
            marks = ["x" if c in s["inputs"] or c in s["tasks"] else "-" for c in columns]
            print(f"{name:>16}  " + "  ".join(f"{m:>14}" for m in marks))
    return 0
