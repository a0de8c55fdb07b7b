"""`lysep reproduce cnn` through the FNN experiments' runner (real Fashion-MNIST files)."""
import json
import os
import subprocess
import sys

import pytest

from lysep.datasets import FASHION_MNIST_DIR

needs_data = pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                                reason="apt-get install dataset-fashion-mnist")


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lysep", *args], capture_output=True,
                          text=True, cwd=cwd)


@needs_data
def test_reproduce_cnn_quick_writes_table_and_records(tmp_path):
    proc = run("reproduce", "cnn", "--quick", "--out", "out", "--no-figures", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    records = sorted((out / "runs").glob("*.json"))
    assert len(records) == 4                          # 2 architectures x 2 solvers x 1 seed
    rec = json.loads(records[-1].read_text())
    assert rec["config"]["experiment"] == "cnn" and rec["config"]["batch_size"] == 250
    assert rec["curve_iterations"][0] == 0 and rec["curve_iterations"][-1] == 10
    lysep_records = [json.loads(p.read_text()) for p in records if p.name.startswith("lysep")]
    assert all(r["bound_holds"] for r in lysep_records)
    table = (out / "table.md").read_text()
    assert "LySep-CNN" in table and "CE-CNN" in table and "Conv layers × channels" in table
    again = run("reproduce", "cnn", "--quick", "--out", "out", "--no-figures", cwd=tmp_path)
    assert "4 already recorded" in again.stderr or "0 to train" in again.stderr


def test_data_flags_belong_to_the_cnn_experiment(tmp_path):
    proc = run("reproduce", "circle", "--quick", "--data-dir", "x", cwd=tmp_path)
    assert proc.returncode == 2 and "for the cnn experiment" in proc.stderr
