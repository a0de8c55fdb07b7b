"""lysep benchmark suite.

    python -m bench [--quick] [--out DIR] [--threads N] [--no-torch] [--only a,b,...]

Sections: sweep (a, c), gd (b), accuracy (d), memory (e), cnn (f), scaling, dtypes.
Writes DIR/bench.json, DIR/report.md and DIR/scaling.png (if matplotlib is installed)
and prints the ratios.  --quick shrinks every size (CI smoke run, a few minutes);
without torch installed the torch rows are skipped with a note.
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

from . import _common
from ._common import Section, import_torch, pinned_threads

SECTIONS = ("sweep", "gd", "accuracy", "memory", "cnn", "scaling", "dtypes")

FULL = dict(
    sweep={"small": ((20, 19, 3000), 5, 15), "medium": ((128, 9, 20000), 2, 7),
           "large": ((512, 4, 50000), 1, 5)},
    gemm_size=3000,
    gd=[((20, 19, 3000), 2, 11, 0.3), ((512, 4, 50000), 1, 5, 0.0)],
    accuracy=dict(budget=45.0, gd_grid=(0.1, 0.3, 1.0), adam_grid=(1e-3, 3e-3, 1e-2, 3e-2)),
    dtype_sweeps=300,
    memory=(50000, 512, 4, 1),
    cnn=dict(n=1000, warmup=1, rounds=7, min_sample=0.3),
    scaling=dict(axes={"N": [(32, 8, n) for n in (2500, 5000, 10000, 20000, 40000)],
                       "depth": [(32, d, 10000) for d in (2, 4, 8, 16, 32)],
                       "width": [(w, 4, 10000) for w in (16, 32, 64, 128, 256)]},
                 warmup=2, rounds=5),
    dtypes=((512, 4, 50000), 1, 5),
)

QUICK = dict(
    sweep={"small": ((20, 19, 3000), 2, 3), "medium": ((128, 9, 2000), 1, 3),
           "large": ((512, 4, 2000), 1, 3)},
    gemm_size=1000,
    gd=[((20, 19, 3000), 1, 3, 0.05), ((512, 4, 2000), 1, 3, 0.0)],
    accuracy=dict(budget=5.0, gd_grid=(0.3,), adam_grid=(3e-3, 1e-2)),
    dtype_sweeps=30,
    memory=(10000, 512, 4, 1),
    cnn=dict(n=200, warmup=1, rounds=3, min_sample=0.05),
    scaling=dict(axes={"N": [(32, 4, n) for n in (1000, 2000, 4000)],
                       "depth": [(32, d, 2000) for d in (2, 4, 8)],
                       "width": [(w, 4, 2000) for w in (16, 32, 64)]},
                 warmup=1, rounds=3),
    dtypes=((512, 4, 2000), 1, 3),
)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (CI smoke run)")
    ap.add_argument("--out", default="bench-results", help="output folder (default bench-results/)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and torch threads for every measurement (default 1)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - set(SECTIONS)
    if bad:
        ap.error(f"unknown section(s) {sorted(bad)}; choose from {SECTIONS}")
    cfg = QUICK if args.quick else FULL
    allocator = _common.steady_allocator()
    torch = import_torch(disabled=args.no_torch)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    rec = {"quick": args.quick, "argv": argv, "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "environment": _common.environment(args.threads), "sections": {}, "notes": []}
    rec["environment"]["allocator"] = allocator
    if torch is None:
        rec["torch_note"] = _common.torch_note()
        log(rec["torch_note"])
    e = rec["environment"]
    log(f"lysep {e['lysep']} from {e['lysep_path']}; numpy {e['numpy']}, scipy {e['scipy']}, "
        f"torch {e['torch']}; {e['cpu']} x{e['logical_cpus']}; threads {args.threads}; load {e['load_average_start']}")

    def section(name, fn):
        with Section(name, log) as s:
            with pinned_threads(args.threads):
                rec_value = fn()
        rec["sections"][name] = s.record()
        return rec_value

    if "sweep" in only:
        from .sweep import compare_backends
        rec["sweep"] = {}
        for key, ((w, d, N), warm, rounds) in cfg["sweep"].items():
            sizes = (2,) + (w,) * d + (2,)
            rec["sweep"][key] = section(f"(a,c) sweep {key} {d}x{w} N={N}",
                                        lambda: compare_backends(sizes, N, warm, rounds, cfg["gemm_size"], log))
            r = rec["sweep"][key]
            log(f"   -> reference/compiled {r['speedup_median']:.2f}x; compiled "
                f"{r['backends']['compiled']['gflops']:.1f} GFLOP/s = "
                f"{r['compiled_fraction_of_dgemm_median']:.2f} of DGEMM ({r['dgemm_gflops_median']:.1f})")

    if "gd" in only:
        rec["gd_torch"] = {"rows": []}
        if torch is None:
            rec["gd_torch"]["note"] = _common.torch_note()
        else:
            from .gd_torch import gd_vs_torch
            for (w, d, N), warm, rounds, min_s in cfg["gd"]:
                for dt in (np.float64, np.float32):
                    r = section(f"(b) GD {d}x{w} N={N} {np.dtype(dt).name}",
                                lambda: gd_vs_torch(w, d, N, dt, warm, rounds, min_s, log,
                                                    threads=args.threads))
                    rec["gd_torch"]["rows"].append(r)
                    log(f"   -> lysep/torch {r['lysep_over_torch_median']:.2f} "
                        f"({r['lysep_ms_per_iteration']:.2f} vs {r['torch_ms_per_iteration']:.2f} ms/it)")

    if "accuracy" in only:
        from .accuracy import time_to_accuracy
        a = cfg["accuracy"]
        rec["time_to_accuracy"] = section("(d) time to 99%", lambda: time_to_accuracy(
            a["budget"], a["gd_grid"], a["adam_grid"], args.threads, log))

    if "memory" in only:
        from .memory import peak_memory
        N, w, d, sweeps = cfg["memory"]
        m = section(f"(e) memory {d}x{w} N={N}", lambda: peak_memory(N, w, d, sweeps, args.threads, log))
        m.update(N=N, width=w, depth=d, sweeps=sweeps)
        rec["memory"] = m

    if "cnn" in only:
        from .cnn import available, cnn_compare
        if available():
            c = cfg["cnn"]
            rec["cnn"] = section("(f) CNN", lambda: cnn_compare(c["n"], np.float64, c["warmup"], c["rounds"],
                                                               c["min_sample"], log))
        else:
            rec["cnn"] = {"available": False, "note": "CNN not available (no lysep._cnn / CNNClassifier): skipped"}
            log("   CNN not available: skipped")

    if "scaling" in only:
        from .sweep import scaling
        s = cfg["scaling"]
        rec["scaling"] = section("scaling", lambda: scaling(s["axes"], s["warmup"], s["rounds"], log))

    if "dtypes" in only:
        from .accuracy import dtype_accuracy
        from .sweep import compare_dtypes
        (w, d, N), warm, rounds = cfg["dtypes"]
        sizes = (2,) + (w,) * d + (2,)
        rec["dtypes"] = {}
        rec["dtypes"]["speed"] = section(f"float32 vs float64 sweep {d}x{w} N={N}", lambda: compare_dtypes(
            sizes, N, warm, rounds, cfg["gemm_size"], log))
        log(f"   -> float32 speed-up {rec['dtypes']['speed']['speedup_f32_over_f64_median']:.2f}x")
        rec["dtypes"]["accuracy"] = section("float32 vs float64 accuracy", lambda: dtype_accuracy(
            cfg["dtype_sweeps"], args.threads, log))

    rec["load_average_end"] = _common.load()
    rec["total_seconds"] = time.perf_counter() - t_start
    if args.quick:
        rec["notes"].append("Quick mode: sizes reduced (see each section); figures are for checking "
                            "that the suite runs, not for the targets.")
    from .report import markdown, plot_scaling, targets
    png = plot_scaling(rec, os.path.join(args.out, "scaling.png")) if "scaling" in rec else None
    if "scaling" in rec and png is None:
        rec["notes"].append("matplotlib not available: no scaling plot.")
    rec = _jsonable(rec)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(rec, f, indent=1)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown(rec, png))
    log("")
    log("Targets:" + ("  (--quick sizes: a smoke run, not the target configuration)" if args.quick else ""))
    for what, goal, got, ok in targets(rec):
        log(f"  {what:75s} {goal:>8s}  {got:>8s}  {'holds' if ok else 'MISSES'}")
    log(f"wrote {os.path.join(args.out, 'report.md')} and bench.json ({rec['total_seconds']:.0f} s)")
    return rec


if __name__ == "__main__":
    main()
