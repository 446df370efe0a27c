"""Flags turned into values and the library's configs, each failure a one-line ``ConfigError`` naming the flag."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradleak.attacks import ATTACKS
from gradleak.baselines import Margins
from gradleak.cli.parser import build_parser
from gradleak.config import MAX_CONFIG_BYTES
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig
from gradleak.limits import read_json_file
from gradleak.model_spec import trust_model
from gradleak.utility import UtilityConfig


#: the words TOML/JSON configs (and the settings errors) use for these values
_CONFIG_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}


def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["iterations=300", "labels='infer'", "per_epoch=true"]`` -> dict; values are Python literals, the
    config files' ``true``/``false``/``null`` (as the errors name them), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        if raw in _CONFIG_WORDS:
            out[key] = _CONFIG_WORDS[raw]
            continue
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def parse_indices(text: str | None) -> tuple[int, ...]:
    """``--indices 0,3,7`` -> (0, 3, 7); none given -> ()."""
    if not text:
        return ()
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--indices expects comma-separated integers, got {text!r}") from None


def parse_literals(text: str, flag: str) -> tuple[Any, ...]:
    values = tuple(parse_assignments([f"v={t.strip()}"], flag)["v"] for t in text.split(",") if t.strip())
    if not values:
        raise ConfigError(f"{flag} expects comma-separated values, got {text!r}")
    return values


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def flag_of(dest: str) -> str:
    """``local_steps`` -> ``--local-steps``: errors name the flag the user typed."""
    return "--" + dest.replace("_", "-")


def flags_given(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The flags among ``dests`` the user set (their value differs from the parser's default)."""
    defaults = vars(build_parser().parse_args([args.command]))
    return [flag_of(d) for d in dests if getattr(args, d, None) != defaults.get(d)]


def attack_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--attack-arg`` settings with ``--iterations``, ``--restarts`` and ``--checkpoint`` merged in; a flag the
    named attack has no setting for is refused by its own name (DAGER has no iterations)."""
    kwargs = parse_assignments(args.attack_arg, "--attack-arg")
    name = getattr(args, "attack", None) or "idlg"
    factory = ATTACKS.get(name)
    fields = {f.name for f in dataclasses.fields(factory)} if dataclasses.is_dataclass(factory) else None
    for key in ("iterations", "restarts", "checkpoint"):
        if getattr(args, key, None) is not None:
            if fields is not None and key not in fields:
                raise ConfigError(f"{flag_of(key)} does not apply to attack {name!r} (its settings: "
                                  f"{', '.join(sorted(fields))}; give them with --attack-arg)")
            kwargs[key] = getattr(args, key)
    return kwargs


def named_model(args: argparse.Namespace) -> str:
    """``--model`` of a command that builds an image victim: a registry name, the user's own factory
    (``package.module:factory``, ``path/file.py:factory``), trusted by being named on the command line as
    ``attack --model`` trusts it, or ``hf:MODEL_TYPE`` with ``--model-config``; ``model_spec.model_spec_for``
    builds each."""
    model = str(args.model)
    if ":" in model and not model.startswith("hf:"):
        trust_model(model)
    return model


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--model-arg`` settings; for an ``hf:`` model, its ``--model-config`` with them merged in."""
    settings = parse_assignments(args.model_arg, "--model-arg")
    config_file = getattr(args, "model_config", None)
    if not str(args.model).startswith("hf:"):
        if config_file:
            raise ConfigError(f"--model-config applies to hf: models, not --model {args.model}")
        return settings
    if not config_file:
        raise ConfigError(f"--model {args.model} needs --model-config (the architecture's config.json)")
    config = read_json_file(config_file, error=ConfigError)  # depth-bounded: the file may be a stranger's
    if not isinstance(config, dict):
        raise ConfigError(f"--model-config {config_file}: a config must be a JSON object")
    return {"config": {**config, **settings}}


def experiment_config(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
        dataset=args.dataset, image_size=args.image_size, indices=parse_indices(args.indices), batch_size=args.batch_size,
        model=named_model(args), model_kwargs=model_settings(args),
        num_classes=args.num_classes,
        model_mode=args.model_mode, protocol=args.protocol, local_steps=args.local_steps, local_lr=args.local_lr,
        local_batch_size=args.local_batch_size, leak_labels=args.leak_labels, clients=args.clients,
        attack=getattr(args, "attack", None) or "idlg",
        attack_kwargs=attack_kwargs(args) if hasattr(args, "attack") else {},
        seed=args.seed, device=args.device, **defense_fields(args),
    )


def defense_fields(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "defense", None) is None:
        if getattr(args, "defense_arg", None):
            raise ConfigError("--defense-arg given without --defense")
        return {}
    return {"defense": args.defense, "defense_kwargs": parse_assignments(args.defense_arg, "--defense-arg")}


def utility_config(args: argparse.Namespace) -> UtilityConfig:
    return UtilityConfig(
        dataset=args.utility_dataset or args.dataset, image_size=args.image_size, model=named_model(args),
        model_kwargs=model_settings(args), steps=args.train_steps,
        batch_size=args.train_batch_size, lr=args.train_lr, test_fraction=args.test_fraction, seed=args.seed,
        device=args.device,
    )


def read_text(path: str, flag: str) -> str:
    """A small UTF-8 text file the user named (a config shown in a report); every failure is one line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{flag} {path}: no such file" if not file.exists() else f"{flag} {path}: not a file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{flag} {path}: above the {MAX_CONFIG_BYTES}-byte limit of a config file")
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{flag} {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None


def margins_from_args(args: argparse.Namespace) -> Margins:
    for flag, value in (("--margin-psnr", args.margin_psnr), ("--margin-ssim", args.margin_ssim)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{flag} must be a finite number >= 0, got {value}")
    return Margins(psnr_db=args.margin_psnr, ssim=args.margin_ssim)
