"""``gradleak tradeoff``: leakage against utility. Attack a defended victim at each strength of the defense, train
with it, and write a table (strength, PSNR, SSIM, label accuracy, test accuracy, epsilon) and a plot."""

from __future__ import annotations

import argparse

from gradleak.cli.checks import check_experiment_memory
from gradleak.cli.flags import experiment_config, parse_assignments, parse_indices, parse_literals, utility_config
from gradleak.tradeoff import TradeoffConfig, markdown_table, run_tradeoff, write_tradeoff


def run(args: argparse.Namespace) -> int:
    base = experiment_config(args)
    check_experiment_memory(base)
    config = TradeoffConfig(
        defense=args.defense, strengths=parse_literals(args.values, "--values"), param=args.param,
        defense_kwargs=parse_assignments(args.defense_arg, "--defense-arg"), experiment=base,
        images=parse_indices(args.images), utility=utility_config(args),
    )
    rows = run_tradeoff(config, progress=None if args.quiet else lambda r: print("  " + " | ".join(r.cells()), flush=True))
    paths = write_tradeoff(rows, config, args.out)
    print(markdown_table(rows, config.strength_param))
    print(f"table: {paths['csv']}, {paths['md']}; plot: {paths['png']}")
    return 0
