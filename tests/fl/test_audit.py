"""The auditor without a federation: updates recorded as a server sees them (weights sent, weights back)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402

from gradleak.fl.audit import AuditTarget, audit, to_observation  # noqa: E402
from gradleak.fl.clients import ClientSetup, client_update  # noqa: E402
from gradleak.fl.recording import AGGREGATE, RecordedUpdate, RecordingStrategy  # noqa: E402
from gradleak.observation import ModelSpec  # noqa: E402

CONFIG = {"lr": 0.1, "local-steps": 1, "batch-size": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core machine is shared with the rest of the suite
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recorded():
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 100, "image_size": 32})
    setup = ClientSetup("digits", 32, None, spec, num_clients=4, examples_per_round=1, protocol="fedsgd")
    ds = setup.load()
    target = AuditTarget(spec, ds.input_shape, 100, ds.mean, ds.std)
    torch.manual_seed(0)
    sent = spec.build().state_dict()
    updates = []
    for pid in (0, 1):
        new, metrics = client_update(setup, sent, pid, 1, lr=0.1)
        updates.append(RecordedUpdate(1, f"node-{pid}", sent, new, dict(CONFIG), metrics))
    return setup, target, sent, updates


def test_client_update_becomes_a_weight_delta_observation(recorded):
    _, target, sent, updates = recorded
    obs = to_observation(updates[0], target)
    assert obs.update_kind == "weight_delta" and obs.batch_size == 1
    assert obs.local_training.lr == 0.1 and obs.local_training.steps == 1
    assert set(obs.update) == {n for n, _ in target.model_spec.build().named_parameters()}


def test_aggregate_views(recorded):
    _, target, sent, updates = recorded
    mean = {k: (updates[0].returned[k] + updates[1].returned[k]) / 2 for k in sent}
    agg = RecordedUpdate(1, AGGREGATE, sent, mean, dict(CONFIG), {"num-examples": 2}, num_clients=2)
    assert to_observation(agg, target, "client").batch_size == 1
    whole = to_observation(agg, target, "batch")
    assert whole.batch_size == 2 and whole.local_training.batch_size == 2


def test_audit_scores_what_it_can_and_records_what_fails(recorded, tmp_path):
    setup, target, sent, updates = recorded
    broken = RecordedUpdate(1, "node-9", sent, {k: v for k, v in updates[1].returned.items() if k != "classifier.bias"},
                            dict(CONFIG), dict(updates[1].metrics))

    def truth(update):
        from gradleak.observation import GroundTruth

        return GroundTruth(*setup.load().batch(setup.batch_indices(int(update.metrics["partition-id"]), 1)))

    report = audit([updates[0], broken], target, "idlg", {"iterations": 200}, truth=truth, out=tmp_path)
    ok, failed = report.rows
    assert ok["error"] == "" and ok["psnr_best"] >= 25.0 and ok["leaked"] and ok["label_accuracy"] == 1.0
    assert "classifier.bias" in failed["error"] and failed["psnr_best"] is None
    assert (tmp_path / "report.html").is_file() and (tmp_path / "grids" / "round1_node-0.png").is_file()


def test_recording_strategy_wraps_only_flower_strategies():
    with pytest.raises(TypeError, match="flwr.serverapp.strategy.Strategy"):
        RecordingStrategy(object())
