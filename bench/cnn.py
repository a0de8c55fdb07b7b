"""(f) CNN: one LySep-CNN sweep (Algorithm 2) and one GD-CNN iteration of lysep against one
PyTorch iteration (conv forward + autograd backward + SGD step) on the same batch.

Network (as bench/bench_cnn.py): 28x28x1 images, two conv layers of 8 channels (k=3,
stride 1, pad 1, tanh, 2x2 average pooling: 28 -> 14 -> 7), one hidden dense layer of
64, 10 classes.  Data: the first images of Fashion-MNIST when ``load_fashion_mnist``
finds it, random images otherwise.  The torch network gets lysep's initial values (conv
kernels reordered from lysep's (k*k*C_in, C_out) patch layout to (C_out, C_in, k, k),
the pooled NCHW feature map permuted to NHWC before flattening so the first dense layer
sees lysep's feature order); the initial losses of both are reported as a check.
"""
import numpy as np

from ._common import batched, free, import_torch, interleave, median, ratios, repeat_count


def available():
    try:
        import lysep._cnn  # noqa: F401
        from lysep._cnn_sweep import CNNLySepState  # noqa: F401
        return True
    except Exception:
        return False


def _batch(n, dtype):
    try:
        from lysep.datasets import load_fashion_mnist
        X, y, _, _ = load_fashion_mnist()
        return X[:n, :, :, None].astype(dtype), y[:n].astype(np.int64), "Fashion-MNIST"
    except Exception:
        rng = np.random.default_rng(0)
        return rng.random((n, 28, 28, 1)).astype(dtype), rng.integers(0, 10, n).astype(np.int64), "random"


def torch_cnn(arch, weights, biases, dtype):
    torch = import_torch()
    nn = torch.nn
    k = arch.kernel_size

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList()
            self.pools = []
            for c in arch.conv:
                cin, cout = c.in_shape[2], c.out_shape[2]
                self.convs.append(nn.Conv2d(cin, cout, k, stride=arch.stride, padding=arch.padding))
                self.pools.append(c.q)
            d = arch.dense_sizes
            self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(d[:-1], d[1:]))

        def forward(self, x):
            for conv, q in zip(self.convs, self.pools):
                x = torch.tanh(conv(x))
                if q > 1:
                    x = nn.functional.avg_pool2d(x, q) if arch.pool == "avg" else nn.functional.max_pool2d(x, q)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            for i, lin in enumerate(self.dense):
                x = lin(x)
                if i < len(self.dense) - 1:
                    x = torch.tanh(x)
            return x

    net = Net()
    Lc = arch.n_conv
    with torch.no_grad():
        for l, conv in enumerate(net.convs):
            c = arch.conv[l]
            K = weights[l].reshape(k, k, c.in_shape[2], c.out_shape[2]).transpose(3, 2, 0, 1)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(K)))
            conv.bias.copy_(torch.from_numpy(biases[l]))
        for i, lin in enumerate(net.dense):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[Lc + i].T)))
            lin.bias.copy_(torch.from_numpy(biases[Lc + i]))
    return net.to(torch.float64 if dtype == np.float64 else torch.float32)


def cnn_compare(n, dtype, warmup, rounds, min_sample_seconds, log, channels=8, lr=0.1):
    from lysep._cnn import init_cnn_parameters
    from lysep._cnn_sweep import CNN_BACKENDS, Architecture, CNNGDState, CNNLySepState
    torch = import_torch()
    X, y, source = _batch(n, dtype)
    arch = Architecture((28, 28, 1), (channels,) * 2, 3, 1, 1, (2, 2), "avg", (64,), 10)
    backend = CNN_BACKENDS["compiled"]
    W, b = init_cnn_parameters(arch, np.random.default_rng(0), dtype)
    lys = CNNLySepState(backend, arch, X, y, [w.copy() for w in W], [v.copy() for v in b], "tanh", 0.01)
    gd = CNNGDState(backend, arch, X, y, [w.copy() for w in W], [v.copy() for v in b], "tanh", lr)
    loss0 = gd.forward()[0]

    def gd_it():
        gd.update()
        gd.forward()

    tasks = {"lysep_sweep": lys.sweep, "lysep_gd": gd_it}
    res = {"available": True, "data": source, "N": n, "dtype": np.dtype(dtype).name, "channels": [channels] * 2,
           "hidden": [64], "architecture": "28x28x1 -conv3x3(8)-tanh-avgpool2- conv3x3(8)-tanh-avgpool2- dense64-tanh- 10"}
    if torch is not None:
        from .gd_torch import torch_sgd_iteration
        net = torch_cnn(arch, W, b, dtype)
        Xt = torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
        yt = torch.from_numpy(y)
        with torch.no_grad():
            res["loss0_torch"] = float(torch.nn.functional.cross_entropy(net(Xt), yt))
        tasks["torch_sgd"] = torch_sgd_iteration(net, Xt, yt, lr)
    res["loss0_lysep"] = loss0
    count = repeat_count(gd_it, min_sample_seconds)
    if "torch_sgd" in tasks:
        tasks["torch_sgd"]()
        tasks["torch_sgd"] = batched(tasks["torch_sgd"], count)
    tasks["lysep_gd"] = batched(gd_it, count)
    times, _ = interleave(tasks, rounds, warmup,
                          after=lambda k, r, dt, timed: log(f"   {k:12s} {dt:8.3f}s"))
    res["gd_iterations_per_sample"] = count
    res["ms_lysep_sweep"] = median(times["lysep_sweep"]) * 1e3
    res["ms_lysep_gd_iteration"] = median(times["lysep_gd"]) / count * 1e3
    per_gd = [t / count for t in times["lysep_gd"]]
    res["sweep_over_gd_median"] = ratios(times["lysep_sweep"], per_gd)[0]
    if "torch_sgd" in times:
        per_torch = [t / count for t in times["torch_sgd"]]
        res["ms_torch_iteration"] = median(per_torch) * 1e3
        res["gd_over_torch_median"] = ratios(per_gd, per_torch)[0]
        res["sweep_over_torch_median"] = ratios(times["lysep_sweep"], per_torch)[0]
        with torch.no_grad():
            res["loss_after_torch"] = float(torch.nn.functional.cross_entropy(net(Xt), yt))
        res["loss_after_lysep_gd"] = gd.forward()[0]
    del lys, gd, tasks
    free()
    return res
