"""A real Flower federation (run_simulation, Ray backend) with FilteringStrategy in front of FedAvg.

One client with a single private image beside three clients with 32 each (LeNet, digits, FedAvg: 8 local SGD steps
of mini-batch 8 at lr 0.1, 4 rounds, so the federation learns well above chance). With the filter on, the
one-image client's update is dropped every round and the three others kept. iDLG (100 its) on what the server
aggregated is scored beside the blind guess an attacker makes without any update (the digits' mean image, matched
to the same private images): "recovers nothing" means not better than that guess. The issue's fixed line (nothing
above 15 dB, best of the batch) is printed too: on digits the blind guess itself scores above 15 dB on its best
match out of 96, so that line cannot be met by any attack output near the mean (see the issue 14 note).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("flwr")
ray = pytest.importorskip("ray")
#: one pytest-xdist group for every file that starts a local Ray: two Ray clusters never start at once
pytestmark = pytest.mark.xdist_group("ray")

import torch  # noqa: E402

from gradleak.fl import audit  # noqa: E402
from gradleak.fl.recording import AGGREGATE, RecordedUpdate  # noqa: E402
from gradleak.observation import GroundTruth  # noqa: E402
from gradleak.metrics import score  # noqa: E402
from gradleak.fl.simulation import FederationConfig, run_federation  # noqa: E402
from gradleak.victim import normalize  # noqa: E402

BATCHES = (1, 32, 32, 32)
ROUNDS = 4


@pytest.fixture(scope="module", autouse=True)
def ray_session(tmp_path_factory):
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr-home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def _federate(filtered: bool):
    config = FederationConfig(dataset="digits", num_clients=len(BATCHES), rounds=ROUNDS, protocol="fedavg",
                              examples_per_round=32, local_steps=8, local_batch_size=8, local_lr=0.1,
                              num_classes=10, examples_by_client=BATCHES,
                              filter_threshold=15.0 if filtered else None)
    run = run_federation(config)
    # test accuracy on the images no client trained on
    ds = run.setup.load()
    used = {i for p in range(len(BATCHES)) for r in range(1, ROUNDS + 1) for i in run.setup.batch_indices(p, r)}
    test = [i for i in range(len(ds)) if i not in used]
    x, y = ds.batch(test)
    model = run.setup.model_spec.build()
    model.load_state_dict(run.final_weights)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(normalize(x, ds.mean, ds.std)).argmax(1) == y).float().mean()) * 100
    return run, accuracy


@pytest.mark.slow
def test_filter_drops_batch_one_clients_and_keeps_accuracy(tmp_path):
    plain, plain_acc = _federate(filtered=False)
    run, acc = _federate(filtered=True)
    # every round, exactly the batch-1 client is dropped and the three batch-32 clients are kept
    assert len(run.filter_rounds) == ROUNDS and not plain.filter_rounds
    for report in run.filter_rounds:
        assert report.count("drop") == 1 and report.count("keep") == 3, report.decisions
    kept = {u.metrics["partition-id"] for u in run.updates}
    assert kept == {1, 2, 3} and len(run.updates) == 3 * ROUNDS
    assert len(plain.updates) == 4 * ROUNDS

    # what the server aggregated each round: FedAvg's example-weighted mean of the kept clients' weights
    aggregates = []
    for r in range(1, ROUNDS + 1):
        ups = [u for u in run.updates if u.round == r]
        total = sum(int(u.metrics["num-examples"]) for u in ups)
        mean = {k: sum(u.returned[k].float() * int(u.metrics["num-examples"]) for u in ups) / total
                for k in ups[0].returned}
        aggregates.append(RecordedUpdate(r, AGGREGATE, ups[0].sent, mean, dict(ups[0].config),
                                         {"num-examples": total}, num_clients=len(ups)))
    ds = run.setup.load()

    def truth(update):
        return GroundTruth(*ds.batch([i for p in (1, 2, 3) for i in run.setup.batch_indices(p, update.round)]))

    # the blind guess: the dataset's mean image for every private image, matched and scored the same way
    mean_image = ds.batch(list(range(len(ds))))[0].mean(0, keepdim=True)

    def blind(t: GroundTruth) -> float:
        return max(score(mean_image.expand_as(t.inputs).clone(), None, t).psnr)

    blind_best = max(blind(truth(update)) for update in aggregates)

    report = audit(aggregates, run.target, "idlg", {"iterations": 100}, truth=truth, out=tmp_path / "f",
                   aggregate_as="batch")
    best = report.best_psnr(aggregate=True)
    # without the filter the batch-1 client's update (round 1) is what leaks
    first = [u for u in plain.updates if u.round == 1 and u.metrics["partition-id"] == 0]
    leak = audit(first, plain.target, "idlg", {"iterations": 100}, truth=plain.truth, out=tmp_path / "p")
    blind_one = blind(plain.truth(first[0]))
    scores = [d for rep in run.filter_rounds for d in rep.decisions.values()]
    print(f"filter decisions {scores}; aggregate best PSNR {best:.2f} dB (15 dB line: "
          f"{'met' if best <= 15 else 'not met'}), blind guess best {blind_best:.2f} dB, unfiltered one-image "
          f"client {leak.best_psnr():.2f} dB (blind guess {blind_one:.2f} dB), accuracy filtered {acc:.2f} % vs unfiltered {plain_acc:.2f} %")
    assert best is not None and leak.best_psnr() is not None
    assert leak.best_psnr() > 15.0 and leak.best_psnr() > blind_one + 1.0  # unfiltered, the one image leaks
    assert best <= blind_best + 0.5, report.rows  # filtered, the aggregate gives nothing beyond the blind guess
    assert plain_acc > 25.0  # the federation learns (chance is 10 %), so the accuracy comparison means something
    assert abs(acc - plain_acc) <= 2.0


def test_federation_config_checks_the_filter_settings() -> None:
    from gradleak.errors import ConfigError

    with pytest.raises(ConfigError, match="filter_action"):
        FederationConfig(filter_threshold=15.0, filter_action="delete")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="secure aggregation"):
        FederationConfig(filter_threshold=15.0, secure_aggregation=True)
    with pytest.raises(ConfigError, match="examples_by_client"):
        FederationConfig(num_clients=2, examples_by_client=(1, 32, 32))
    with pytest.raises(ConfigError, match="filter_threshold"):
        FederationConfig(filter_threshold=float("nan"))
