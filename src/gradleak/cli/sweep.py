"""``gradleak sweep``: expand a config's grid and run each experiment as a Ray task (local Ray by default, an
existing cluster by ``--address``); results stream into one table, done experiments are skipped, failures are
recorded and the rest go on."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from gradleak.cli.flags import read_text
from gradleak.cli.status import SOME_FAILED
from gradleak.report.html import write_html
from gradleak.sweep import load_sweep_config, run_sweep


def run(args: argparse.Namespace) -> int:
    config = load_sweep_config(args.config, max_experiments=args.max_experiments)
    if args.out:
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, out=args.out))

    def show(row: dict[str, Any]) -> None:
        if not args.quiet:
            psnr = row.get("psnr")
            print(f"  {row['key']} {row['status']}: " + (f"{psnr:.2f} dB" if psnr is not None else row["error"]))

    summary = run_sweep(config, address=args.address, retry_errors=args.retry_errors or None, on_result=show,
                        force=args.force)
    dupes = f" ({summary.duplicates} repeated grid points run once)" if summary.duplicates else ""
    print(f"sweep: {summary.total} experiments{dupes}, {summary.skipped} already done, {summary.ran} run "
          f"({summary.failed} failed) in {summary.wall_time_s:.1f} s; table: {summary.table}")
    if not args.no_report and summary.table.exists():
        print(f"report: {write_html(summary.table, config=read_text(args.config, 'sweep config'))}")
    if summary.errors:
        print(f"gradleak: error: {summary.errors} of {summary.total} experiments failed (see the table's error "
              "column; --retry-errors runs them again)", file=sys.stderr)
        return SOME_FAILED
    return 0
