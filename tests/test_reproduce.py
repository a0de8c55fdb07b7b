"""End-to-end checks of ``lysep reproduce`` and ``lysep demo`` (the installed CLI, run as a
subprocess from a scratch folder), and unit tests of the runner's pure parts."""
import csv
import json
import math
import subprocess
import sys

import pytest

from lysep.__main__ import build_parser
from lysep.experiments import (RunSpec, _status, choose_learning_rate, comparison_lines, decode_labels,
                               diverged, encode_labels, make_grid, make_spec, read_record,
                               train_ce_at)

EXPERIMENTS = ("circle", "interface")


def lysep_cli(*args, cwd):
    """Run ``python -m lysep ARGS`` from `cwd` (not the source tree, so the installed
    package with its compiled modules is the one imported)."""
    proc = subprocess.run([sys.executable, "-m", "lysep", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module", params=EXPERIMENTS)
def quick(request, tmp_path_factory):
    """One ``reproduce <experiment> --quick`` run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp(request.param)
    proc = lysep_cli("reproduce", request.param, "--quick", "--out", "out", "--jobs", "2",
                     cwd=tmp)
    return request.param, tmp / "out", proc


def test_quick_writes_consistent_outputs(quick):
    experiment, out, proc = quick
    grid = make_grid(experiment, quick=True)
    n_cells = len(grid.times) * len(grid.architectures)

    n_models = 1 + len(grid.gd_budgets)                             # LySep + GD per budget
    assert grid.gd_budgets == (grid.lysep_iter, grid.gd_iter)
    rows = read_csv(out / "table.csv")
    assert len(rows) == n_cells * n_models
    assert {(r["solver"], int(r["max_iter"])) for r in rows} == {
        ("lysep", grid.lysep_iter), *(("gd", n) for n in grid.gd_budgets)}
    assert all(int(r["n_seeds"]) == len(grid.seeds) for r in rows)
    table_md = (out / "table.md").read_text()
    assert table_md.strip() in proc.stdout                           # printed too
    main, _, comparison = table_md.partition("against gradient descent's")
    assert sum(line.startswith("| ") for line in main.splitlines()) == 1 + n_cells * n_models
    assert sum(line.startswith("| ") for line in comparison.splitlines()) == 1 + n_cells

    records = sorted((out / "runs").glob("*.json"))
    assert len(records) == n_cells * n_models * len(grid.seeds)     # one JSON per run
    info = json.loads((out / "grid.json").read_text())
    chosen = {int(n): b["chosen"] for n, b in info["tuning"]["budgets"].items()}
    assert set(chosen) == set(grid.gd_budgets)
    assert all(lr in grid.learning_rates for lr in chosen.values())
    assert info["tuning"]["chosen"] == chosen[grid.gd_iter]
    for n, lr in chosen.items():
        assert f"{lr:g} for {n}" in table_md
    for path in records:
        r = json.loads(path.read_text())
        c = r["config"]
        assert path.stem == RunSpec(**c).name()
        assert len(r["loss_curve"]) == len(r["accuracy_curve"]) == r["n_iter"] + 1
        assert r["versions"]["lysep"] and r["wall_time_s"] > 0
        assert r["loss_curve"][-1] == r["train_ce"]
        assert decode_labels(r["label_map"]["data"]).shape == (r["label_map"]["size"],) * 2
        if c["solver"] == "lysep":
            assert c["max_iter"] == grid.lysep_iter and r["bound_holds"]
            assert len(r["surrogate_curve"]) == len(r["loss_curve"])
        else:
            assert c["max_iter"] in grid.gd_budgets
            assert c["learning_rate"] == chosen[c["max_iter"]]
    assert len(read_csv(out / "runs.csv")) == len(records)
    pytest.importorskip("matplotlib")
    pngs = {p.name for p in out.glob("*.png")}
    suffixes = [""] if experiment == "circle" else [f"_t{t:g}" for t in grid.times]
    assert pngs == {f"{kind}{s}.png" for kind in ("curves", "label_maps") for s in suffixes}


def test_table_only_rebuilds_the_same_table(quick):
    experiment, out, _ = quick
    before = {name: (out / name).read_text() for name in ("table.md", "table.csv", "runs.csv")}
    for name in before:
        (out / name).unlink()
    proc = lysep_cli("reproduce", experiment, "--table-only", "--out", "out",
                     "--no-figures", cwd=out.parent)
    assert "to train" not in proc.stderr                             # nothing trained
    assert {name: (out / name).read_text() for name in before} == before


def test_resume_trains_only_missing_runs(quick):
    experiment, out, _ = quick
    victim = sorted((out / "runs").glob("lysep-*.json"))[-1]
    old = json.loads(victim.read_text())
    victim.unlink()
    victim.with_suffix(".npz").unlink()
    others = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    proc = lysep_cli("reproduce", experiment, "--quick", "--out", "out", "--jobs", "2",
                     "--no-figures", cwd=out.parent)
    assert "0 to train" in proc.stderr and "1 to train" in proc.stderr   # tuning, main grid
    assert victim.exists() and victim.with_suffix(".npz").exists()
    assert {p: p.stat().st_mtime_ns for p in others} == others           # untouched
    new = json.loads(victim.read_text())
    assert new["config"] == old["config"]
    assert new["loss_curve"] == old["loss_curve"]                       # deterministic
    info = json.loads((out / "grid.json").read_text())
    assert [s["runs_trained"] for s in info["sessions"]][-1] == 1


def test_a_record_from_another_configuration_is_refused(tmp_path):
    grid = make_grid("circle", quick=True)
    spec = make_spec(grid, None, (3, 20), "lysep", 0)
    path = tmp_path / f"{spec.name()}.json"
    other = make_spec(make_grid("circle"), None, (3, 20), "lysep", 0)   # 300 sweeps, not 50
    path.write_text(json.dumps({"config": other.config()}))
    with pytest.raises(RuntimeError, match="different configuration"):
        read_record(path, spec)
    assert read_record(path, other)["config"] == other.config()


def test_demo_quick_prints_both_solvers(tmp_path):
    proc = lysep_cli("demo", "--quick", cwd=tmp_path)
    out = proc.stdout
    assert "LySep (30 sweeps)" in out and "GD (30 its" in out and "GD (300 its" in out
    for row in ("final training CE", "training accuracy", "test accuracy", "wall time"):
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert len(line.split()) >= len(row.split()) + 3               # one value per run


# -- learning-rate choice ---------------------------------------------------------------

def test_lowest_mean_final_ce_wins():
    results = {0.01: [(0.69, False), (0.60, False)],
               0.1: [(0.40, False), (0.30, False)],
               1.0: [(0.20, False), (0.60, False)]}
    assert choose_learning_rate(results) == 0.1


def test_a_rate_diverging_in_any_cell_is_excluded():
    results = {0.1: [(0.30, False), (0.30, False)],
               3.0: [(0.01, False), (0.05, True)]}
    assert choose_learning_rate(results) == 0.1


def test_ties_go_to_the_smaller_rate_and_all_diverged_falls_back_to_the_smallest():
    assert choose_learning_rate({0.3: [(0.5, False)], 0.1: [(0.5, False)]}) == 0.1
    assert choose_learning_rate({1.0: [(0.1, True)], 0.3: [(0.2, True)]}) == 0.3


def test_diverged_means_non_finite_or_above_the_start():
    base = {"status": "completed", "initial_train_ce": 0.69}
    assert not diverged({**base, "train_ce": 0.5})
    assert diverged({**base, "train_ce": 0.9})
    assert diverged({**base, "train_ce": math.nan})
    assert diverged({**base, "status": "diverged", "train_ce": 0.6})


# -- small pieces -------------------------------------------------------------------------

def test_label_maps_round_trip():
    import numpy as np
    labels = (np.random.default_rng(0).random((200, 200)) > 0.5).astype(np.uint8)
    assert np.array_equal(decode_labels(encode_labels(labels)), labels)


def test_full_grids_are_the_documented_ones():
    circle, interface = make_grid("circle"), make_grid("interface")
    assert [d for d, _ in circle.architectures] == [3, 5, 9, 14, 19]
    assert (circle.lysep_iter, circle.gd_iter, len(circle.seeds)) == (300, 3000, 10)
    assert len(interface.times) == 4 and len(interface.architectures) == 3
    assert (circle.n_train, circle.n_test) == (3000, 1000)


def test_parser_has_the_subcommands():
    parser = build_parser()
    args = parser.parse_args(["reproduce", "circle", "--quick", "--seeds", "3", "--jobs", "1"])
    assert (args.experiment, args.quick, args.seeds, args.jobs) == ("circle", True, 3, 1)
    assert parser.parse_args(["demo", "--quick"]).quick
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "mnist"])
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "circle", "--jobs", "0"])


def test_matplotlib_missing_skips_figures(tmp_path, monkeypatch, capsys):
    import builtins
    from lysep import experiments
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert experiments.make_figures([{"config": {}}], tmp_path) == []
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_quick_finishes_its_tuning_seed_run_by_reuse(quick):
    experiment, out, _ = quick
    info = json.loads((out / "grid.json").read_text())
    lr, seed, n = info["tuning"]["chosen"], info["tuning"]["seed"], info["tuning"]["n_iter"]
    mains = list((out / "runs").glob(f"gd-it{n}-*-seed{seed}.json"))
    assert mains
    for main in mains:
        stem = main.stem.replace("gd-", f"gd-lr{lr:g}-", 1)
        tuned = json.loads((out / "tuning" / f"{stem}.json").read_text())
        assert json.loads(main.read_text())["loss_curve"] == tuned["loss_curve"]


def test_the_equal_budget_gd_run_is_the_start_of_the_long_one(quick):
    """GD is deterministic: the short-budget run is the first iterations of the long
    tuning run at its rate, so tuning the short budget on the long runs' curves tunes
    exactly the short runs."""
    experiment, out, _ = quick
    grid = make_grid(experiment, quick=True)
    short, long_ = grid.gd_budgets
    seed = grid.seeds[0]
    runs = list((out / "runs").glob(f"gd-it{short}-*-seed{seed}.json"))
    assert len(runs) == len(grid.cells)
    for path in runs:
        a = json.loads(path.read_text())
        stem = path.stem.replace(f"gd-it{short}-", f"gd-lr{a['config']['learning_rate']:g}"
                                                   f"-it{long_}-", 1)
        b = json.loads((out / "tuning" / f"{stem}.json").read_text())
        assert a["loss_curve"] == b["loss_curve"][:short + 1]


def test_training_ce_and_divergence_at_an_iteration():
    r = {"status": "completed", "initial_train_ce": 0.7, "train_ce": 0.2,
         "loss_curve": [0.7, 0.9, 0.5, 0.2]}
    assert train_ce_at(r) == 0.2 and train_ce_at(r, 2) == 0.5 and train_ce_at(r, 9) == 0.2
    assert diverged(r, 1) and not diverged(r, 2) and not diverged(r)
    # stopped by a non-finite loss at its 3rd step: fine before, diverged from then on
    stopped = {"status": "diverged", "initial_train_ce": 0.7, "train_ce": 0.5,
               "loss_curve": [0.7, 0.6, 0.5]}
    assert not diverged(stopped, 2) and diverged(stopped, 3) and diverged(stopped)


def test_comparison_counts_the_cells_where_lysep_is_lower():
    def row(solver, n, ce, depth):
        return {"experiment": "circle", "time": None, "depth": depth, "width": 20,
                "solver": solver, "max_iter": n, "train_ce_mean": ce}
    rows = [row("gd", 300, 0.4, 3), row("gd", 3000, 0.05, 3), row("lysep", 300, 0.1, 3),
            row("gd", 300, 0.69, 19), row("gd", 3000, 0.69, 19), row("lysep", 300, 0.04, 19)]
    text = "\n".join(comparison_lines(rows))
    assert "| 3 × 20 | 0.25 | 2 |" in text and "| 19 × 20 | 0.058 | 0.058 |" in text
    assert ("LySep lower in 2 of 2 cells against 300 GD iterations; "
            "1 of 2 cells against 3000 GD iterations.") in text


def test_only_a_non_finite_loss_makes_a_run_diverged():
    class Fit:
        n_iter_ = 300
    spec = make_spec(make_grid("circle"), None, (19, 20), "lysep", 0)
    rounding = ("NumericalWarning: in float64 the residuals of this network carry rounding "
                "of about 0.0007 in J (J = 0.04): ...")
    assert _status(Fit(), spec, [rounding]) == "completed"
    assert _status(Fit(), spec, ["NumericalWarning: gd: the training loss became non-finite "
                                 "at iteration 7; kept the last finite parameters."]) == "diverged"
    Fit.n_iter_ = 12
    assert _status(Fit(), spec, []) == "stopped"
