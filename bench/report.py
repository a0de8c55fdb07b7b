"""Markdown report, targets table and the scaling plot from the suite's JSON record."""
import os


def _f(x, fmt="{:.2f}", none="—"):
    if x is None:
        return none
    try:
        return fmt.format(x)
    except (TypeError, ValueError):
        return str(x)


def _ms(x):
    return _f(None if x is None else x * 1e3, "{:.1f}")


def _yes(ok):
    return "n/a" if ok is None else ("**holds**" if ok else "**misses**")


def targets(rec):
    """[(what, target, measured, holds)] from the record."""
    rows = []
    sw = rec.get("sweep", {})
    for key, goal in (("small", 5.0), ("medium", 2.0), ("large", 1.5)):
        r = sw.get(key)
        if r:
            sp = r["speedup_median"]
            h = r["hidden"]
            rows.append((f"(a) sweep compiled vs reference, {key} ({h[1]}x{h[0]}, N={r['N']:,})",
                         f">= {goal:g}x", f"{sp:.2f}x", sp >= goal))
    for r in rec.get("gd_torch", {}).get("rows", []):
        goal = 1.0 if r["width"] <= 20 else 1.2
        v = r["lysep_over_torch_median"]
        rows.append((f"(b) GD iteration lysep/torch, width {r['width']} x{r['depth']}, N={r['N']:,}, {r['dtype']}",
                     f"<= {goal:g}", f"{v:.2f}", v <= goal))
    large = sw.get("large")
    if large:
        fr = large["compiled_fraction_of_dgemm_median"]
        rows.append(("(c) sweep GFLOP/s / DGEMM GFLOP/s, large", ">= 0.60", f"{fr:.2f}", fr >= 0.6))
    mem = rec.get("memory", {})
    for mode in ("state", "fit", "state_low_memory", "fit_low_memory"):
        r = mem.get(mode)
        if r and "error" not in r:
            v = r["rss_over_minimum"]
            label = mode.replace("_low_memory", ", low_memory=True")
            rows.append((f"(e) peak RSS / minimum (Z + data), {label}", "<= 1.5", f"{v:.2f}", v <= 1.5))
    return rows


def _machine(rec):
    e = rec["environment"]
    lines = ["| | |", "|---|---|"]
    for k, label in (("cpu", "CPU"), ("cpu_flags", "vector ISA"), ("logical_cpus", "logical CPUs"),
                     ("memory_gib", "memory (GiB)"), ("platform", "platform"), ("python", "Python"),
                     ("numpy", "NumPy"), ("scipy", "SciPy"), ("threadpoolctl", "threadpoolctl"),
                     ("lysep", "lysep"), ("source_commit", "source commit"), ("torch", "PyTorch"),
                     ("torch_blas", "PyTorch BLAS"), ("matplotlib", "matplotlib")):
        v = e.get(k)
        if isinstance(v, list):
            v = ", ".join(map(str, v))
        lines.append(f"| {label} | {v if v is not None else '—'} |")
    lines.append(f"| threads used (BLAS and torch) | {e['threads_used']} |")
    lines.append(f"| load average at start / end | {e.get('load_average_start')} / {rec.get('load_average_end')} |")
    lines.append(f"| memory allocator | {e.get('allocator', 'default')} |")
    out = ["\n".join(lines), "", "BLAS / OpenMP libraries loaded (threadpoolctl; thread counts are the "
           "libraries' defaults — every measurement runs under `threadpool_limits(threads)`):", "",
           "| user_api | library | version | architecture | threading | default threads | file |",
           "|---|---|---|---|---|---|---|"]
    for d in e["blas_libraries_default_threads"]:
        out.append(f"| {d['user_api']} | {d['internal_api']} | {d.get('version')} | {d.get('architecture')} | "
                   f"{d.get('threading_layer')} | {d['num_threads']} | `{d['file']}` |")
    if e.get("blas_note"):            # lysep info prints the same note
        out += ["", f"Note: {e['blas_note']}."]
    return "\n".join(out)


