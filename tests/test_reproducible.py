"""Same seed, same numbers: two processes running ``gradleak demo --seed 3`` write identical metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what may differ between two runs of the same command: times
VOLATILE = {"wall_time_s"}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@pytest.mark.numerics  # same seed, same path, twice: exact
def test_demo_twice_gives_identical_numbers(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADLEAK_CACHE": str(tmp_path / "cache")}
    runs = []
    for name in ("first", "second"):
        done = subprocess.run([sys.executable, "-m", "gradleak.cli", "demo", "--seed", "3", "--iterations", "100",
                               "--quiet", "--out", str(tmp_path / name)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    first, second = (_strip(r) for r in runs)
    assert first == second
    assert first["mean"]["psnr"] is not None and first["iterations"] == 100
    compute = first["details"]["compute"]
    # metrics.json says which evaluation path, convolution backend and denormal mode produced it (nothing timed)
    assert compute["conv_backend"] in ("mkldnn", "native")
    assert compute["evaluation"] in ("autograd", "torch.func") and compute["fallback"] is None
    assert isinstance(compute["flush_denormals"], bool)
