"""A real Flower federation (run_simulation, Ray backend) recorded by RecordingStrategy and audited.

4 FedSGD clients at batch size 1 on LeNet, 2 rounds: every client's update leaks its image beside the best guess
(gray, the mean image, the closest public digit). With Flower's SecAgg+ on, the aggregate is measured beside its
positive control, an undefended client holding the same 4 images (see that test for what it shows and does not).
"""

from __future__ import annotations

import csv
import os

import pytest
import torch

pytest.importorskip("flwr")
ray = pytest.importorskip("ray")
#: one pytest-xdist group for every file that starts a local Ray: two Ray clusters never start at once
pytestmark = pytest.mark.xdist_group("ray")

from gradleak.cli import main  # noqa: E402
from gradleak.fl import FederationConfig, audit, run_federation  # noqa: E402

ATTACK = {"iterations": 200}


@pytest.fixture(scope="module", autouse=True)
def ray_session(tmp_path_factory):
    """One Ray session for both federations (Flower's Ray backend uses it when it is up)."""
    import torch

    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr-home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the attacks run beside Ray's workers on 2 cores
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def _public(run) -> torch.Tensor:
    """The attacker's auxiliary images: the dataset's images that no client trained on in any round."""
    ds = run.setup.load()
    used = [i for p in range(run.config.num_clients) for r in range(1, run.config.rounds + 1)
            for i in run.setup.batch_indices(p, r)]
    return ds.images[ds.disjoint_from(used)]


def test_fedsgd_federation_leaks_every_client(tmp_path):
    run = run_federation(FederationConfig(dataset="digits", num_clients=4, rounds=2, protocol="fedsgd",
                                          examples_per_round=1, num_classes=100))
    assert len(run.updates) == 8
    assert {u.round for u in run.updates} == {1, 2}
    assert len({u.source for u in run.updates}) == 4 and not any(u.is_aggregate for u in run.updates)
    # Round 2 starts from the model the server aggregated in round 1, not from the initial one.
    r1, r2 = (next(u for u in run.updates if u.round == r) for r in (1, 2))
    assert not all((r1.sent[k] == r2.sent[k]).all() for k in r1.sent)

    report = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, out=tmp_path, public=_public(run))
    assert all(row["error"] == "" for row in report.rows), report.rows
    # every one of the 8 updates leaks its client's image: beyond the best guess (gray, mean image, the closest of
    # 512 public digits) by the margins, not just the best of them above a dB line
    for row in report.rows:
        assert row["samples"] == 1 and row["leaked"] == 1.0, row
        assert row["psnr_mean"] >= row["best_baseline_psnr"] + 3.0 and row["label_accuracy"] == 1.0, row
    assert report.leaked_share(aggregate=False) == 1.0
    assert (tmp_path / "audit.csv").read_text().count("\n") == 9
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert len(list((tmp_path / "grids").glob("*.png"))) == 8


def _undefended_client(run, server_round: int):
    """One client without secure aggregation holding all the images of the round's aggregate: the same FedSGD step
    from the weights the server sent, on a batch the size of the aggregate (the positive control)."""
    from gradleak.fl.recording_strategy import RecordedUpdate
    from gradleak.observation import GroundTruth, LocalTraining
    from gradleak.victim import local_sgd, normalize

    aggregate = next(u for u in run.updates if u.round == server_round)
    truth = run.truth(aggregate)
    ds = run.setup.load()
    model = run.setup.model_spec.build()
    model.load_state_dict(aggregate.sent)
    model.train()
    n = len(truth.inputs)
    local_sgd(model, normalize(truth.inputs, ds.mean, ds.std), truth.labels, LocalTraining(1, 0.1, n))
    update = RecordedUpdate(server_round, "one-client", aggregate.sent, model.state_dict(),
                            {"lr": 0.1, "local-steps": 1, "batch-size": n}, {"num-examples": n, "batch-size": n})
    return update, GroundTruth(truth.inputs, truth.labels)


