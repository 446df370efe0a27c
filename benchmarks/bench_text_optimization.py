"""TAG and LAMP against DAGER on the same BERT classifier cases, batch 1 and 4.

Victim: ``text_victim("bert-tiny", B, seed=s)``: a randomly initialised BERT (2 layers, width 64) classifying
bundled Faker records (60 BPE tokens or fewer each) by locale, one FedSGD gradient. The attacker knows the sequence
lengths (LAMP's ``know_padding`` setting, passed as ``obs.info["lengths"]``) and infers the labels from the
classifier bias. Per case and attack: ROUGE-1/2 (``rouge-score`` on the decoded text), exact sequences, secrets
recovered verbatim, wall time; beside two baselines with the true lengths: random vocabulary tokens and random
tokens from the batch's own bag (what the embedding gradient gives for free).

Reference figures: LAMP (Balunovic et al. 2022, NeurIPS), Table 1 (batch 1) and Table 2 (batch sizes 1-4) report
TAG and LAMP ROUGE-1/2 on BERT-base for CoLA, SST-2 and Rotten Tomatoes; DAGER (Petrov et al. 2024, Table 1)
reproduces them beside its own. Those numbers are NOT printed here: the stored copies reachable from this machine
(eth-sri/lamp and insait-institute/dager-gradient-inversion READMEs: commands only; the paper's ar5iv and markdown
pages: only their opening text came back) did not contain the tables, and they are not copied from memory.

DAGER here is the same attack as on decoders (``dager``), on the same victim cases: per position, the token bag
ranked by distance to the span of layer 1's query gradient. Batch 1 is exact; at batch 4 the batch holds about 170
tokens, more than bert-tiny's width 64, so the layer-1 span is the whole space (DAGER's own limit) and nothing is
recovered. The extra row ``dager, bert-mini`` (width 256, batch > 1 of the same records' seeds) is inside the width
limit: each position's tokens are ranked, then records are assembled by the local search on the layer-2 span
distance (``DAGER._assemble``). Measured (``--batches 2 4 --cases 3 --attacks dager``): batch 2 exact in cases 0-2
(8-10 s each); batch 4 exact in cases 0 and 2 (145 s, 54 s), case 1 stuck at ROUGE-1 0.436 (69 s).

Measured (2 shared CPU cores, seed 0 of each attack; mean of victim cases 0 and 1), ROUGE-1 / ROUGE-2 / tokens in
place: batch 1 (300 steps each): random bag tokens 0.118 / 0 / 1.9 %, TAG 0.140 / 0 / 10.5 %, LAMP 0.140 / 0.021 /
27.6 %, DAGER 1.000 / 1.000 / 100 % (0.1 s); batch 4 (150 steps each): random bag tokens 0.033 / 0 / 1.7 %, TAG
0.072 / 0 / 5.8 %, LAMP 0.122 / 0 / 20.7 %, DAGER 0.064 / 0 / 3.6 % (171 and 165 tokens > width 64). LAMP with the
paper's budget, batch 1 case 0: 0.280 / 0.042 / 13.6 % (170 s). ``--space free`` (the papers' unconstrained
embeddings), batch 1 case 0: TAG 0.042 / 0 / 1.7 %, LAMP 0.218 / 0 / 3.4 %: random-level in position. Secrets
recovered verbatim: all of them by DAGER at batch 1, none by TAG or LAMP.

    python benchmarks/bench_text_optimization.py --batches 1                           # batch 1 rows above
    python benchmarks/bench_text_optimization.py --batches 4 --tag-steps 150 --lamp-steps 150   # batch 4 rows
    python benchmarks/bench_text_optimization.py --batches 1 --cases 1 --attacks lamp --lamp-steps 2000 \
        --lamp-init 500 --lamp-candidates 200 --lamp-every 75         # LAMP with the paper's budget

``--only noise-dp`` (issue 23 item 7): the subspace attack's continuous refinement (``search="continuous"``, after
TIGER, Kalikman et al. 2026) beside its ranking search alone (``search="greedy"``), DAGER with default settings and
the leaked bag's best guess, on a GPT-2-small-shaped decoder (``text_victim("gpt2-small", B)``: width 768, random
init, causal LM on bundled records) at batch 1 and 4, under Gaussian noise 1e-6/1e-5/1e-4 (absolute std per
entry), fp16 and int8 rounding, and Opacus DP-SGD (clip 1.0, sigma 0.1/0.5/1.0; epsilon for that one step at
sample rate B/256, delta 1e-5). Bag columns: the attacker's own guesses (``text_baselines``: random draws from the
bag the update leaks, or from the vocabulary where it leaks none, and the bag by public frequency), and random
draws from the batch's true bag (which the attacker lacks where the update leaks no bag).

    python benchmarks/bench_text_optimization.py --only noise-dp --batches 1 4 --threads 1

Measured (seed 0; two CPU cores shared by six jobs, so the times are loaded ones), ROUGE-1 / ROUGE-2 / exact:

- batch 1 (59 tokens): Gaussian 1e-6, 1e-5 and fp16: DAGER 1.000 / 1.000 / 1.00 (40-62 s); subspace greedy
  0.962 / 0.960 / 0.00 (it runs on past the record's end); continuous 1.000 / 1.000 / 1.00 (150-180 s). Gaussian
  1e-4: DAGER 0 (the span is the whole space), greedy and continuous 0.962 (no jump at the end under that noise).
  int8: DAGER 0 (whole space), greedy, continuous and greedy + ends 0.962 / 0.960. Bag: the attacker's best guess
  0.286 / 0 (0.089 / 0 at int8 and 1e-4, where the bag is not readable), the true bag's random draws 0.185 / 0.
- batch 4 (166 tokens): Gaussian 1e-5: DAGER 0 (whole space), greedy 0.779 / 0.747 / 0.00, continuous and
  greedy + ends 0.798 / 0.766 / 0.25 (374 s and 22 s); Gaussian 1e-4: greedy and continuous 0.521 / 0.461; int8:
  0.744 / 0.698 for both; the attacker's bag guess 0.163 / 0. The relaxed optimum never fit the exact objective
  better than the greedy records (each record kept its greedy tokens): the continuous search adds the end cut only.
- DP-SGD (clip 1.0; epsilon of the one step at sample rate B/256, delta 1e-5): batch 1, sigma 0.1 (epsilon 77),
  0.5 (3.62) and 1.0 (0.777): 0 / 0 for DAGER (whole space), greedy, continuous and greedy + ends; batch 4, sigma
  0.1 (epsilon 82): 0 for all four (sigma 0.5 and 1.0 at batch 4 not run: time).

TAG and LAMP on the bert-tiny update beside the leaked bag, by the shared rule (``--defense``; batch 1, case 0,
150 steps each): Gaussian 1e-4: TAG 0.103 / 0, LAMP 0.000 / 0, DAGER 0 (60 tokens at width 64), the attacker's
bag guess 0.089 / 0: nothing leaked; DP-SGD sigma 0.1: TAG 0.085 / 0, LAMP 0 / 0, DAGER 0: nothing leaked. With no
defense (rows above) neither beats the bag by the 0.2 margin either. Where DAGER fails (noise, DP, past the width)
TAG and LAMP do not take over on these models.

``--defense LABEL`` (one of the noise-dp labels) runs the TAG/LAMP/DAGER table on the BERT update under that
defense; every attack row's note says how many records leaked by the shared rule (ROUGE-1 or ROUGE-2 past the
leaked bag's best guess by 0.2, ``Margins``), issue 23 item 5.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradleak.attacks import ATTACKS
from gradleak.baselines import Margins
from gradleak.defenses import build_defense
from gradleak.text.metrics import bag_baselines, score_text, text_baselines
from gradleak.text.victim import text_victim

PUBLISHED = ("Published figures: NOT FOUND from this machine (the stored copies of the papers and of "
             "eth-sri/lamp and insait-institute/dager-gradient-inversion did not include the tables), so none are "
             "printed. Where they are: LAMP, Balunovic et al. 2022, Table 1 (B=1) and Table 2 (B=1..4), TAG and "
             "LAMP ROUGE-1/2 on BERT-base (CoLA, SST-2, Rotten Tomatoes); DAGER, Petrov et al. 2024, Table 1.")


def _means(case, ids: torch.Tensor) -> dict:
    tok = case.tokenizer
    return score_text(ids, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,),
                      records=case.records).means()


def _baseline(case, bag: bool, draws: int = 5) -> dict:
    truth, tok = case.truth.inputs, case.tokenizer
    pool = torch.tensor(sorted(set(truth.flatten().tolist()) - {tok.pad_id, tok.eos_id})) if bag else \
        torch.arange(2, tok.vocab_size)
    gen = torch.Generator().manual_seed(0)
    keep = (truth == tok.pad_id) | (truth == tok.eos_id)
    scores = [_means(case, torch.where(keep, truth, pool[torch.randint(0, len(pool), truth.shape, generator=gen)]))
              for _ in range(draws)]
    return {k: (None if scores[0][k] is None else sum(s[k] for s in scores) / draws) for k in scores[0]}


def _defense(label: str | None, batch: int):
    """The ``NOISE_DP`` defense named ``label`` (DP-SGD with its one-step schedule at sample rate B/256)."""
    if label is None:
        return None
    name, kwargs = next((n, k) for lab, n, k in NOISE_DP if lab == label)
    if name == "dpsgd":
        kwargs = {**kwargs, "dataset_size": 256, "batch_size": batch, "steps": 1}
    return build_defense(name, **kwargs)


def _verdict(case, ids: torch.Tensor) -> str:
    """Records leaked by the shared rule: ROUGE-1 or ROUGE-2 past the best guess from the leaked bag
    (``text_baselines``) by ``Margins().rouge1`` (0.2)."""
    tok = case.tokenizer
    scores = score_text(ids, case.truth.inputs, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,))
    judged = scores.with_baselines(text_baselines(case.observation, case.truth.inputs, tok), Margins().rouge1)
    best = max(judged.baseline_means().values(), key=lambda m: m["rouge1"])
    return (f"leaked {sum(judged.leaked)}/{len(judged.leaked)} (bag's best {best['rouge1']:.3f} / "
            f"{best['rouge2']:.3f}, margin {Margins().rouge1})")


def _row(batch: int, seed: int, label: str, s: dict | None, wall: float, note: str = "") -> dict | None:
    if s is None:
        print(f"| {batch} | {seed} | {label} | - | - | - | - | - | {wall:.1f} | {note} |", flush=True)
        return None
    secrets = "-" if s["secrets_recovered"] is None else f"{s['secrets_recovered']:.2f}"
    print(f"| {batch} | {seed} | {label} | {s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | "
          f"{s['token_accuracy']:.3f} | {secrets} | {wall:.1f} | {note} |", flush=True)
    return s


#: the update defenses of the noise-dp group: (label, registry name, settings)
NOISE_DP = (
    ("gaussian 1e-6", "gaussian", {"std": 1e-6}),
    ("gaussian 1e-5", "gaussian", {"std": 1e-5}),
    ("gaussian 1e-4", "gaussian", {"std": 1e-4}),
    ("fp16", "quantization", {"kind": "fp16"}),
    ("int8", "quantization", {"kind": "int8"}),
    ("dp-sgd sigma 0.1", "dpsgd", {"noise_multiplier": 0.1, "max_grad_norm": 1.0}),
    ("dp-sgd sigma 0.5", "dpsgd", {"noise_multiplier": 0.5, "max_grad_norm": 1.0}),
    ("dp-sgd sigma 1.0", "dpsgd", {"noise_multiplier": 1.0, "max_grad_norm": 1.0}),
)

#: the attacks of the noise-dp group: (row label, registry name, settings)
NOISE_DP_ATTACKS = (
    ("dager (default)", "dager", {}),
    ("subspace greedy", "subspace", {"search": "greedy"}),
    ("subspace continuous", "subspace", {"search": "continuous"}),
    ("subspace greedy + ends", "subspace", {"search": "continuous", "steps": 1, "assemble_sweeps": 0}),
)


def _best_guess(guesses: dict) -> tuple[float, float]:
    means = [{k: sum(v) / max(len(v), 1) for k, v in g.items()} for g in guesses.values()]
    best = max(means, key=lambda m: m["rouge1"])
    return best["rouge1"], best["rouge2"]


def noise_dp(batches: list[int], only: list[str] | None, rows: list[str] | None = None) -> None:
    """Text attacks on a GPT-2-small-shaped decoder's noised, rounded or DP-SGD update (see the docstring)."""
    print("| batch | defense | epsilon | attack | ROUGE-1 | ROUGE-2 | exact | secrets | attack s | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in batches:
        for label, name, kwargs in NOISE_DP:
            if only and label not in only:
                continue
            if name == "dpsgd":  # epsilon of this one step at sample rate B/256 (the bench's schedule)
                kwargs = {**kwargs, "dataset_size": 256, "batch_size": batch, "steps": 1}
            t0 = time.perf_counter()
            case = text_victim("gpt2-small", batch, seed=0, defense=build_defense(name, **kwargs))
            setup = time.perf_counter() - t0
            privacy = case.observation.info.get("privacy")
            eps = "-" if privacy is None else f"{float(privacy['epsilon']):.3g}"
            tok, truth = case.tokenizer, case.truth.inputs
            tokens = int(((truth != tok.pad_id) & (truth != tok.eos_id)).sum())
            own = _best_guess(text_baselines(case.observation, truth, tok))
            bag = set(truth.flatten().tolist()) - {tok.pad_id, tok.eos_id}
            true_bag = bag_baselines(truth, bag, tok.decode, pad_id=tok.pad_id, ignore_ids=(tok.eos_id,))
            strong = _best_guess({"random from the true bag": true_bag["random from bag"]})
            print(f"| {batch} | {label} | {eps} | attacker's bag guess | {own[0]:.3f} | {own[1]:.3f} | 0 | - | - | "
                  f"{tokens} tokens; setup {setup:.1f} s |", flush=True)
            print(f"| {batch} | {label} | {eps} | random from the true bag | {strong[0]:.3f} | {strong[1]:.3f} | 0 | - "
                  f"| - | the true bag: no attacker has it |", flush=True)
            for row, attack, settings in NOISE_DP_ATTACKS:
                if rows and row not in rows:
                    continue
                t1 = time.perf_counter()
                note = ""
                try:
                    recon = ATTACKS.build(attack, **settings).reconstruct(case.observation)
                    s = _means(case, recon.inputs)
                    cont = recon.details.get("continuous")
                    if cont:
                        note = f"kept greedy {cont['kept_greedy']}, sweep changes {cont['sweep_changes']}"
                    if recon.details.get("stopped"):
                        note = f"stopped: {str(recon.details['stopped'])[:60]}"
                    secrets = "-" if s["secrets_recovered"] is None else f"{s['secrets_recovered']:.2f}"
                    cells = f"{s['rouge1']:.3f} | {s['rouge2']:.3f} | {s['exact']:.2f} | {secrets}"
                except Exception as exc:  # a failing attack is a row (nothing recovered), not the end of the run
                    cells, note = "0 | 0 | 0 | 0", f"{type(exc).__name__}: {str(exc)[:70]}"
                print(f"| {batch} | {label} | {eps} | {row} | {cells} | {time.perf_counter() - t1:.1f} | {note} |",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("noise-dp",), default=None,
                        help="noise-dp: the subspace attacks and DAGER under noise, rounding and DP-SGD (GPT-2)")
    parser.add_argument("--defenses", nargs="*", default=None, help="noise-dp: only these defense labels")
    parser.add_argument("--rows", nargs="*", default=None, help="noise-dp: only these attack rows (labels)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cases", type=int, default=2, help="victim seeds 0..cases-1 per batch size")
    parser.add_argument("--tag-steps", type=int, default=300, help="paper: 2500")
    parser.add_argument("--lamp-steps", type=int, default=300, help="paper: 2000")
    parser.add_argument("--lamp-init", type=int, default=100, help="initial candidates (paper: 500)")
    parser.add_argument("--lamp-candidates", type=int, default=64, help="discrete moves per sequence (paper: 200)")
    parser.add_argument("--lamp-every", type=int, default=30, help="steps between discrete steps (paper: 75)")
    parser.add_argument("--space", choices=("bag", "free"), default="bag")
    parser.add_argument("--attacks", nargs="+", default=["tag", "lamp", "dager"], choices=["tag", "lamp", "dager"])
    parser.add_argument("--no-wide-dager", dest="wide_dager", action="store_false",
                        help="skip the DAGER row on bert-mini (width 256) at batch > 1")
    parser.add_argument("--defense", default=None, choices=[label for label, _, _ in NOISE_DP],
                        help="TAG/LAMP/DAGER group: the client's update under this defense (issue 23 item 5)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only == "noise-dp":
        noise_dp(args.batches, args.defenses, args.rows)
        return
    print(PUBLISHED)
    print(f"TAG: {args.tag_steps} steps; LAMP_Cos: {args.lamp_steps} steps, {args.lamp_init} initial candidates, "
          f"{args.lamp_candidates} moves every {args.lamp_every} steps; space={args.space}; bert-tiny (random init)")
    print("| batch | case | attack | ROUGE-1 | ROUGE-2 | exact | token acc | secrets | attack s | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    attacks = {
        "tag": {"steps": args.tag_steps, "space": args.space},
        "lamp": {"steps": args.lamp_steps, "init_candidates": args.lamp_init, "candidates": args.lamp_candidates,
                 "swap_every": args.lamp_every, "space": args.space},
        "dager": {},
    }
    for batch in args.batches:
        totals: dict[str, list[dict]] = {}
        for seed in range(args.cases):
            case = text_victim("bert-tiny", batch, seed=seed, defense=_defense(args.defense, batch))
            ids = case.truth.inputs
            lengths = (ids != case.tokenizer.pad_id).sum(1).tolist()
            obs = case.observation.with_update(case.observation.update, lengths=lengths)
            tokens = int((ids != case.tokenizer.pad_id).sum())
            for name in ("random vocabulary tokens", "random bag tokens"):
                s = _row(batch, seed, name, _baseline(case, bag=name.endswith("bag tokens")), 0.0)
                totals.setdefault(name, []).append(s)
            for name, kwargs in attacks.items():
                if name not in args.attacks:
                    continue
                t0 = time.perf_counter()
                try:
                    recon = ATTACKS.build(name, **kwargs).reconstruct(obs, seed=0)
                    s = _means(case, recon.inputs)
                    note = (f"{tokens} tokens / width 64" + (" (past the width: span is everything)"
                                                              if tokens >= 64 else "")) if name == "dager" else ""
                    if name != "dager" and recon.labels is not None:
                        right = sorted(recon.labels.tolist()) == sorted(case.truth.labels.tolist())
                        note = f"labels {'right' if right else 'wrong'}"
                    note = f"{note}; {_verdict(case, recon.inputs)}"
                except Exception as exc:  # a failing attack is a row of the table, not the end of the benchmark
                    s, note = None, f"{type(exc).__name__}: {str(exc)[:70]}"
                s = _row(batch, seed, name, s, time.perf_counter() - t0, note)
                if s is not None:
                    totals.setdefault(name, []).append(s)
        if "dager" in args.attacks and batch > 1 and args.wide_dager:
            for seed in range(args.cases):
                t0 = time.perf_counter()
                case = text_victim("bert-mini", batch, seed=seed)
                tokens = int((case.truth.inputs != case.tokenizer.pad_id).sum())
                recon = ATTACKS.build("dager").reconstruct(case.observation)
                d = recon.details
                _row(batch, seed, "dager, bert-mini", _means(case, recon.inputs), time.perf_counter() - t0,
                     f"{tokens} tokens / width 256; assembly {d.get('assembly_sweeps')} sweeps, layer-2 distance "
                     f"{d.get('assembly_start', float('nan')):.3g} -> {d.get('assembly_cost', float('nan')):.3g}")
        for name, rows in totals.items():
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("rouge1", "rouge2", "exact", "token_accuracy")}
            print(f"| {batch} | mean of {len(rows)} | {name} | {mean['rouge1']:.3f} | {mean['rouge2']:.3f} | "
                  f"{mean['exact']:.2f} | {mean['token_accuracy']:.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()
