"""``gradleak report``: one self-contained HTML file (every image embedded) from a sweep table, a run folder
(``metrics.json``) or an audit folder (``audit.json``)."""

from __future__ import annotations

import argparse

from gradleak.cli.flags import read_text
from gradleak.report.html import write_html


def run(args: argparse.Namespace) -> int:
    config = read_text(args.config, "--config") if args.config else None
    print(f"report: {write_html(args.source, args.out, config=config)}")
    return 0
