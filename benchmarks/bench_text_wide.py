"""Text past the width (issue 23 item 3): batch 32 and 64 of 20-token records on a GPT-2-small-shaped decoder.

The client's step is recorded with ``gradleak.record`` (``bench_text.recorded_case``: Faker records cut to 20
tokens, the last one the end-of-sequence token, a random GPT-2-small built from its ``transformers`` config, width
768, dropout off). Batch 32 holds 640 tokens (under the width) and batch 64 holds 1280 (over it: 1280 inputs in 768
dimensions, DAGER's layer-1 test cannot tell a batch token from any other). Per batch, on the same update:
``pursuit`` (the output-embedding matching pursuit,
``attacks.text.pursuit``), DAGER, and two guesses without the update's order: the attacker's bag guess
(``text_baselines``: random draws from the bag the update leaks, or from the whole vocabulary where it leaks none, and
the bag by public frequency) and the same guesses from the true bag (an oracle: what ordering the exact bag is worth).
``leaked``: the share of records whose ROUGE-1 beats the attacker's best bag guess by 0.2 (``Margins``, the verdict
the tests' ``assert_text_leaks`` uses).

Measured (2 cores shared by about six jobs, load 10-40: times are loaded; bag guess: the whole vocabulary's, as the
update leaks no bag past the width, best by public frequency):

| batch | tokens / width | attack | ROUGE-1 | ROUGE-2 | exact | secrets | leaked | bag | true bag | s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 64 | 1280 / 768 | pursuit (iters 1) | 0.315 | 0.103 | 0.00 | 0.01 | 0.36 | 0.209 / 0.000 | 0.007 / 0.000 | 193 |
| 64 | 1280 / 768 | pursuit (iters 0) | 0.334 | 0.118 | 0.00 | 0.01 | 0.45 | 0.209 / 0.000 | 0.007 / 0.000 | 56 |
| 64 | 1280 / 768 | dager | 0.038 | 0.002 | 0.00 | 0.00 | 0.00 | 0.209 / 0.000 | 0.007 / 0.000 | 673 |
| 32 | 640 / 768 | pursuit (iters 1) | 0.465 | 0.252 | 0.00 | 0.11 | 0.69 | 0.215 / 0.000 | 0.011 / 0.000 | 103 |
| 32 | 640 / 768 | pursuit (iters 0) | 0.398 | 0.169 | 0.00 | 0.05 | 0.56 | 0.215 / 0.000 | 0.011 / 0.000 | 45 |

DAGER at batch 64: its rank rule cut the layer-1 span at 458 (no true gap: every direction holds inputs), stopped
at its 600 s limit extending 128 prefixes at position 10. DAGER at
batch 32 (under the width) was not run here for time; ``bench_text --only batch`` recovers 736 tokens (batch 32 cut
to 23 tokens) exactly.

    python benchmarks/bench_text_wide.py --threads 1                 # batch 32 and 64
    python benchmarks/bench_text_wide.py --batches 64 --attacks pursuit --iters 0 1
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_text import bag_row, recorded_case, score
from gradleak.attacks import ATTACKS
from gradleak.baselines import Margins
from gradleak.text.metrics import bag_baselines, score_text, text_baselines


def oracle_bag_row(case) -> str:
    """The bag guesses drawn from the true bag (the best guess's ROUGE-1 / ROUGE-2)."""
    tok = case.tokenizer
    truth = case.truth.inputs
    bag = {int(v) for v in truth.flatten() if int(v) not in (tok.pad_id, tok.eos_id)}
    guesses = bag_baselines(truth, bag, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,))
    means = [{k: sum(v) / max(len(v), 1) for k, v in g.items()} for g in guesses.values()]
    best = max(means, key=lambda m: m.get("rouge1", 0.0))
    return f"{best['rouge1']:.3f} / {best['rouge2']:.3f}"


def attack_row(case, attack: str, baselines, **settings) -> tuple[str, str, float]:
    """ROUGE-1 | ROUGE-2 | exact | secrets | leaked share of one attack on the case, a note from its details, and
    its wall time. Leaked: the records whose ROUGE-1 beats the best bag guess by the shared margin (0.2)."""
    t1 = time.perf_counter()
    recon = ATTACKS.build(attack, **settings).reconstruct(case.observation)
    wall = time.perf_counter() - t1
    s = score(case, recon)
    tok = case.tokenizer
    judged = score_text(recon.inputs, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                        records=case.records).with_baselines(baselines, Margins().rouge1)
    leaked = sum(judged.leaked) / max(len(judged.leaked), 1)
    d = recon.details
    if attack == "dager":
        note = f"layer-1 rank {d.get('layer1_rank')}" + (f"; stopped: {d['stopped']}" if d.get("stopped") else "")
    else:
        note = f"{settings or 'defaults'}; fit per decode {[round(f, 3) for f in d.get('fit', [])]}"
    row = f"{s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | {s['secrets_recovered']:.2f} | {leaked:.2f}"
    return row, note, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--attacks", nargs="*", default=["pursuit", "dager"])
    parser.add_argument("--length", type=int, default=20, help="tokens per record (the last: end of sequence)")
    parser.add_argument("--iters", type=int, nargs="*", default=[None], help="pursuit's iters (default: its own)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| batch | tokens / width | attack | ROUGE-1 | ROUGE-2 | exact | secrets | leaked | bag guess R-1 / R-2 | "
          "true-bag guess R-1 / R-2 | attack s | note |")
    print("|" + " --- |" * 12)
    for batch in args.batches:
        t0 = time.perf_counter()
        case = recorded_case("gpt2-small", batch, dropout=0.0, max_len=args.length)
        setup = time.perf_counter() - t0
        tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
        bag, oracle = bag_row(case), oracle_bag_row(case)
        baselines = text_baselines(case.observation, case.truth.inputs, case.tokenizer)
        runs = [(a, {} if a != "pursuit" or it is None else {"iters": it}) for a in args.attacks
                for it in (args.iters if a == "pursuit" else [None])]
        for attack, settings in runs:
            row, note, wall = attack_row(case, attack, baselines, **settings)
            print(f"| {batch} | {tokens} / 768 | {attack} | {row} | {bag} | {oracle} | {wall:.1f} | {note} "
                  f"(setup {setup:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()
