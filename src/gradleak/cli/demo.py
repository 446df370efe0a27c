"""``gradleak demo``: a bundled victim attacked and scored beside the attacker's guesses. Images by default (a
bundled face, iDLG on LeNet; Zhao et al., 2020); with ``--text`` a language-model fine-tuning update on bundled
private records, attacked by DAGER (Petrov et al., 2024)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradleak.cli.checks import check_experiment_memory
from gradleak.cli.flags import experiment_config, flags_given, parse_assignments
from gradleak.cli.printing import nothing_recovered, print_summary
from gradleak.cli.status import NOTHING_RECOVERED
from gradleak.cli.text_results import text_attack, text_report
from gradleak.defenses import build_defense
from gradleak.errors import ConfigError
from gradleak.experiment import run_experiment
from gradleak.text.metrics import text_baselines
from gradleak.text.victim import text_victim


#: demo flags that describe the image victim and its optimisation attack; a text demo refuses them
_IMAGE_ONLY = ("dataset", "indices", "batch_size", "image_size", "model", "model_arg", "model_config", "num_classes", "model_mode",
               "protocol", "local_steps", "local_lr", "local_batch_size", "leak_labels", "clients", "iterations",
               "restarts", "checkpoint")


#: demo flags of the text victim; an image demo refuses them
_TEXT_ONLY = ("text_model", "records", "pretrain_steps")


#: bundled records a text demo generates unless --allow-large (DAGER's layer-1 span fills a decoder's width,
#: 768 tokens on gpt2-small, at about a dozen records: far more says nothing, and costs memory)
MAX_DEMO_RECORDS = 256


def run(args: argparse.Namespace) -> int:
    if args.text:
        return run_text(args)
    wrong = flags_given(args, _TEXT_ONLY)
    if wrong:
        raise ConfigError(f"{wrong[0]} applies only with --text")

    if args.indices is None and args.batch_size == 1:
        args.indices = "0"  # the first bundled image (a face by default), so the demo is the same everywhere

    config = experiment_config(args)
    check_experiment_memory(config)
    result = run_experiment(config, out=args.out, progress=not args.quiet)
    print_summary(result.metrics, Path(args.out))
    return 0


def run_text(args: argparse.Namespace) -> int:
    """A fine-tuning client's update on bundled private records, attacked (DAGER by default) and scored."""
    wrong = flags_given(args, _IMAGE_ONLY)
    if wrong:
        raise ConfigError(f"{wrong[0]} does not apply to demo --text (text attacks take their settings from "
                          "--attack-arg, e.g. steps=100 for tag)")
    attack_name = args.attack or "dager"
    attack = text_attack(attack_name, parse_assignments(args.attack_arg, "--attack-arg"))
    if args.records < 1:
        raise ConfigError(f"--records must be >= 1, got {args.records}")
    if args.records > MAX_DEMO_RECORDS and not args.allow_large:
        raise ConfigError(f"--records {args.records} is above the limit of {MAX_DEMO_RECORDS} bundled records; pass "
                          "--allow-large if this is real large work")
    if args.pretrain_steps < 0:
        raise ConfigError(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}")
    defense = build_defense(args.defense, **parse_assignments(args.defense_arg, "--defense-arg")) \
        if args.defense else None
    case = text_victim(args.text_model, args.records, seed=args.seed, pretrain_steps=args.pretrain_steps,
                       defense=defense)
    recon = attack.reconstruct(case.observation, device=args.device, seed=args.seed, progress=not args.quiet)
    nothing = nothing_recovered(recon)
    if nothing:
        print(f"gradleak: {nothing}", file=sys.stderr)
        return NOTHING_RECOVERED
    tok = case.tokenizer
    text_report(Path(args.out), case.observation, recon, case.truth.inputs, tok,
                 text_baselines(case.observation, case.truth.inputs, tok, seed=args.seed), records=case.records,
                 seed=args.seed, device=args.device, title=f"{attack_name} on {args.text_model}, {args.records} "
                 "private records", text_info={"tokenizer": tok.name, "model": args.text_model})
    return 0
