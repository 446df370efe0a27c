"""Sweeps on a real local Ray: a 12-experiment grid runs with a result for every point, a second run of the
same command does no work, and a failing experiment is recorded without stopping the others."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")
#: one pytest-xdist group for every file that starts a local Ray: two Ray clusters never start at once
pytestmark = pytest.mark.xdist_group("ray")

from gradleak.cli import main  # noqa: E402
from gradleak.errors import ConfigError  # noqa: E402
from gradleak.sweep import ResultsTable, SweepConfig, experiment_key, run_sweep  # noqa: E402

SWEEP = """
[sweep]
out = "{out}"
table = "{table}"
cpus_per_task = 1

[base]
dataset = "digits"
num_classes = 100
image_size = 16
attack_kwargs = {{ iterations = 15 }}

[grid]
attack = ["idlg", "dlg"]
pretrain_steps = [0, 3]
seed = [0, 1, 2]
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def test_grid_of_12_runs_on_ray_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(out=out, table="results.csv"))
    assert main(["sweep", str(config), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "12 experiments, 0 already done, 12 run (0 failed)" in first
    rows = ResultsTable(out / "results.csv").typed_rows()
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    assert all(r["status"] == "ok" and 0 < r["psnr"] < 100 for r in rows), rows
    # iDLG reads the label off the last layer's gradient: exact at batch size 1.
    assert all(r["label_accuracy"] == 1.0 for r in rows if r["attack"] == "idlg")
    assert {(r["attack"], r["pretrain_steps"], r["seed"]) for r in rows} == {
        (a, p, s) for a in ("idlg", "dlg") for p in (0, 3) for s in (0, 1, 2)
    }
    assert all((out / r["run_dir"] / "grid.png").is_file() for r in rows)
    assert (out / "report.html").is_file()
    before = (out / "results.csv").read_bytes()

    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    assert "12 already done, 0 run" in capsys.readouterr().out
    assert (out / "results.csv").read_bytes() == before


def test_failure_is_recorded_and_others_finish_then_resume_skips_done(tmp_path):
    data = {
        "sweep": {"out": str(tmp_path), "table": "results.parquet"},
        "base": {"dataset": "digits", "num_classes": 100, "image_size": 16, "attack": "idlg",
                 "attack_kwargs": {"iterations": 5}},
        # digits has 1,797 images: the second point fails when the worker loads its batch.
        "grid": {"indices": [[7], [5000]], "seed": [0]},
    }
    config = SweepConfig.from_dict(data, "test")
    summary = run_sweep(config)
    assert (summary.total, summary.ran, summary.failed) == (2, 2, 1)
    rows = {json.loads(r["indices"])[0]: r for r in ResultsTable(tmp_path / "results.parquet").read()}
    assert rows[7]["status"] == "ok" and rows[7]["psnr"] is not None
    assert rows[5000]["status"] == "error" and "DataError" in rows[5000]["error"] and "5000" in rows[5000]["error"]
    assert rows[5000]["key"] == experiment_key(config.experiments()[1])
    # A stopped sweep: grow the grid; only the new point runs, the error is kept unless retried.
    data["grid"]["seed"] = [0, 1]
    grown = run_sweep(SweepConfig.from_dict(data, "test"))
    assert (grown.total, grown.skipped, grown.ran) == (4, 2, 2)
    assert len(ResultsTable(tmp_path / "results.parquet").read()) == 4
    retried = run_sweep(SweepConfig.from_dict(data, "test"), retry_errors=True)
    assert (retried.ran, retried.failed) == (2, 2)


# --- nothing lost, counted right (issue 11) ---

SMALL = """
[sweep]
out = "{out}"
table = "results.csv"

[base]
dataset = "digits"
num_classes = 10
image_size = 8
attack = "idlg"
attack_kwargs = {{ iterations = 4 }}

[grid]
seed = {seeds}
"""


def test_torn_writes_from_a_sigkill_are_repaired_on_rerun(tmp_path, capsys):
    """A kill can land mid-write of the table row (after that run's result.json is safely renamed into place)
    or mid-write of a result.json (before its row is written). Both torn states are made here byte for byte;
    the re-run must end with exactly one complete row per experiment and run only the lost one again."""
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL.format(out=out, seeds="[0, 1, 2]"))
    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    table = out / "results.csv"
    lines = table.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4  # header and three rows
    header, done, torn, lost = lines
    lost_key = lost.split(b",", 1)[0].decode()
    torn_key = torn.split(b",", 1)[0].decode()
    before = {r["key"]: r for r in ResultsTable(table).read()}
    # 1) killed while writing `lost`'s result.json: a partial temporary file, no result.json, no row
    result = out / "runs" / lost_key / "result.json"
    data = result.read_bytes()
    result.with_name("result.json.tmp").write_bytes(data[: len(data) // 2])
    result.unlink()
    # 2) killed while appending `torn`'s row: the table ends half-way through that line
    table.write_bytes(header + done + torn[: len(torn) // 2])
    assert len(ResultsTable(table).raw_rows()) == 2  # the torn row is there, with empty trailing cells

    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    assert "3 experiments, 2 already done, 1 run (0 failed)" in capsys.readouterr().out
    raw = ResultsTable(table).raw_rows()
    assert len(raw) == 3 and len({r["key"] for r in raw}) == 3
    assert all(r["status"] == "ok" and r["finished_at"] and r["psnr"] for r in raw)
    after = {r["key"]: r for r in raw}
    assert after[torn_key] == before[torn_key]  # rebuilt from its result.json, not re-run
    assert float(after[lost_key]["psnr"]) == pytest.approx(float(before[lost_key]["psnr"]))
    assert table.read_bytes().endswith(b"\n")


def test_duplicate_points_run_once_retry_replaces_and_failures_exit_nonzero(tmp_path, capsys):
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"sweep: {{out: '{out}'}}\n"
        "base: {dataset: digits, image_size: 8, attack: idlg, attack_kwargs: {iterations: 3}}\n"
        "grid: {indices: [[7], [7], [5000]]}\n"  # a repeated point, and one past the 1,797 digits
    )
    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 1
    captured = capsys.readouterr()
    assert "2 experiments (1 repeated grid points run once), 0 already done, 2 run (1 failed)" in captured.out
    assert "1 of 2 experiments failed" in captured.err
    assert main(["sweep", str(config), "--quiet", "--no-report", "--retry-errors"]) == 1
    rows = ResultsTable(out / "results.csv").raw_rows()
    assert len(rows) == 2 and sorted(r["status"] for r in rows) == ["error", "ok"]


def test_grid_limit_and_bad_attack_settings_refused_before_ray(tmp_path, monkeypatch):
    import gradleak.sweep as sweep

    monkeypatch.setattr(sweep, "run_one", None)  # nothing may be scheduled
    big = {"sweep": {"out": str(tmp_path)}, "grid": {"seed": list(range(101)), "batch_size": list(range(1, 101))}}
    with pytest.raises(ConfigError, match=r"the grid has 10100 experiments, above max_experiments = 10000"):
        SweepConfig.from_dict(big, "big.toml")
    assert len(SweepConfig.from_dict({"grid": {"seed": [0, 1, 2]}}, "t", max_experiments=3).experiments()) == 3
    with pytest.raises(ConfigError, match=r"above max_experiments = 2"):
        SweepConfig.from_dict({"grid": {"seed": [0, 1, 2]}}, "t", max_experiments=2)
    bad = {"grid": {"attack_kwargs": [{"iterations": 5}, {"iterations": "lots"}]}}
    with pytest.raises(ConfigError, match=r"setting 'iterations' must be an integer, got str 'lots'"):
        SweepConfig.from_dict(bad, "bad.toml")


_TEAR_AND_KILL = """
import os, signal, sys, json
from pathlib import Path
from gradleak.sweep import ResultsTable

table, result = Path(sys.argv[1]), Path(sys.argv[2])
row = json.loads(result.read_text())
real_open = Path.open


class Torn:
    # the file object of the table opened for appending: writes half of what it is given, then the process
    # receives SIGKILL, as when a machine's OOM killer or a scheduler strikes mid-write
    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        os.fsync(self.fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.fh.__exit__(*exc)


def tearing_open(self, mode="r", *args, **kwargs):
    fh = real_open(self, mode, *args, **kwargs)
    return Torn(fh) if self == table and mode == "a" else fh


Path.open = tearing_open
ResultsTable(table).append(row)
print("not killed")
"""


def test_a_real_sigkill_mid_append_then_rerun_leaves_one_complete_row_each(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "sweep"
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL.format(out=out, seeds="[3, 4]"))
    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    table = ResultsTable(out / "results.csv")
    rows = table.read()
    victim = rows[-1]["key"]
    table.write_all(rows[:-1])  # the state just before that row's append: result.json written, row not yet
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", _TEAR_AND_KILL, str(table.path),
                             str(out / "runs" / victim / "result.json")], capture_output=True, text=True,
                            timeout=120, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not table.path.read_bytes().endswith(b"\n")  # the table really ends in half a row
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet", "--no-report"]) == 0
    assert "2 experiments, 2 already done, 0 run" in capsys.readouterr().out
    raw = table.raw_rows()
    assert len(raw) == 2 and {r["key"] for r in raw} == {r["key"] for r in rows}
    assert all(r["status"] == "ok" and float(r["psnr"]) > 0 for r in raw)