def _sweep_section(rec):
    sw = rec["sweep"]
    out = ["## (a) One LySep sweep: compiled kernels vs the NumPy reference backend", "",
           "Same-run ratios: the two states (same initial values, float64) and one square DGEMM "
           "are run round-robin, the order rotated each round; the ratio is the median of the "
           "per-round ratios reference/compiled. *Rows/sample* is the mean number of line-search "
           "trial evaluations per sample and hidden layer in the timed sweeps (from the step "
           "memory, see `bench/flops.py`); the work-normalised ratio divides each backend's time by "
           "its own model flops, removing differences in line-search work. *Low-memory*: the compiled "
           "sweep with `low_memory=True` (residuals recomputed, see (e)) timed in the same rounds, and "
           "its time over the default compiled sweep's. *2 threads*: the compiled sweep with "
           "`n_threads=2` for its Z steps and ridge blocks (BLAS still on one thread; the same results bit for "
           "bit) timed in the same rounds, and the one-thread sweep's time over its time "
           "(where lysep was built with OpenMP and the layers are narrow; else no row blocks "
           "run in parallel).", "",
           "| size | N | warm-up + timed sweeps | reference | compiled | ratio (median) | per-round ratios | "
           "work-normalised | rows/sample ref / compiled | target | low-memory | low-memory / default | "
           "2 threads | 1 thread / 2 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    goals = {"small": 5, "medium": 2, "large": 1.5}
    for key in ("small", "medium", "large"):
        r = sw.get(key)
        if not r:
            continue
        b = r["backends"]
        pr = ", ".join(f"{x:.2f}" for x in r["speedup_per_round"])
        rps = lambda n: _f(sum(b[n]["rows_per_sample"]) / len(b[n]["rows_per_sample"]))  # noqa: E731
        out.append(f"| {key} {r['hidden'][1]}x{r['hidden'][0]} | {r['N']:,} | {r['warmup_sweeps']} + {r['rounds']} | "
                   f"{_ms(b['reference']['seconds_median'])} ms | {_ms(b['compiled']['seconds_median'])} ms | "
                   f"**{r['speedup_median']:.2f}x** | {pr} | {_f(r['speedup_work_normalised_median'])}x | "
                   f"{rps('reference')} / {rps('compiled')} | >= {goals[key]}x | "
                   f"{_ms(r.get('compiled_low_memory_seconds_median'))} ms | "
                   f"{_f(r.get('low_memory_over_default_median'))}x | "
                   f"{_ms(r.get('compiled_2_threads_seconds_median'))} ms | "
                   f"{_f(r.get('one_over_two_threads_median'))}x |")
    if rec.get("quick"):
        out += ["", f"*--quick*: medium and large use N = {sw['medium']['N']:,} and {sw['large']['N']:,} "
                "instead of 20,000 and 50,000, and fewer sweeps."]
    out += ["", "Where the time goes (median seconds per block kind in one sweep; GFLOP/s of the "
            "compiled blocks against the FLOP model):", "",
            "| size | backend | output | Z blocks | ridge (W) | bias | trials / sweep | ridge fallbacks / sweep |",
            "|---|---|---|---|---|---|---|---|"]
    for key in ("small", "medium", "large"):
        r = sw.get(key)
        if not r:
            continue
        for n in ("reference", "compiled"):
            s = r["backends"][n]
            bs = s["block_seconds_median"]
            tot = sum(v for v in bs.values() if v) or 1
            cells = []
            for blk in ("output", "z", "ridge", "bias"):
                c = f"{_ms(bs[blk])} ms ({100 * (bs[blk] or 0) / tot:.0f}%)"
                if n == "compiled" and s["block_gflops_median"].get(blk):
                    c += f", {s['block_gflops_median'][blk]:.1f} GF/s"
                cells.append(c)
            out.append(f"| {key} | {n} | " + " | ".join(cells) +
                       f" | {_f(sum(s['trials']) / len(s['trials']), '{:.0f}')} | "
                       f"{_f(sum(s['fallbacks']) / len(s['fallbacks']), '{:.1f}')} |")
    return "\n".join(out)


def _flops_section(rec):
    sw = rec["sweep"]
    out = ["## (c) Achieved GFLOP/s of the compiled sweep", "",
           "FLOP model: `bench/flops.py` (GEMM/SYRK/POTRF/TRSM flops per block; line-search trials "
           "counted per row actually evaluated, recovered from the per-sample step memory and "
           "checked against the sweep's `stats['trials']`; elementwise work counts zero). "
           "DGEMM: one square `scipy.linalg.blas.dgemm` (the BLAS the kernels call) timed in the "
           "same rounds as the sweeps; the fraction is the median of per-round fractions.", "",
           "| size | model GFLOP / sweep | compiled GFLOP/s | DGEMM size | DGEMM GFLOP/s | fraction of DGEMM | "
           "trial counts checked |", "|---|---|---|---|---|---|---|"]
    for key in ("small", "medium", "large"):
        r = sw.get(key)
        if not r:
            continue
        c = r["backends"]["compiled"]
        out.append(f"| {key} | {_f(c['gflop_per_sweep'], '{:.2f}')} | {_f(c['gflops'], '{:.1f}')} | {r['dgemm_size']} | "
                   f"{_f(r['dgemm_gflops_median'], '{:.1f}')} | **{_f(r['compiled_fraction_of_dgemm_median'])}** | "
                   f"{'yes' if c['trials_match'] and r['backends']['reference']['trials_match'] else 'NO'} |")
    out.append("")
    out.append("Target: >= 0.60 of DGEMM at the large size.")
    return "\n".join(out)


def _gd_section(rec):
    g = rec["gd_torch"]
    out = ["## (b) One gradient-descent iteration: lysep (compiled) vs PyTorch autograd", ""]
    if g.get("note"):
        out += [g["note"], ""]
    if not g.get("rows"):
        return "\n".join(out)
    out += ["Same-run ratios: lysep `GDState.update(); forward()` vs torch `loss.backward()` + manual "
            "SGD under `no_grad`, same tanh MLP, same initial values, lr 0.1, same thread count; "
            "interleaved, median of per-round ratios (each sample = the same number of iterations "
            "for both). Loss columns check that both compute the same thing.", "",
            "| network | N | dtype | lysep ms/it | torch ms/it | lysep/torch (median) | target | "
            "loss at start lysep / torch | loss after n it lysep / torch |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in g["rows"]:
        goal = "<= 1" if r["width"] <= 20 else "<= 1.2"
        out.append(f"| {r['depth']}x{r['width']} | {r['N']:,} | {r['dtype']} | {r['lysep_ms_per_iteration']:.2f} | "
                   f"{r['torch_ms_per_iteration']:.2f} | **{r['lysep_over_torch_median']:.2f}** | {goal} | "
                   f"{r['loss0_lysep']:.6f} / {r['loss0_torch']:.6f} | "
                   f"{r['loss_after_lysep']:.6f} / {r['loss_after_torch']:.6f} (n={r['iterations_run']}) |")
    if rec.get("quick"):
        out += ["", f"*--quick*: the width-512 rows use N = {g['rows'][-1]['N']:,} instead of 50,000."]
    return "\n".join(out)


def _acc_section(rec):
    a = rec["time_to_accuracy"]
    out = ["## (d) Time to 99% training accuracy on the circle", "",
           f"{len(a['hidden'])} hidden tanh layers of width {a['hidden'][0]}, N = {a['N']:,}, float64, "
           f"seed 0 for all, budget {a['budget_seconds']:g} s per run. Wall time from the start of "
           "`fit` (or of the torch set-up) to the first iteration with training accuracy >= 99%. "
           "Sequential runs (not interleaved): compare with the load figures in mind.", "",
           "| method | learning rate | time to 99% | iterations | final accuracy | note |",
           "|---|---|---|---|---|---|"]

    def row(name, r, note=""):
        t = f"**{r['seconds']:.2f} s**" if r["reached"] else "not reached within budget"
        return (f"| {name} | {_f(r.get('lr'), '{:g}')} | {t} | {r['iterations']} | {r['final_accuracy']:.4f} | {note} |")
    out.append(row("LySep (FNNClassifier solver='lysep')", a["lysep"]))
    grid = ", ".join(f"{r['lr']:g}" for r in a["gd_grid"])
    out.append(row("GD (solver='gd')", a["gd"], f"chosen from {{{grid}}}"))
    if a.get("adam"):
        grid = ", ".join(f"{r['lr']:g}" for r in a["adam_grid"])
        out.append(row("PyTorch Adam (full batch)", a["adam"], f"chosen from {{{grid}}}"))
    else:
        out.append("| PyTorch Adam | — | skipped: torch not available | | | |")
    out += ["", "All grid points:", "", "| method | lr | reached | seconds | iterations | final accuracy |",
            "|---|---|---|---|---|---|"]
    for name, key in (("GD", "gd_grid"), ("Adam", "adam_grid")):
        for r in a.get(key) or []:
            out.append(f"| {name} | {r['lr']:g} | {r['reached']} | {_f(r['seconds'])} | {r['iterations']} | "
                       f"{r['final_accuracy']:.4f} |")
    return "\n".join(out)


def _mem_section(rec):
    m = rec["memory"]
    out = ["## (e) Peak memory of the large case", "",
           f"Fresh subprocess per figure (`bench/_memprobe.py`), {m['depth']}x{m['width']}, N = {m['N']:,}, "
           f"float64, {m['sweeps']} sweep(s). Minimum = the Z arrays + the data. Ratios: (measured "
           "peak above the pre-method baseline + data) / minimum. 'state' = LySepState + sweep; "
           "'fit' = FNNClassifier.fit with the same sweeps; *low-memory*: the same with "
           "`low_memory=True` (the Z and one candidate array stored; residuals and activations "
           "recomputed a block of rows at a time). Peak RSS = the probe's VmHWM "
           "(getrusage's ru_maxrss, shown last, carries the parent's peak across vfork/exec on Linux).", "",
           "| mode | minimum MiB | tracemalloc peak MiB | traced / min | RSS peak above baseline MiB | RSS / min | "
           "target | seconds | ru_maxrss MiB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for mode in ("state", "fit", "state_low_memory", "fit_low_memory"):
        r = m.get(mode)
        if not r:
            continue
        label = mode.replace("_low_memory", ", low-memory")
        if "error" in r:
            out.append(f"| {label} | failed: {r['error'][-200:]} | | | | | |")
            continue
        out.append(f"| {label} | {r['minimum_mib']:.0f} | {r['tracemalloc_peak_mib']:.0f} | {r['traced_over_minimum']:.2f} | "
                   f"{r['rss_peak_mib'] - r['rss_baseline_mib']:.0f} | **{r['rss_over_minimum']:.2f}** | <= 1.5 | "
                   f"{r['seconds']:.0f} | {_f(r.get('ru_maxrss_mib'), '{:.0f}')} |")
    for mode, what in (("state", "default"), ("state_low_memory", "low-memory")):
        st = m.get(mode, {})
        if st.get("state_arrays_mib"):
            out += ["", f"Arrays the LySep state ({what}) holds after the sweep (MiB): " +
                    ", ".join(f"{k} {v:.0f}" for k, v in st["state_arrays_mib"].items()) + "."]
    if rec.get("quick"):
        out += ["", f"*--quick*: N = {m['N']:,} instead of 50,000."]
    return "\n".join(out)


def _cnn_section(rec):
    c = rec["cnn"]
    out = ["## (f) CNN", ""]
    if not c.get("available"):
        out.append(c.get("note", "CNN not available"))
        return "\n".join(out)
    out += [f"{c['architecture']}, batch of {c['N']:,} {c['data']} images, {c['dtype']}. Same-run: the "
            "LySep-CNN sweep, the lysep GD-CNN iteration and the torch iteration (conv forward + "
            "autograd backward + SGD step) are interleaved; ratios are medians of per-round ratios.", "",
            "| figure | value |", "|---|---|",
            f"| LySep-CNN sweep | {c['ms_lysep_sweep']:.1f} ms |",
            f"| lysep GD-CNN iteration | {c['ms_lysep_gd_iteration']:.1f} ms |",
            f"| sweep / GD iteration | {c['sweep_over_gd_median']:.2f} |"]
    if "ms_torch_iteration" in c:
        out += [f"| torch conv iteration | {c['ms_torch_iteration']:.1f} ms |",
                f"| lysep GD-CNN / torch | **{c['gd_over_torch_median']:.2f}** |",
                f"| LySep-CNN sweep / torch iteration | **{c['sweep_over_torch_median']:.2f}** |",
                f"| loss at start lysep / torch | {c['loss0_lysep']:.6f} / {c['loss0_torch']:.6f} |",
                f"| loss after the timed iterations lysep GD / torch | {c['loss_after_lysep_gd']:.6f} / "
                f"{c['loss_after_torch']:.6f} |"]
    else:
        out.append(f"| torch | {rec.get('torch_note')} |")
    return "\n".join(out)


def _scaling_section(rec, png):
    s = rec["scaling"]
    out = ["## Scaling of one compiled sweep", "",
           "Configurations of one axis are interleaved round by round; median seconds per sweep. "
           "The slope is the least-squares fit of log(time) on log(x); the model-flop slope shows "
           "what the FLOP model predicts (it includes the measured line-search rows, which "
           "change with the configuration); their difference is the slope of time per model "
           "flop (0: the implementation keeps its rate; > 0: it slows down per flop as x grows). "
           "Narrow layers are dominated by elementwise work that grows like width, not width^2, "
           "so the width slope sits between 1 and 2.", ""]
    if png:
        out += [f"![scaling]({png})", ""]
    out += ["| axis | points (x: ms per sweep, rows/sample) | slope of time | slope of model flops | "
            "slope of time per model flop |",
            "|---|---|---|---|---|"]
    for axis in ("N", "depth", "width"):
        a = s.get(axis)
        if not a:
            continue
        pts = "; ".join(f"{p[axis]}: {p['seconds_median'] * 1e3:.1f} ({p['rows_per_sample_median']:.2f})"
                        for p in a["points"])
        fixed = a["points"][0]
        fx = {k: fixed[k] for k in ("width", "depth", "N") if k != axis}
        out.append(f"| {axis} ({', '.join(f'{k}={v}' for k, v in fx.items())}) | {pts} | **{a['slope_time']:.2f}** | "
                   f"{a['slope_model_flops']:.2f} | {a['slope_time'] - a['slope_model_flops']:+.2f} |")
    return "\n".join(out)


def _dtype_section(rec):
    d = rec["dtypes"]
    out = ["## float32 vs float64 (every kernel in the chosen precision)", ""]
    sp = d.get("speed")
    if sp:
        f32, f64 = sp["dtypes"]["float32"], sp["dtypes"]["float64"]
        out += [f"Same-run: compiled LySep sweeps in float32 and float64 from the same initial values, "
                f"{sp['hidden'][1]}x{sp['hidden'][0]}, N = {sp['N']:,}, interleaved with an SGEMM and a DGEMM "
                f"of size {sp['gemm_size']}.", "",
                "| | float64 | float32 |", "|---|---|---|",
                f"| ms per sweep (median) | {_ms(f64['seconds_median'])} | {_ms(f32['seconds_median'])} |",
                f"| GFLOP/s (model) | {_f(f64['gflops'], '{:.1f}')} | {_f(f32['gflops'], '{:.1f}')} |",
                f"| GEMM GFLOP/s same rounds | {_f(sp['dgemm_gflops_median'], '{:.1f}')} | "
                f"{_f(sp['sgemm_gflops_median'], '{:.1f}')} |",
                f"| trials per sweep | {f64['trials']} | {f32['trials']} |",
                f"| rows/sample | {f64['rows_per_sample']} | {f32['rows_per_sample']} |",
                "", f"**float32 speed-up over float64: {sp['speedup_f32_over_f64_median']:.2f}x** "
                f"(median of per-round ratios {', '.join(f'{x:.2f}' for x in sp['speedup_per_round'])})."]
        g = [r for r in rec.get("gd_torch", {}).get("rows", []) if r["width"] > 20]
        if len(g) == 2:
            by = {r["dtype"]: r for r in g}
            out.append(f"GD iteration at width 512 (section b): float64 {by['float64']['lysep_ms_per_iteration']:.0f} ms, "
                       f"float32 {by['float32']['lysep_ms_per_iteration']:.0f} ms "
                       f"({by['float64']['lysep_ms_per_iteration'] / by['float32']['lysep_ms_per_iteration']:.2f}x; "
                       "different rounds, not a same-run ratio).")
    acc = d.get("accuracy")
    if acc:
        out += ["", f"Final training accuracy on the circle, FNNClassifier {len(acc['hidden'])}x{acc['hidden'][0]}, "
                f"N = {acc['N']:,}, {acc['sweeps']} sweeps, seed 0:", "",
                "| dtype | final accuracy | final loss | first sweep at >= 99% | seconds | warnings |",
                "|---|---|---|---|---|---|"]
        for k in ("float64", "float32"):
            r = acc[k]
            out.append(f"| {k} | {r['final_accuracy']:.4f} | {r['final_loss']:.4f} | {_f(r['iterations_to_target'], '{}')} | "
                       f"{r['elapsed']:.1f} | {'; '.join(r['warnings']) or '—'} |")
    return "\n".join(out)


def plot_scaling(rec, path):
    """Log-log plot of the scaling section; returns the file name or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except Exception:
        return None
    import numpy as np
    s = rec["scaling"]
    axes = [a for a in ("N", "depth", "width") if a in s]
    fig, axs = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.6))
    axs = np.atleast_1d(axs)
    for ax, axis in zip(axs, axes):
        pts = s[axis]["points"]
        x = np.array([p[axis] for p in pts], float)
        t = np.array([p["seconds_median"] for p in pts]) * 1e3
        ax.loglog(x, t, "o-", label=f"measured (slope {s[axis]['slope_time']:.2f})")
        c = np.polyfit(np.log(x), np.log(t), 1)
        ax.loglog(x, np.exp(np.polyval(c, np.log(x))), "--", alpha=0.6, label="fit")
        ax.loglog(x, t[0] * x / x[0], ":", color="gray", label="slope 1")
        if axis == "width":
            ax.loglog(x, t[0] * (x / x[0]) ** 2, ":", color="black", alpha=0.5, label="slope 2")
        ax.set_xticks(x)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        fixed = {k: pts[0][k] for k in ("width", "depth", "N") if k != axis}
        ax.set_xlabel(axis)
        ax.set_ylabel("ms per sweep")
        ax.set_title(", ".join(f"{k}={v}" for k, v in fixed.items()), fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("lysep: one compiled LySep sweep (float64)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


def markdown(rec, png):
    mode = "quick (--quick: reduced sizes; CI smoke run)" if rec["quick"] else "full"
    parts = [f"# lysep benchmark report ({'quick' if rec['quick'] else 'full'})", "",
             f"Run {rec['started']} — {rec['total_seconds']:.0f} s in all — mode: {mode}. "
             f"Command: `python -m bench {' '.join(rec['argv'])}`.", "",
             "**Which figures are ratios measured in the same run:** every ratio in (a), (b), (c), "
             "(f) and the float32/float64 speed ratio — competing implementations run in one process, "
             "interleaved round by round (order rotated), each ratio the median of per-round ratios. "
             "Absolute times, the time-to-accuracy runs (d), the scaling slopes and the memory "
             "figures (e) are single measurements on a shared machine: read them with the load "
             "column below in mind.", "",
             "## Machine", "", _machine(rec), "",
             "Load during each part (cpu/wall < 1 at one thread means the process waited for a core):", "",
             "| part | seconds | cpu/wall | load before | load after | suite RSS after (MiB) |",
             "|---|---|---|---|---|---|"]
    for name, s in rec["sections"].items():
        parts.append(f"| {name} | {s['seconds']} | {s['cpu_over_wall']} | {s['load_before']} | {s['load_after']} | "
                     f"{s.get('rss_mib_after', '—')} |")
    parts += ["", "## Targets", ""]
    if rec["quick"]:
        parts += ["*--quick*: reduced sizes, so these rows only show that the suite runs; the targets "
                  "refer to the full configuration (`python -m bench`).", ""]
    parts += ["| figure | target | measured | |", "|---|---|---|---|"]
    for what, goal, got, ok in targets(rec):
        parts.append(f"| {what} | {goal} | {got} | {_yes(ok)} |")
    if rec.get("torch_note"):
        parts += ["", rec["torch_note"]]
    for key, fn in (("sweep", _sweep_section), ("gd_torch", _gd_section), ("sweep", _flops_section),
                    ("time_to_accuracy", _acc_section), ("memory", _mem_section), ("cnn", _cnn_section)):
        if key in rec:
            parts += ["", fn(rec)]
    if "scaling" in rec:
        parts += ["", _scaling_section(rec, png)]
    if "dtypes" in rec:
        parts += ["", _dtype_section(rec)]
    if rec.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in rec["notes"]]
    return "\n".join(parts) + "\n"
