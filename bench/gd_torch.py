"""(b) One gradient-descent iteration: lysep's compiled GD vs PyTorch autograd on the CPU.

Same network (tanh MLP, softmax cross-entropy, mean over samples), same initial values
(lysep's ``init_parameters``, copied into ``torch.nn.Linear`` layers), same data, same
learning rate, same thread count.  One iteration is forward + backward + update:
lysep ``GDState.update(); GDState.forward()``; torch ``loss = cross_entropy(model(X), y);
loss.backward()`` and a manual SGD step ``p -= lr * p.grad`` under ``torch.no_grad()``
(grads set to None each iteration, as ``optimizer.zero_grad()`` does by default).
Both are checked to compute the same thing: the initial losses and the losses after all
timed iterations are reported side by side.
"""
import numpy as np

from ._common import free, import_torch, interleave, median, ratios, repeat_count, batched


def torch_mlp(weights, biases, dtype):
    torch = import_torch()
    layers = []
    for i, (W, b) in enumerate(zip(weights, biases)):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.Tanh())
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    return torch.nn.Sequential(*layers).to(tdt)


def torch_sgd_iteration(model, Xt, yt, lr):
    torch = import_torch()
    params = list(model.parameters())
    F = torch.nn.functional

    def it():
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(Xt), yt)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
        return loss
    return it


def gd_vs_torch(width, depth, N, dtype, warmup, rounds, min_sample_seconds, log, lr=0.1,
                threads=1):
    """One GD iteration, lysep against torch, same network, same initial values.  With
    `threads` > 1 (torch and BLAS pinned to it by the caller) lysep's kernels get the
    threads as a fit gives them (``split_threads``: narrow layers' row blocks, else BLAS)."""
    torch = import_torch()
    from lysep._backend import COMPILED
    from lysep._fnn import init_parameters
    from lysep._sweep import GDState
    from lysep._threads import split_threads
    from lysep.datasets import circle
    X, y = circle(N, random_state=0)
    X = X.astype(dtype)
    sizes = (2,) + (width,) * depth + (2,)
    W, b = init_parameters(sizes, np.random.default_rng(0), dtype)
    model = torch_mlp(W, b, dtype)                     # copies, before GD moves W, b
    n_kernel = split_threads(threads, list(zip(sizes[:-2], sizes[1:-1])), X.itemsize)[1]
    state = GDState(COMPILED, X, y, W, b, "tanh", lr, n_threads=n_kernel)
    loss0_lysep = state.forward()[0]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        loss0_torch = float(torch.nn.functional.cross_entropy(model(Xt), yt))

    def lysep_it():
        state.update()
        state.forward()

    torch_it = torch_sgd_iteration(model, Xt, yt, lr)
    count = repeat_count(lysep_it, min_sample_seconds)   # one iteration: do it in torch too
    torch_it()
    tasks = {"lysep": batched(lysep_it, count), "torch": batched(torch_it, count)}
    times, _ = interleave(tasks, rounds, warmup,
                          after=lambda n, r, dt, timed: log(f"   {n:6s} {count} it {dt:8.3f}s"))
    n_it = (warmup + rounds) * count + 1
    loss_lysep = state.forward()[0]
    with torch.no_grad():
        loss_torch = float(torch.nn.functional.cross_entropy(model(Xt), yt))
    ratio, per_round = ratios(times["lysep"], times["torch"])
    res = {"width": width, "depth": depth, "N": N, "dtype": np.dtype(dtype).name, "lr": lr,
           "lysep_kernel_threads": n_kernel,
           "iterations_per_sample": count, "rounds": rounds,
           "lysep_ms_per_iteration": median(times["lysep"]) / count * 1e3,
           "torch_ms_per_iteration": median(times["torch"]) / count * 1e3,
           "lysep_over_torch_median": ratio, "lysep_over_torch_per_round": per_round,
           "loss0_lysep": loss0_lysep, "loss0_torch": loss0_torch,
           "iterations_run": n_it, "loss_after_lysep": loss_lysep, "loss_after_torch": loss_torch}
    del state, model, tasks
    free()
    return res
