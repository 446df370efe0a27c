"""Files from strangers (issue 24, deliverable 5): each class of hostile file ends in one line on stderr, exit code 2,
and no traceback, found at the boundary where gradleak reads the file, before any work."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gradleak import cli
from gradleak.attacks.base import Reconstruction
from gradleak.attacks.checkpoint import read_checkpoint, write_checkpoint
from gradleak.capture import load_capture, load_truth, save_capture, save_truth
from gradleak.errors import AttackError, CaptureError, ConfigError
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.limits import MAX_JSON_DEPTH, parse_json, read_json_file
from gradleak.metrics import score
from gradleak.model_spec import ModelSpec
from gradleak.observation import GroundTruth


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A LeNet gradient of one 8x8 digit with its labels leaked, saved as a capture and its truth."""
    obs, truth = make_victim(ExperimentConfig(dataset="digits", image_size=8, model="lenet", num_classes=10,
                                              indices=(3,), leak_labels=True))
    folder = tmp_path_factory.mktemp("victim")
    save_capture(obs, folder / "c.safetensors")
    save_truth(truth, folder / "t.safetensors", capture=obs)
    return obs, truth, folder


def _one_line(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; it must exit 2 with one ``gradleak: error:`` line on stderr holding ``needles``."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("gradleak: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _rewrite(path: Path, out: Path, change) -> Path:
    """A copy of a capture with its metadata (and tensors) changed as a hostile author would."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["gradleak"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta_text = change(meta, tensors)
    save_file(tensors, str(out), metadata={"gradleak": meta_text if isinstance(meta_text, str) else json.dumps(meta)})
    return out


# 1 ------------------------------------------------------------------------------------------------------------------
def test_trust_names_the_factory_and_binds_its_settings(victim, tmp_path: Path, capsys, monkeypatch) -> None:
    """A trusted module that also holds a harmful function: a capture naming that function, or handing the trusted
    factory settings it does not take, is refused before anything of the module is called."""
    obs, _, folder = victim
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    calls = tmp_path / "calls.txt"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "hostile_nets_24.py").write_text(textwrap.dedent(f"""
        import shutil
        from pathlib import Path
        from gradleak.models.lenet import lenet

        def make_net(in_channels, num_classes, image_size):
            with open({str(calls)!r}, "a") as fh:
                fh.write("make_net\\n")
            return lenet(in_channels=in_channels, num_classes=num_classes, image_size=image_size)

        def wipe(folder):
            for p in Path(folder).iterdir():
                p.unlink()
            return 0
    """))
    monkeypatch.syspath_prepend(str(package))
    wipe = _rewrite(folder / "c.safetensors", tmp_path / "wipe.safetensors", lambda m, t: m["model"].update(
        source="import", name="hostile_nets_24:wipe", kwargs={"folder": str(precious)}))
    for trust in ("hostile_nets_24:make_net", "hostile_nets_24"):
        _one_line(capsys, ["attack", str(wipe), "--trust-model", trust, "--quiet", "--out", str(tmp_path / "o")],
                  "'hostile_nets_24:wipe'", "--trust-model hostile_nets_24:wipe")
    assert (precious / "data.txt").read_text() == "keep me"
    extra = _rewrite(folder / "c.safetensors", tmp_path / "extra.safetensors", lambda m, t: m["model"].update(
        source="import", name="hostile_nets_24:make_net",
        kwargs={**obs.model_spec.kwargs, "folder": str(precious)}))
    line = _one_line(capsys, ["attack", str(extra), "--trust-model", "hostile_nets_24:make_net", "--quiet",
                              "--out", str(tmp_path / "o")], "has no parameter 'folder'")
    assert line.endswith("(its parameters: in_channels, num_classes, image_size)")
    nested = _rewrite(folder / "c.safetensors", tmp_path / "nested.safetensors", lambda m, t: m["model"].update(
        source="import", name="hostile_nets_24:make_net", kwargs={**obs.model_spec.kwargs, "image_size": {"a": 1}}))
    _one_line(capsys, ["attack", str(nested), "--trust-model", "hostile_nets_24:make_net", "--quiet",
                       "--out", str(tmp_path / "o")], "setting 'image_size' must be a number, string")
    assert not calls.exists()  # the factory itself was never called with a stranger's settings
    good = _rewrite(folder / "c.safetensors", tmp_path / "good.safetensors", lambda m, t: m["model"].update(
        source="import", name="hostile_nets_24:make_net", kwargs=obs.model_spec.kwargs))
    loaded = load_capture(good, trust=["hostile_nets_24:make_net"])
    assert loaded.model_spec.name == "hostile_nets_24:make_net" and calls.exists()


# 2 ------------------------------------------------------------------------------------------------------------------
def test_a_nan_checkpoint_is_refused_and_nan_is_never_reported_or_scored(victim, tmp_path: Path, capsys) -> None:
    _, truth, folder = victim
    ckpt = tmp_path / "run.ckpt"
    argv = ["attack", str(folder / "c.safetensors"), "--attack", "idlg", "--iterations", "4", "--checkpoint",
            str(ckpt), "--quiet", "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    saved = read_checkpoint(ckpt)
    saved["variables"] = [torch.full_like(v, float("nan")) for v in saved["variables"]]
    write_checkpoint(ckpt, saved)  # a valid integrity header: only the content is crafted
    crafted = ckpt.read_bytes()
    message = "variable 0 (the candidates) holds NaN or Inf"
    _one_line(capsys, argv, message)
    _one_line(capsys, [*argv, "--truth", str(folder / "t.safetensors")], message)
    assert ckpt.read_bytes() == crafted  # nothing written back
    # behind the CLI: a non-finite answer is neither a Reconstruction nor scored
    nan = torch.full_like(truth.inputs, float("nan"))
    with pytest.raises(AttackError, match="ended with a reconstruction holding NaN or Inf"):
        Reconstruction(inputs=nan, labels=None, attack="idlg", settings={})
    with pytest.raises(ConfigError, match="the reconstruction holds NaN or Inf; it cannot be scored"):
        score(nan, truth.labels, truth)


# 3 and 4 --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "message"), [
    ({"n_head": 0}, "num_attention_heads must be a positive integer, got 0"),
    ({"n_embd": 64, "n_head": 3}, "hidden_size 64 is not divisible by num_attention_heads 3"),
    ({"n_positions": 0}, "max_position_embeddings must be a positive integer, got 0"),
    ({"n_inner": -4}, "n_inner must be a positive integer, got -4"),
    ({"n_layer": 10**9}, "num_hidden_layers is 1000000000, above the limit of 256; pass --allow-large"),
    ({"n_embd": 2**20, "n_head": 1}, "parameter count is"),
])
def test_hugging_face_configs_are_checked_and_counted_before_building(tmp_path: Path, capsys, config: dict,
                                                                        message: str) -> None:
    """Sizes transformers divides or allocates by are checked, and the parameters counted on the meta device, before
    any module is made: no ZeroDivisionError from inside transformers, no runaway on an enormous n_layer."""
    cfg = tmp_path / "config.json"
    # GPT-2's default bos/eos ids lie outside this vocabulary: transformers' warning about it must not print too
    cfg.write_text(json.dumps({"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 8, "vocab_size": 50,
                               **config}))
    tensors = tmp_path / "t.safetensors"
    save_file({"transformer.wte.weight": torch.zeros(50, 16)}, str(tensors))
    _one_line(capsys, ["attack", "--model", "hf:gpt2", "--model-config", str(cfg), "--weights", str(tensors),
                       "--update", str(tensors), "--input-kind", "tokens", "--seq-len", "4", "--vocab-size", "50",
                       "--quiet", "--out", str(tmp_path / "o")], message)


def test_a_registry_model_of_endless_layers_is_refused_before_building() -> None:
    """Every source is bounded before anything is made: 20,000 layers take seconds even on the meta device."""
    with pytest.raises(CaptureError, match="settings of model 'mlp': a list of layers is 20000, above the limit"):
        ModelSpec("mlp", {"in_channels": 1, "image_size": 8, "hidden": [1] * 20_000}).build()


# 5 ------------------------------------------------------------------------------------------------------------------
def test_deeply_nested_json_is_one_error(victim, tmp_path: Path, capsys) -> None:
    _, _, folder = victim
    deep = "[" * 100_000 + "]" * 100_000
    capture = _rewrite(folder / "c.safetensors", tmp_path / "deep.safetensors",
                       lambda m, t: json.dumps(m)[:-1] + ', "info": {"x": ' + deep + "}}")
    for argv in (["inspect", str(capture)], ["attack", str(capture), "--quiet", "--out", str(tmp_path / "o")]):
        _one_line(capsys, argv, "gradleak metadata: JSON nested 100002 levels deep, more than the "
                                f"{MAX_JSON_DEPTH} allowed")
    config = tmp_path / "config.json"  # a model config read by the shared reader
    config.write_text('{"n_layer": ' + deep + "}")
    with pytest.raises(ConfigError, match="config.json: JSON nested 100001 levels deep"):
        read_json_file(config, error=ConfigError)
    assert parse_json('{"a": [1, "[[[[", {"b": {}}]}', "x") == {"a": [1, "[[[[", {"b": {}}]}


# 6 ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "message"), [
    (lambda t: t.to_sparse(), "is a sparse_coo tensor; only dense (strided) tensors are read"),
    (lambda t: torch.empty(t.shape, device="meta"), "is a tensor on the 'meta' device"),
    (lambda t: t.to(torch.complex64), "has dtype complex64; only real (floating point or integer) tensors"),
])
def test_tensor_files_hold_only_dense_real_cpu_tensors(victim, tmp_path: Path, capsys, make, message) -> None:
    obs, _, _ = victim
    weights, update = tmp_path / "w.pt", tmp_path / "u.pt"
    torch.save(dict(obs.weights), weights)
    torch.save({k: make(v) if k == "classifier.weight" else v for k, v in obs.update.items()}, update)
    own = ["--model", "lenet", "--model-arg", "in_channels=1", "--model-arg", "num_classes=10", "--model-arg",
           "image_size=8", "--input-shape", "1,8,8", "--num-classes", "10", "--quiet", "--out", str(tmp_path / "o")]
    _one_line(capsys, ["attack", "--weights", str(weights), "--update", str(update), *own],
              f"{update}: update file entry 'classifier.weight' {message}")
    _one_line(capsys, ["inspect", str(update)], f"{update}: tensor file entry 'classifier.weight' {message}")


# 7 ------------------------------------------------------------------------------------------------------------------
def test_a_pickle_or_torch_zip_named_safetensors_is_read_by_content_or_refused_in_one_line(victim, tmp_path: Path,
                                                                                           capsys) -> None:
    obs, _, _ = victim
    zipped = tmp_path / "weights.safetensors"
    torch.save(dict(obs.weights), zipped)  # a torch zip under a safetensors name: read as what it is
    assert cli.main(["inspect", str(zipped)]) == 0
    assert "classifier.weight  (10, 48)  float32" in capsys.readouterr().out
    hostile = tmp_path / "update.safetensors"
    hostile.write_bytes(pickle.dumps({"a": print}, protocol=4))
    _one_line(capsys, ["inspect", str(hostile)], "not a tensor-only PyTorch tensor file (loaded with "
                                                 "weights_only=True: Unsupported")
    garbage = tmp_path / "other.safetensors"
    garbage.write_bytes(pickle.dumps({"a": 1}, protocol=0))
    own = ["--model", "lenet", "--model-arg", "in_channels=1", "--model-arg", "num_classes=10", "--model-arg",
           "image_size=8", "--input-shape", "1,8,8", "--num-classes", "10", "--quiet", "--out", str(tmp_path / "o")]
    _one_line(capsys, ["attack", "--weights", str(garbage), "--update", str(hostile), *own],
              f"{garbage}: not a readable safetensors file")
    _one_line(capsys, ["attack", "--weights", str(zipped), "--update", str(hostile), *own],
              f"{hostile}: not a tensor-only PyTorch update file")


# 8 ------------------------------------------------------------------------------------------------------------------
def test_inspect_escapes_control_characters_from_the_file(victim, tmp_path: Path, capsys) -> None:
    _, _, folder = victim

    def hostile(meta, tensors):
        meta["update_kind"] = "gradient\r\x1b[2Kall clear\x1b[1A"
        meta["model_mode"] = "train\u202eevil"
        meta["update_digest"] = "\x07" * 3
        tensors["update/evil\x1b[2J"] = tensors.pop("update/classifier.bias")

    capture = _rewrite(folder / "c.safetensors", tmp_path / "ctl.safetensors", hostile)
    assert cli.main(["inspect", str(capture)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\r\x07\u202e"), repr(out)
    assert "gradient\\r\\x1b[2Kall clear\\x1b[1A of" in out and "train\\u202eevil" in out
    assert "evil\\x1b[2J  (10,)  float32" in out and "update digest: \\x07\\x07\\x07" in out


# 9 ------------------------------------------------------------------------------------------------------------------
def test_a_truth_file_without_labels_is_refused_at_load(victim, tmp_path: Path, capsys) -> None:
    obs, truth, folder = victim
    unlabelled = save_truth(GroundTruth(truth.inputs, None), tmp_path / "t.safetensors", capture=obs)
    _one_line(capsys, ["attack", str(folder / "c.safetensors"), "--truth", str(unlabelled), "--iterations", "2",
                       "--quiet", "--out", str(tmp_path / "o")],
              f"{unlabelled}: the truth has no 'labels' tensor, which a classification capture's truth needs")
    with pytest.raises(CaptureError, match="no 'labels' tensor"):
        load_truth(unlabelled, capture=obs)