def test_secure_aggregation_measured_beside_an_undefended_batch_of_its_size(tmp_path, capsys):
    """Flower's SecAgg+ through ``gradleak fl-audit``: the server records only the unmasked aggregate of the 4
    clients (batch 1 each) per round. An iDLG run that expects one client's image finds nothing there, but that
    says nothing alone: the positive control is the same attack on an undefended client of the aggregate's size
    (4 images). Measured (README, "Federated leakage audit"): iDLG cannot read a batch of 4 digits beyond the
    best guess even without secure aggregation, and on the aggregate read as one batch of 4 it does exactly as
    well as on the undefended batch (FedSGD's aggregate of 4 batch-1 clients is the gradient of that batch): secure
    aggregation hides which client sent an image, not the image from an attack that reads the batch (the malicious
    server's imprint attack does: tests/defenses/test_secure_aggregation.py)."""
    config = tmp_path / "audit.toml"
    config.write_text(
        '[federation]\ndataset = "digits"\nnum_clients = 4\nrounds = 1\nprotocol = "fedsgd"\n'
        "examples_per_round = 1\nnum_classes = 100\nsecure_aggregation = true\n"
        f'[audit]\nattack = "idlg"\nattack_kwargs = {{ iterations = {ATTACK["iterations"]} }}\n'
        f'out = "{tmp_path / "out"}"\n'
    )
    assert main(["fl-audit", str(config), "--quiet"]) == 0
    assert "secure aggregation on (SecAgg+)" in capsys.readouterr().out
    with (tmp_path / "out" / "audit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["round"], r["source"], r["num_clients"], r["error"]) for r in rows] == [("1", "aggregate", "4", "")]
    assert rows[0]["best_baseline_psnr"] and rows[0]["leaked"] == "0.0"  # the CLI's rows carry the verdict
    assert (tmp_path / "out" / "report.html").is_file()

    # the same federation through the API (same seed, same model, same batches), judged beside the public set
    run = run_federation(FederationConfig(dataset="digits", num_clients=4, rounds=1, protocol="fedsgd",
                                          examples_per_round=1, num_classes=100, secure_aggregation=True))
    public = _public(run)
    one_image = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, public=public)
    as_batch = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, public=public, aggregate_as="batch")
    control, truth = _undefended_client(run, 1)
    # what SecAgg+ lets the server unmask is the undefended batch's update, up to its quantization (2^22 levels)
    delta = {k: control.returned[k] - control.sent[k] for k in control.sent}
    unmasked = {k: run.updates[0].returned[k] - control.sent[k] for k in delta}
    gap = float(sum((unmasked[k] - delta[k]).double().pow(2).sum() for k in delta).sqrt()
                / sum(delta[k].double().pow(2).sum() for k in delta).sqrt())
    undefended = audit([control], run.target, "idlg", ATTACK, truth=lambda _: truth, public=public)
    c, a, o = undefended.rows[0], as_batch.rows[0], one_image.rows[0]
    print(f"round 1, 4 images: undefended batch of 4 {c['psnr_mean']:.2f} dB, leaked {c['leaked']:.2f} "
          f"(best guess {c['best_baseline_psnr']:.2f} dB); SecAgg+ aggregate as a batch {a['psnr_mean']:.2f} dB, "
          f"leaked {a['leaked']:.2f}; as one client's update {o['psnr_mean']:.2f} dB, leaked {o['leaked']:.2f}; "
          f"aggregate vs undefended batch update: relative L2 gap {gap:.1e}")
    # the aggregate is the batch's update, up to SecAgg+'s quantization: each client scales its weights by
    # num_examples / max_weight (1/1000) before rounding to 2^22 levels in [-8, 8], a step of 3.8e-3 on a weight
    # (measured: 13 % of the update's norm here); that noise, not the masking, is what separates the two
    assert gap < 0.25
    assert c["samples"] == a["samples"] == o["samples"] == 4 and a["batch_size"] == 4 and o["batch_size"] == 1
    # measured truth: nothing leaks with secure aggregation, and nothing leaks without it either (iDLG cannot read
    # a batch of 4 digits beyond the closest public digit), so this attack shows nothing about secure aggregation
    assert o["leaked"] == 0.0 and a["leaked"] == 0.0
    assert c["leaked"] == 0.0 and c["psnr_mean"] < c["best_baseline_psnr"] + 3.0


def test_federation_of_a_user_model_named_by_file_path(tmp_path):
    """The clients (Ray workers) and the auditor rebuild a model gradleak has never registered; a config naming
    it is refused until the user trusts the file."""
    from pathlib import Path

    from gradleak.errors import ConfigError
    from gradleak.model_spec import trust_model

    source = str(Path(__file__).with_name("user_model.py")) + ":make_net"
    config = FederationConfig(dataset="digits", num_clients=2, rounds=1, protocol="fedsgd", examples_per_round=1,
                              num_classes=10, model=source)
    with pytest.raises(ConfigError, match="not trusted|--trust-model"):
        run_federation(config)
    trust_model(source.rsplit(":", 1)[0])  # the module alone trusts none of its functions
    with pytest.raises(ConfigError, match="--trust-model"):
        run_federation(config)
    trust_model(source)
    run = run_federation(config)
    assert run.target.model_spec.source == "import" and len(run.updates) == 2
    report = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, out=tmp_path, public=_public(run))
    assert all(row["error"] == "" for row in report.rows), report.rows
    assert report.leaked_share(aggregate=False) == 1.0, report.rows
