"""Fresh-process memory probe for bench.memory (run as a script; prints one JSON line).

argv[1]: JSON {"mode": "state" | "fit", "N", "width", "depth", "dtype", "sweeps", "threads",
"low_memory"}.
The data is made first; then tracemalloc starts (NumPy reports its array allocations to
it) and the method runs; peak RSS: VmHWM from /proc (see _peak_mib), getrusage's
ru_maxrss reported beside it.
"""
import json
import resource
import sys
import time
import tracemalloc


def _status_mib(field):
    """VmRSS (now) or VmHWM (peak since exec) of this process, from /proc (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_now_mib():
    return _status_mib("VmRSS")


def _ru_maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mib():
    """Peak RSS of this process.  getrusage's ru_maxrss is the documented figure, but on
    Linux it is carried across exec from the process that spawned us (a vfork child
    shares the parent's memory until exec), so a probe started by a big parent reports
    the parent's peak; VmHWM is reset at exec and is used when /proc has it."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else _ru_maxrss_mib()


def main():
    cfg = json.loads(sys.argv[1])
    import numpy as np
    from threadpoolctl import threadpool_limits
    from lysep.datasets import circle
    dtype = np.dtype(cfg["dtype"]).type
    N, w, depth = cfg["N"], cfg["width"], cfg["depth"]
    X, y = circle(N, random_state=0)
    X = X.astype(dtype)
    sizes = (2,) + (w,) * depth + (2,)
    itemsize = np.dtype(dtype).itemsize
    z_bytes = depth * N * w * itemsize
    data_bytes = X.nbytes + y.nbytes
    base_rss, base_peak = _rss_now_mib(), _peak_mib()
    if base_rss is None:                     # no /proc: fall back on getrusage
        base_rss = base_peak
    t0 = time.perf_counter()
    tracemalloc.start()
    held = {}
    with threadpool_limits(cfg.get("threads", 1)):
        if cfg["mode"] == "state":
            from lysep._backend import COMPILED
            from lysep._fnn import init_parameters
            from lysep._sweep import LySepState
            W, b = init_parameters(sizes, np.random.default_rng(0), dtype)
            st = LySepState(COMPILED, X, y, W, b, "tanh", 0.01,
                            low_memory=cfg.get("low_memory", False))
            for _ in range(cfg.get("sweeps", 1)):
                st.sweep()
            groups = {"Z": st.Z, "A (on demand)": st.A.held(), "R": st.R or [],
                      "candidates (shared spares)": st.spares.arrays(),
                      "workspace": list(st.ws._arrays.values())}
            held = {k: sum(a.nbytes for a in v) / 2**20 for k, v in groups.items()}
        else:
            from lysep import FNNClassifier
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                FNNClassifier((w,) * depth, max_iter=cfg.get("sweeps", 1), random_state=0,
                              dtype=dtype, n_threads=cfg.get("threads", 1),
                              low_memory=cfg.get("low_memory", False)).fit(X, y)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({
        "mode": cfg["mode"], "low_memory": cfg.get("low_memory", False), "N": N, "width": w, "depth": depth, "dtype": cfg["dtype"],
        "sweeps": cfg.get("sweeps", 1), "seconds": time.perf_counter() - t0,
        "minimum_mib": (z_bytes + data_bytes) / 2**20, "z_mib": z_bytes / 2**20,
        "data_mib": data_bytes / 2**20,
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "rss_baseline_mib": base_rss, "rss_peak_before_mib": base_peak, "rss_peak_mib": _peak_mib(),
        "rss_peak_source": "VmHWM" if _status_mib("VmHWM") is not None else "ru_maxrss",
        "ru_maxrss_mib": _ru_maxrss_mib(),
        "state_arrays_mib": held,
    }))


if __name__ == "__main__":
    main()
