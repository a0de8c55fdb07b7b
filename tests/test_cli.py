"""`lysep train / predict / info` as a user runs them: subprocesses on real files."""
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import lysep
from lysep._activation import simd_level
from lysep.datasets import circle


def run(*args, cwd=None, ok=True, env=None):
    # never from the source tree: `python -m` puts the working directory on sys.path
    proc = subprocess.run([sys.executable, "-m", "lysep", *args], capture_output=True,
                          text=True, cwd=cwd or tempfile.gettempdir(),
                          env=None if env is None else os.environ | env)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    X, y = circle(400, random_state=0)
    names = np.array(["outside", "inside"])
    for name, rows in (("train.csv", slice(0, 300)), ("test.csv", slice(300, 400))):
        with open(tmp / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["label", "x0", "x1"])               # the target need not be last
            for xi, yi in zip(X[rows], y[rows]):
                w.writerow([names[yi], repr(float(xi[0])), repr(float(xi[1]))])
    return tmp, X, names[y]


def test_train_then_predict_gives_the_models_predictions(csv_files):
    tmp, X, labels = csv_files
    out = run("train", "--data", "train.csv", "--target", "label", "--hidden-layer-sizes",
              "10,10", "--max-iter", "30", "--random-state", "0", "--model", "m.npz",
              "--test-data", "test.csv", cwd=tmp)
    assert "test accuracy" in out.stdout
    report = json.loads((tmp / "m.json").read_text())
    assert report["n_iter"] == 30 and report["classes"] == ["inside", "outside"]
    assert report["params"]["hidden_layer_sizes"] == [10, 10]
    assert report["final_accuracy"] > 0.8 and len(report["loss_curve"]) == 31
    run("predict", "m.npz", "test.csv", "--output", "pred.csv", cwd=tmp)
    with open(tmp / "pred.csv") as fh:
        pred = [r[0] for r in csv.reader(fh)][1:]
    model = lysep.load(tmp / "m.npz")
    np.testing.assert_array_equal(pred, model.predict(X[300:]))
    proba = run("predict", "m.npz", "test.csv", "--proba", cwd=tmp).stdout.splitlines()
    assert proba[0] == "proba_inside,proba_outside"
    np.testing.assert_array_equal(np.array([[float(v) for v in r.split(",")] for r in proba[1:]]),
                                  model.predict_proba(X[300:]))


def test_train_on_npz_with_estimator_flags(tmp_path):
    X, y = circle(200, random_state=1)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    run("train", "--data", "d.npz", "--solver", "gd", "--learning-rate-init", "0.5",
        "--max-iter", "20", "--dtype", "float32", "--model", "g.npz", cwd=tmp_path)
    model = lysep.load(tmp_path / "g.npz")
    assert model.solver == "gd" and model.coefs_[0].dtype == np.float32 and model.n_iter_ == 20
    out = run("predict", "g.npz", "d.npz", cwd=tmp_path).stdout.splitlines()
    assert len(out) == 201


def test_train_low_memory_gives_the_default_model(tmp_path):
    """--low-memory trains the same model (to rounding) and is saved as a parameter."""
    X, y = circle(300, random_state=2)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    for flag, name in (([], "a.npz"), (["--low-memory"], "b.npz")):
        run("train", "--data", "d.npz", "--hidden-layer-sizes", "8,8,8", "--max-iter", "10",
            "--random-state", "0", "--model", name, *flag, cwd=tmp_path)
    a, b = lysep.load(tmp_path / "a.npz"), lysep.load(tmp_path / "b.npz")
    assert b.low_memory is True and a.low_memory is False
    np.testing.assert_allclose(b.surrogate_curve_, a.surrogate_curve_, rtol=1e-8)


