"""``gradleak fl-audit`` (alias ``audit``): run N Flower clients in one process, record every update the server
sees (only aggregates with secure aggregation, Flower's SecAgg+), attack each and write a per-round, per-client
report."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from gradleak.cli.flags import named_model
from gradleak.cli.printing import print_written
from gradleak.config import check_attack_settings
from gradleak.devices import check_device
from gradleak.fl.audit import audit
from gradleak.fl.simulation import AuditSettings, FederationConfig, load_audit_config, run_federation
from gradleak.model_spec import trust_model
from gradleak.outputs import check_out_dir


def run(args: argparse.Namespace) -> int:
    fed, settings = load_audit_config(args.config) if args.config else (FederationConfig(), AuditSettings())

    trust_model(*args.trust_model)
    if args.model:
        named_model(args)  # a factory named on the command line: the user trusts it
    fed_over = {k: v for k, v in {"num_clients": args.clients, "rounds": args.rounds, "protocol": args.protocol,
                                  "dataset": args.dataset, "model": args.model,
                                  "filter_threshold": args.filter_threshold,
                                  "filter_action": args.filter_action}.items() if v is not None}
    if args.secure_aggregation:
        fed_over["secure_aggregation"] = True
    fed = dataclasses.replace(fed, **fed_over)
    over: dict[str, Any] = {k: v for k, v in {"attack": args.attack, "out": args.out,
                                              "aggregate_as": args.aggregate_as}.items() if v is not None}
    if args.iterations is not None:
        over["attack_kwargs"] = {**settings.attack_kwargs, "iterations": args.iterations}
    settings = dataclasses.replace(settings, **over)

    # every audit setting is checked before the federation runs (minutes of Flower for nothing otherwise)
    check_attack_settings(settings.attack, settings.attack_kwargs, "[audit] attack_kwargs")
    check_device(settings.device, "[audit] device")
    check_out_dir(settings.out, "[audit] out")
    print(f"federation: {fed.num_clients} {fed.protocol} clients on {fed.dataset}, {fed.rounds} rounds, "
          f"secure aggregation {'on (SecAgg+)' if fed.secure_aggregation else 'off'}")
    federation = run_federation(fed, verbose=not args.quiet and args.verbose)
    for r in federation.filter_rounds:
        shown = ", ".join(f"node {node}: {score:.1f} dB {action}" for node, (score, action) in r.decisions.items())
        print(f"round {r.round} filter (threshold {fed.filter_threshold:g} dB): {shown}")
    report = audit(federation.updates, federation.target, settings.attack, settings.attack_kwargs, truth=federation.truth,
                   public=federation.public_images(), aggregate_as=settings.aggregate_as,
                   leak_threshold_db=settings.leak_threshold_db,
                   rounds=settings.rounds or None, device=settings.device, seed=settings.seed, out=settings.out,
                   progress=False)
    for row in report.rows:
        best = "n/a" if row["psnr_best"] is None else f"{row['psnr_best']:.1f} dB"
        guess = "" if row.get("best_baseline_psnr") is None else f" (best guess {row['best_baseline_psnr']:.1f} dB)"
        verdict = "" if row["leaked"] is None else (f": leaked {row['leaked']:.0%} of its samples" if row["leaked"]
                                                     else ": no leak")
        print(f"round {row['round']} {row['source']}: best PSNR {best}{guess}{verdict}"
              f"{'  error: ' + row['error'] if row['error'] else ''}")
    print_written(Path(settings.out), ("report.html", "audit.csv"))
    return 0
