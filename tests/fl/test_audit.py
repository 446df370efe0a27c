"""The auditor without a federation: updates recorded as a server sees them (weights sent, weights back)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

import torch  # noqa: E402

from gradleak.attacks.bn_statistics import carried_statistics  # noqa: E402
from gradleak.baselines import ImageGuesses  # noqa: E402
from gradleak.fl.audit import AuditTarget, audit, judge, to_observation  # noqa: E402
from gradleak.fl.clients import ClientSetup, client_update  # noqa: E402
from gradleak.fl.recording_strategy import AGGREGATE, RecordedUpdate, RecordingStrategy  # noqa: E402
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

    ds = setup.load()
    private = [i for pid in (0, 1) for i in setup.batch_indices(pid, 1)]
    public = ds.images[ds.disjoint_from(private)]  # the attacker's auxiliary images: no client's
    report = audit([updates[0], broken], target, "idlg", {"iterations": 200}, truth=truth, out=tmp_path,
                   public=public)
    ok, failed = report.rows
    # leaked beside the best guess (gray, mean image, the best of 512 public digits), not beside a fixed dB line
    assert ok["error"] == "" and ok["samples"] == 1 and ok["leaked"] == 1.0 and ok["label_accuracy"] == 1.0
    assert ok["psnr_mean"] >= ok["best_baseline_psnr"] + 3.0 and ok["best_baseline_psnr"] > 12.0, ok
    assert ok["ssim_mean"] >= ok["best_baseline_ssim"] + 0.1 and ok["above_threshold"]
    assert report.leaked_share() == 1.0 and report.settings["public_images"] == 512
    assert "classifier.bias" in failed["error"] and failed["psnr_best"] is None and failed["leaked"] is None
    assert (tmp_path / "report.html").is_file() and (tmp_path / "grids" / "round1_node-0.png").is_file()
    html = (tmp_path / "report.html").read_text()
    assert "best guess without the update" in html and "1/1 (100%)" in html and "best_baseline_psnr" in html


def test_a_guess_returned_as_the_reconstruction_is_not_leaked(recorded):
    """The mutation check of the audit's verdict: the best guess itself, or the public image closest to each
    private one, handed in as the reconstruction, leaks nothing; in one client's view of an aggregate (fewer
    reconstructions than private samples) as well."""
    from gradleak.observation import GroundTruth

    setup, target, _, _ = recorded
    ds = setup.load()
    private = [i for pid in range(4) for i in setup.batch_indices(pid, 1)]
    truth = GroundTruth(*ds.batch(private))
    public = ds.images[ds.disjoint_from(private)]
    guesses = ImageGuesses.of(to_observation_inputs(target), public)
    mean_image = guesses.constant["mean image"].expand_as(truth.inputs).clone()
    closest = guesses.public[torch.cdist(truth.inputs.flatten(1), guesses.public.flatten(1)).argmin(1)]
    for fake in (mean_image, closest, closest[:1]):
        judged = judge(fake, truth, guesses)
        assert not any(judged.leaked) and len(judged.leaked) == 4
    assert all(judge(truth.inputs.clone(), truth, guesses).leaked)  # the truth itself leaks everything


def to_observation_inputs(target: AuditTarget):
    from gradleak.inputs import ImageInput

    return ImageInput(tuple(target.input_shape), tuple(target.mean), tuple(target.std))


def test_recording_strategy_wraps_only_flower_strategies():
    with pytest.raises(TypeError, match="flwr.serverapp.strategy.Strategy"):
        RecordingStrategy(object())


def test_a_client_that_sends_its_state_dict_hands_over_its_batch_statistics():
    """Flower's PyTorch clients return every state-dict array: the audit keeps the BatchNorm running statistics'
    change, and from it the attacker reads the client's own batch statistics exactly (one local step)."""
    spec = ModelSpec("convnet", {"width": 4, "num_classes": 3, "image_size": 16})
    model = spec.build().train()
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first_bn_input: list[torch.Tensor] = []
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_pre_hook(lambda _m, inp: first_bn_input.append(inp[0].detach()))
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    update = RecordedUpdate(1, "node-1", sent, {k: v.detach().clone() for k, v in model.state_dict().items()},
                            config={"lr": 0.1, "local-steps": 1, "batch-size": 4}, metrics={"num-examples": 4})
    obs = to_observation(update, AuditTarget(spec, (3, 16, 16), 3, (0.0,) * 3, (1.0,) * 3))

    assert obs.buffer_update and all(k.endswith(("running_mean", "running_var")) for k in obs.buffer_update)
    name = next(n for n, m in model.named_modules() if m is bn)
    mean, var = carried_statistics(obs).statistics[name]
    feats = first_bn_input[0].double()
    torch.testing.assert_close(mean, feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(var, feats.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