def test_train_ridge_fallback_is_saved_and_trains_deep_networks_further(tmp_path):
    """--ridge-fallback reaches the model's parameter and survives save/load; on a deep
    network the default ("closest") ends lower in J than "min_norm"."""
    X, y = circle(400, random_state=0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    for flag, name in (([], "a.npz"), (["--ridge-fallback", "min_norm"], "b.npz")):
        run("train", "--data", "d.npz", "--hidden-layer-sizes", ",".join(["20"] * 19),
            "--max-iter", "40", "--random-state", "0", "--model", name, *flag, cwd=tmp_path)
    a, b = lysep.load(tmp_path / "a.npz"), lysep.load(tmp_path / "b.npz")
    assert a.ridge_fallback == "closest" and b.ridge_fallback == "min_norm"
    assert a.surrogate_curve_[-1] < b.surrogate_curve_[-1]


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "nope.csv", "--target", "y"], "does not exist"),
    (["train", "--data", "train.csv", "--target", "label", "--ridge-fallback", "svd"],
     "ridge_fallback"),
    (["train", "--data", "train.csv"], "--target is required"),
    (["train", "--data", "train.csv", "--target", "zz"], "is not a column"),
    (["train", "--data", "train.csv", "--target", "label", "--activation", "swish"], "activation"),
    (["train", "--data", "train.csv", "--target", "label", "--hidden-layer-sizes", "a,b"],
     "comma-separated integers"),
    (["predict", "missing.npz", "test.csv"], "not a lysep model"),
])
def test_bad_invocations_fail_with_a_message(csv_files, args, message):
    tmp, _, _ = csv_files
    proc = run(*args, cwd=tmp, ok=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_reports_kernels_and_blas():
    rec = json.loads(run("info", "--json").stdout)
    assert rec["lysep"] == lysep.__version__
    assert rec["kernels"]["_fnn_blocks.ridge_update"] == ["float32", "float64"]
    assert rec["blas"] and all(lib["num_threads"] >= 1 for lib in rec["blas"])
    assert rec["activation_simd"] in ("baseline", "avx2+fma", "avx512")
    # five vectors of the widest SIMD level: 2, 4 or 8 doubles each (twice the floats)
    assert rec["narrow_width"]["float64"] in (10, 20, 40)
    assert rec["narrow_width"]["float32"] == 2 * rec["narrow_width"]["float64"]
    assert isinstance(rec["openmp"], bool)
    text = run("info").stdout
    assert "compiled kernels" in text and "BLAS" in text
    assert f"up to {rec['narrow_width']['float64']} float64" in text
    assert isinstance(rec["notes"], list)


def test_blas_kernel_note_names_the_fix_only_where_it_applies():
    from lysep._threads import blas_kernel_note
    libs = [{"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell"},
            {"internal_api": "mkl", "version": "2025", "architecture": None}]
    note = blas_kernel_note("avx512", libs)
    assert "OPENBLAS_CORETYPE=SKYLAKEX" in note and "openblas 0.3.31 (Haswell)" in note
    assert "mkl" not in note
    assert blas_kernel_note("avx2+fma", libs) is None          # AVX2 kernels are right there
    assert blas_kernel_note("avx512", [libs[0] | {"architecture": "SkylakeX"}]) is None
    assert blas_kernel_note("avx512", [libs[0] | {"architecture": "Cooperlake"}]) is None
    assert blas_kernel_note("avx512", libs[1:]) is None


@pytest.mark.skipif(simd_level() != "avx512", reason="needs an AVX-512 CPU")
def test_info_notes_avx2_blas_kernels_on_an_avx512_cpu():
    # OpenBLAS takes its kernel set from the environment when it loads: force each one
    slow = json.loads(run("info", "--json", env={"OPENBLAS_CORETYPE": "HASWELL"}).stdout)
    assert any("OPENBLAS_CORETYPE" in n for n in slow["notes"])
    assert "note: " in run("info", env={"OPENBLAS_CORETYPE": "HASWELL"}).stdout
    fast = json.loads(run("info", "--json", env={"OPENBLAS_CORETYPE": "SKYLAKEX"}).stdout)
    assert fast["notes"] == []


def test_help_is_complete():
    for command in ("train", "predict", "info"):
        text = run(command, "--help").stdout
        assert "usage: lysep" in text
    text = run("train", "--help").stdout
    for flag in ("--penalty-scale", "--hidden-layer-sizes", "--early-stopping", "--n-threads"):
        assert flag in text
