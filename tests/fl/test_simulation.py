"""A real Flower federation (run_simulation, Ray backend) recorded by RecordingStrategy and audited.

Must show: 4 FedSGD clients at batch size 1 on LeNet, 2 rounds; the auditor reconstructs a client's image at
>= 25 dB from the recorded updates, and with Flower's SecAgg+ on, the same auditor gets no image above 12 dB.
"""

from __future__ import annotations

import csv
import os

import pytest

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


def test_fedsgd_federation_leaks_every_client(tmp_path):
    run = run_federation(FederationConfig(dataset="digits", num_clients=4, rounds=2, protocol="fedsgd",
                                          examples_per_round=1, num_classes=100))
    assert len(run.updates) == 8
    assert {u.round for u in run.updates} == {1, 2}
    assert len({u.source for u in run.updates}) == 4 and not any(u.is_aggregate for u in run.updates)
    # Round 2 starts from the model the server aggregated in round 1, not from the initial one.
    r1, r2 = (next(u for u in run.updates if u.round == r) for r in (1, 2))
    assert not all((r1.sent[k] == r2.sent[k]).all() for k in r1.sent)

    report = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, out=tmp_path)
    assert all(row["error"] == "" for row in report.rows), report.rows
    best = report.best_psnr(aggregate=False)
    assert best is not None and best >= 25.0, report.rows
    assert all(row["label_accuracy"] == 1.0 for row in report.rows)
    assert (tmp_path / "audit.csv").read_text().count("\n") == 9
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert len(list((tmp_path / "grids").glob("*.png"))) == 8


def test_secure_aggregation_hides_clients_via_the_cli(tmp_path, capsys):
    """Same federation and auditor through ``gradleak fl-audit`` with Flower's SecAgg+: the server records
    only the unmasked aggregate of the 4 clients per round, and nothing reconstructs above 12 dB."""
    config = tmp_path / "audit.toml"
    config.write_text(
        '[federation]\ndataset = "digits"\nnum_clients = 4\nrounds = 2\nprotocol = "fedsgd"\n'
        "examples_per_round = 1\nnum_classes = 100\nsecure_aggregation = true\n"
        f'[audit]\nattack = "idlg"\nattack_kwargs = {{ iterations = {ATTACK["iterations"]} }}\n'
        f'out = "{tmp_path / "out"}"\n'
    )
    assert main(["fl-audit", str(config), "--quiet"]) == 0
    assert "secure aggregation on (SecAgg+)" in capsys.readouterr().out
    with (tmp_path / "out" / "audit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["round"], r["source"], r["num_clients"], r["error"]) for r in rows] == [
        ("1", "aggregate", "4", ""), ("2", "aggregate", "4", "")
    ]
    best = max(float(r["psnr_best"]) for r in rows)
    assert best < 12.0, rows
    assert (tmp_path / "out" / "report.html").is_file()


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
    report = audit(run.updates, run.target, "idlg", ATTACK, truth=run.truth, out=tmp_path)
    assert all(row["error"] == "" for row in report.rows), report.rows
    assert report.best_psnr(aggregate=False) >= 25.0, report.rows
