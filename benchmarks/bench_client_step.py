"""Fingerprints of every client-step path, to show a refactor keeps the numbers: the shared update of ``simulate``
(FedSGD, FedAvg, DP-SGD, DP-SGD under FedAvg, Gaussian noise), the malicious server's aggregate, a Flower DP
client's new weights and epsilon, the text victim under DP-SGD (GPT-2, BERT), and the text utility figures
(none / dpsgd / gaussian on bert-tiny and gpt2-tiny, 6 steps). Each line prints the sum and the absolute sum of the
update (or weights) in float64, or the measured value and epsilon.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_client_step.py`` (about 2 minutes on 2 cores). Run it on two
checkouts and diff the outputs.
"""

from __future__ import annotations

import warnings

import torch

from gradleak.data import load_dataset
from gradleak.defenses import build_defense
from gradleak.fl.clients import ClientSetup, client_update
from gradleak.malicious import simulate_aggregate
from gradleak.observation import LocalTraining, ModelSpec
from gradleak.text.victim import text_victim
from gradleak.utility import text_defense_cost
from gradleak.victim import simulate


def digest(tensors: dict[str, torch.Tensor]) -> str:
    total = sum(float(v.double().sum()) for v in tensors.values())
    size = sum(float(v.double().abs().sum()) for v in tensors.values())
    return f"{total:.10e} {size:.10e}"


def main() -> None:
    warnings.filterwarnings("ignore")
    ds = load_dataset("digits", size=16)
    x, y = ds.batch(list(range(4)))
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})
    cases = [("fedsgd", {}), ("fedavg", dict(protocol="fedavg", local_training=LocalTraining(3, 0.1, 2))),
             ("dpsgd", dict(defense=build_defense("dpsgd", noise_multiplier=0.5))),
             ("dpsgd-fedavg", dict(protocol="fedavg", local_training=LocalTraining(2, 0.1, 2),
                                   defense=build_defense("dpsgd", noise_multiplier=0.5))),
             ("gaussian", dict(defense=build_defense("gaussian", std=0.01)))]
    for name, kwargs in cases:
        obs, _ = simulate(spec, x, y, num_classes=10, mean=ds.mean, std=ds.std, seed=3, **kwargs)
        print("simulate", name, digest(obs.update))
    obs, _ = simulate_aggregate(spec, [(x[:2], y[:2]), (x[2:], y[2:])], num_classes=10, mean=ds.mean, std=ds.std)
    print("aggregate", digest(obs.update))
    setup = ClientSetup("digits", 16, None, spec, num_clients=4, examples_per_round=2, protocol="dp")
    torch.manual_seed(0)
    new, metrics = client_update(setup, spec.build().state_dict(), 1, 1, 0.1, 3, 1)
    print("flower dp", digest(new), metrics["dp-epsilon"])
    for model in ("gpt2-tiny", "bert-tiny"):
        case = text_victim(model, 2, seed=0, defense=build_defense("dpsgd", noise_multiplier=0.5))
        print("text_victim dp", model, digest(case.observation.update))
    for model in ("bert-tiny", "gpt2-tiny"):
        for defense in (None, build_defense("dpsgd", noise_multiplier=1.0), build_defense("gaussian", std=0.01)):
            r = text_defense_cost(defense, model=model, steps=6, batch_size=8, train_records=64, test_records=32,
                                  seq_len=32)
            print("text utility", model, r.defense, repr(r.value), r.epsilon)


if __name__ == "__main__":
    main()
