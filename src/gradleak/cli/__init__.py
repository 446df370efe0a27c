"""``gradleak`` command line. Every command has ``--help``; each lives in its own module here.

- ``demo`` (images, or ``--text``): a bundled victim attacked and scored beside the attacker's guesses;
- ``capture``: simulate a victim (a registry model or your own factory) and write what the server sees;
- ``attack``: attack a capture, or your own model, weights and update files; score with ``--truth``;
- ``inspect``: show what a capture, truth or tensor file holds, running no model code;
- ``defend``: a defense's price (test accuracy when trained with it, epsilon);
- ``tradeoff``: leakage against utility, an attack against a defense at several strengths;
- ``fl-audit`` (alias ``audit``): a Flower federation, every update it shows the server attacked;
- ``sweep``: a grid of experiments on Ray, resumable;
- ``report``: one self-contained HTML file from a sweep table, a run or an audit folder;
- ``split``: split learning, smashed-data inversion and label leakage, with defenses;
- ``list``: the registries (models, datasets, attacks, objectives, priors, defenses).

Errors that come from bad input (``GradleakError``) print one line naming the problem and exit with 2; an attack
that ran and recovered nothing exits with 3 (``gradleak.cli.status``).

Only the parser loads here: a command's module, with PyTorch and whatever else it needs, is imported when that
command runs, so ``--help`` and a mistyped flag answer without loading any of it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from types import ModuleType

from gradleak.cli.parser import build_parser
from gradleak.cli.status import BAD_INPUT, NOTHING_RECOVERED
from gradleak.errors import GradleakError
from gradleak.limits import allow_large
from gradleak.memory import out_of_memory_message

#: kept under its first name: scripts and tests import it from here
EXIT_NOTHING_RECOVERED = NOTHING_RECOVERED

#: command (as typed, aliases included) -> the module under ``gradleak.cli`` whose ``run(args)`` does it
COMMAND_MODULES: dict[str, str] = {
    "demo": "demo", "capture": "capture", "attack": "attack", "inspect": "inspect", "defend": "defend",
    "tradeoff": "tradeoff", "fl-audit": "audit", "audit": "audit", "sweep": "sweep", "report": "report",
    "split": "split", "list": "listing",
}

__all__ = ["COMMAND_MODULES", "EXIT_NOTHING_RECOVERED", "build_parser", "command_module", "main"]


def command_module(command: str) -> ModuleType:
    """The module of ``command``, imported now: lazily on purpose, so that a call loads one command's dependencies
    (PyTorch, transformers, Ray, Flower, ...) and not every command's."""
    return importlib.import_module(f"gradleak.cli.{COMMAND_MODULES[command]}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = command_module(args.command)
        # why here: the device check imports PyTorch, which only a command that runs needs (not --help)
        from gradleak.cli.checks import check_paths_and_device

        check_paths_and_device(args)
        with allow_large() if getattr(args, "allow_large", False) else nullcontext():  # the whole command's bounds
            return int(command.run(args))
    except GradleakError as exc:
        print(f"gradleak: error: {_one_line(str(exc))}", file=sys.stderr)
        return BAD_INPUT
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        message = out_of_memory_message(exc)
        if message is None:
            raise
        print(f"gradleak: error: {message}", file=sys.stderr)
        return BAD_INPUT


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
