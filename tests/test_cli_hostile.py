"""Hostile command lines and configs (issue 24, deliverable 5): one test per class, each showing the one line a
user now sees. Every refusal is exit status 2 with one line on stderr and no traceback, before any work; an
attack that ran and recovered nothing is exit status 3. No test here starts Ray or Flower."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradleak.cli import EXIT_NOTHING_RECOVERED, main
from gradleak.errors import ConfigError


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the CLI in-process; it must exit ``code`` with exactly one line on stderr and no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


# --- 1. data loss by a config: a sweep writes only a table (and folder) it wrote for this sweep -------------

SWEEP = """
[sweep]
name = "{name}"
out = "{out}"
table = "{table}"

[base]
dataset = "digits"
image_size = 8
attack_kwargs = {{ iterations = 2 }}

[grid]
seed = {seeds}
"""


def _sweep_file(tmp_path: Path, file: str, out: Path, name: str = "a", table: str = "results.csv",
                seeds: str = "[0]") -> Path:
    path = tmp_path / file
    path.write_text(SWEEP.format(name=name, out=out, table=table, seeds=seeds))
    return path


def test_sweep_refuses_a_table_or_folder_it_did_not_write(tmp_path: Path, capsys, monkeypatch) -> None:
    import gradleak.sweep as sweep
    from gradleak.sweep import load_sweep_config

    monkeypatch.setattr(sweep, "rebuild_table", None)  # nothing may be read, rewritten or run past the refusal
    mine = tmp_path / "mine"
    mine.mkdir()
    ledger = mine / "ledger.csv"
    ledger.write_text("date,amount\n2024-01-01,12.50\n")
    (mine / "report.html").write_text("<p>my report</p>")
    config = _sweep_file(tmp_path, "s.toml", mine, table="ledger.csv")
    err = refused(["sweep", str(config), "--quiet"], capsys)
    assert err == (f"gradleak: error: {ledger} exists and was not written by gradleak for this sweep (no "
                   "ledger.csv.gradleak.json beside it); choose another out or table, or pass --force to write "
                   "there anyway")
    assert ledger.read_text() == "date,amount\n2024-01-01,12.50\n"
    assert (mine / "report.html").read_text() == "<p>my report</p>"

    # another sweep's folder: its sidecar names another sweep, so --out there would merge the two tables
    shared = tmp_path / "shared"
    sweep.claim_output(load_sweep_config(_sweep_file(tmp_path, "a.toml", shared, name="a")))
    other = _sweep_file(tmp_path, "b.toml", tmp_path / "elsewhere", name="b", table="b.csv")
    err = refused(["sweep", str(other), "--out", str(shared), "--quiet"], capsys)
    assert err.startswith(f"gradleak: error: {shared} holds the results of another sweep ('a' from ")
    assert err.endswith("per results.csv.gradleak.json); choose another out or table, or pass --force to write "
                        "there anyway")
    assert not (shared / "b.csv").exists()

    # a folder this sweep wrote before sidecars existed is recognised by its sweep_config.json
    legacy = tmp_path / "legacy"
    old = load_sweep_config(_sweep_file(tmp_path, "l.toml", legacy, name="l"))
    legacy.mkdir()
    (legacy / "sweep_config.json").write_text(json.dumps(old.to_dict(), default=str))
    (legacy / "results.csv").write_text("key,status\n")
    sweep.claim_output(old)
    assert (legacy / "results.csv.gradleak.json").is_file()

    # the same sweep resumes, and may grow an axis; --force takes a folder over
    sweep.claim_output(load_sweep_config(_sweep_file(tmp_path, "a2.toml", shared, name="a", seeds="[0, 1]")))
    sweep.claim_output(load_sweep_config(config), force=True)
    marker = json.loads((mine / "ledger.csv.gradleak.json").read_text())
    assert marker["written_by"] == "gradleak sweep" and marker["name"] == "a"


# --- 2. silent text outcomes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gradleak.capture import save_capture
    from gradleak.text.victim import text_victim

    path = tmp_path_factory.mktemp("text") / "text.safetensors"
    save_capture(text_victim("gpt2-tiny", 2, seed=0).observation, path)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--text", "--attack", "idlg"],
         "--attack 'idlg' does not handle token sequences; text attacks: dager, lamp, pursuit, subspace, tag"),
        (["demo", "--text", "--iterations", "5"], "--iterations does not apply to demo --text (text attacks take "
                                                  "their settings from --attack-arg, e.g. steps=100 for tag)"),
        (["demo", "--text", "--checkpoint", "c.pt"], "--checkpoint does not apply to demo --text"),
        (["demo", "--text", "--pretrain-steps", "-5"], "--pretrain-steps must be >= 0, got -5"),
        (["demo", "--records", "3"], "--records applies only with --text"),
    ],
)
def test_text_demo_refuses_what_does_not_apply(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    err = refused([*argv, "--quiet", "--out", str(tmp_path / "d")], capsys)
    assert err == f"gradleak: error: {message}" or message in err
    assert not (tmp_path / "d").exists()


def test_text_attack_that_finds_nothing_says_so_and_exits_3(tmp_path: Path, capsys, text_capture: Path) -> None:
    out = tmp_path / "a"
    err = refused(["attack", str(text_capture), "--attack", "dager", "--attack-arg", "threshold=1e-30", "--quiet",
                   "--out", str(out)], capsys, code=EXIT_NOTHING_RECOVERED)
    assert err == ("gradleak: dager found no token sequence in the update (no token lies inside the layer-1 span at "
                   "any position); nothing was written (exit status 3)")
    assert not out.exists()
    err = refused(["attack", str(text_capture), "--attack", "dager", "--iterations", "4", "--out", str(out)], capsys)
    assert err.startswith("gradleak: error: --iterations does not apply to attack 'dager' (its settings: ")
    # a run that finds something names only the files it wrote (no grid.png for text)
    assert main(["attack", str(text_capture), "--attack", "dager", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grid.png" not in printed and f"report: {out / 'metrics.json'}" in printed
    assert "sequences found for a batch of 2" in printed


def test_token_labels_of_a_causal_lm_capture_are_range_checked(tmp_path: Path, capsys, text_capture: Path) -> None:
    import dataclasses

    import torch

    from gradleak.capture import load_capture, save_capture

    obs = load_capture(text_capture)
    labels = torch.zeros((obs.batch_size, obs.inputs.seq_len), dtype=torch.long)
    labels[1, 3] = 10**6
    bad = tmp_path / "bad.safetensors"
    save_capture(dataclasses.replace(obs, labels=labels), bad)
    err = refused(["attack", str(bad), "--attack", "dager", "--out", str(tmp_path / "a")], capsys)
    assert err == ("gradleak: error: the capture's labels hold token id 1000000; causal_lm labels must lie in "
                   "[0, 2048) or be -100")


# --- 3. unbounded federation sizes ----------------------------------------------------------------------------

def test_federation_sizes_are_bounded_before_anything_is_allocated(tmp_path: Path, capsys) -> None:
    config = tmp_path / "audit.toml"
    config.write_text("[federation]\nexamples_per_round = 100000\n")
    err = refused(["fl-audit", str(config), "--out", str(tmp_path / "a")], capsys)
    assert err == (f"gradleak: error: {config} [federation]: examples_per_round is 100000, above the limit of 4096; "
                   "pass --allow-large (or use gradleak.limits.allow_large()) if this is real large work")
    from gradleak.fl.simulation import FederationConfig, _setup
    from gradleak.limits import allow_large

    with allow_large():  # lifted, the size must still fit each client's shard of the dataset
        with pytest.raises(ConfigError, match=r"a client's batch of 100000 examples per round is more than its "
                                              r"shard holds: 1797 images of 'digits' over 4 clients is 449 each"):
            _setup(FederationConfig(examples_per_round=100000, image_size=8))
    assert not (tmp_path / "a").exists()


# --- 4. filter settings that would do nothing useful ----------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--filter-threshold", "-5"], "filter_threshold -5 dB is below the risk score's range [5.2, 50.0) dB: every "
                                       "update would be filtered in every round"),
        (["--filter-threshold", "60"], "filter_threshold 60 dB is not below the risk score's ceiling 50.0 dB: no "
                                       "update would ever be filtered"),
        (["--filter-action", "clip"], "filter_action 'clip' needs a filter_threshold (--filter-threshold DB): "
                                      "without one no update is filtered"),
    ],
)
def test_filter_settings_that_do_nothing_useful_are_refused(tmp_path: Path, capsys, argv: list[str],
                                                            message: str) -> None:
    assert refused(["fl-audit", *argv, "--out", str(tmp_path / "a")], capsys) == f"gradleak: error: {message}"
    assert not (tmp_path / "a").exists()


# --- 5. report --config naming a missing file -----------------------------------------------------------------

def test_report_config_that_is_missing_is_one_line(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    missing = tmp_path / "nothere.toml"
    err = refused(["report", str(run), "--config", str(missing)], capsys)
    assert err == f"gradleak: error: --config {missing}: no such file"
    assert not (run / "report.html").exists()


# --- 6. demo --text and split arguments -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--text", "--records", "0"], "--records must be >= 1, got 0"),
        (["demo", "--text", "--records", "100000"], "--records 100000 is above the limit of 256 bundled records; pass "
                                                    "--allow-large if this is real large work"),
        (["split", "--smashed-noise", "inf"], "split defense smashed_noise must be a finite number >= 0, got inf"),
        (["split", "--gradient-noise", "nan"], "split defense gradient_noise must be a finite number >= 0, got nan"),
        (["split", "--image-size", "10"], "image size must be a multiple of 4 (the split CNN halves it twice), got 10"),
        (["split", "--observe", "0"], "observe must be >= 1, got 0"),
        (["split", "--steps", "10000000"], "split training steps (2 x steps + 30 for the label task) is 20000030, "
                                           "above the limit of 100000"),
        (["split", "--positive-class", "12"], "positive_class must be one of the 10 classes of 'digits' (0..9), "
                                              "got 12"),
    ],
)
def test_text_demo_and_split_arguments_are_checked(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    err = refused([*argv, "--out", str(tmp_path / "o")], capsys)
    assert err.startswith(f"gradleak: error: {message}")
    assert not (tmp_path / "o").exists()


# --- 7. --allow-large and a run the machine cannot hold -------------------------------------------------------

def test_a_run_the_memory_cannot_hold_is_refused_or_named_in_one_line(tmp_path: Path, capsys,
                                                                        monkeypatch) -> None:
    import re

    # estimated before it starts: one 3 x 60000 x 60000 image (10.8 G elements) cannot fit
    err = refused(["demo", "--image-size", "60000", "--allow-large", "--quiet", "--out", str(tmp_path / "d")],
                  capsys)
    assert re.fullmatch(r"gradleak: error: a batch of 1 3x60000x60000 images \(1 restarts\) and a \d+-parameter "
                        r"model needs about [\d.]+ TiB of memory, and [\d.]+ [KMGT]iB is available on this machine; "
                        r"make the run smaller or use a larger machine", err), err
    assert not (tmp_path / "d").exists()
    err = refused(["demo", "--text", "--records", "100000", "--allow-large", "--quiet", "--out",
                   str(tmp_path / "d")], capsys)
    assert re.fullmatch(r"gradleak: error: a text batch of 100000 records of \d+ tokens on gpt2-small needs about "
                        r"[\d.]+ TiB of memory, and .* is available on this machine; make the run smaller or use a "
                        r"larger machine", err), err

    # an allocation that fails anyway (an estimate is coarse) is caught at the top and named in one line
    import gradleak.cli.demo

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 17179869184 bytes.")

    monkeypatch.setattr(gradleak.cli.demo, "run_experiment", fails)  # the name demo runs
    err = refused(["demo", "--image-size", "8", "--dataset", "digits", "--quiet", "--out", str(tmp_path / "d")],
                  capsys)
    assert re.fullmatch(r"gradleak: error: out of memory: an allocation asked for 16.0 GiB failed; .* is available "
                        r"on this machine; make the run smaller or use a larger machine", err), err
