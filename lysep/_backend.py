"""The two interchangeable implementations of the blocks: compiled and NumPy.

Both namespaces expose the same names with the same signatures, so the sweep in
``lysep._sweep`` runs unchanged on either (and the tests compare them)."""
from types import SimpleNamespace

from . import _activation, _fnn_blocks, _reference, _softmax

_NAMES = ("activation", "softmax_ce", "affine", "layer_forward", "network_forward", "residual",
          "output_step", "z_last_step", "z_hidden_step", "ridge_update", "bias_update",
          "backprop_layer", "backprop_step", "squared_norm", "z_last_work_rows",
          "z_hidden_work_rows", "z_last_step_lean", "z_hidden_step_lean",
          "bias_update_lean", "activation_rows")


def _compiled(name):
    for module in (_fnn_blocks, _softmax, _activation):
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"no compiled kernel {name!r}")


COMPILED = SimpleNamespace(name="compiled", **{name: _compiled(name) for name in _NAMES})
REFERENCE = SimpleNamespace(name="reference",
                            **{name: getattr(_reference, name) for name in _NAMES})

BACKENDS = {"compiled": COMPILED, "reference": REFERENCE}
