"""The two interchangeable implementations of the blocks: compiled and NumPy.

Both namespaces expose the same names with the same signatures, so the sweep in
``lysep._sweep`` runs unchanged on either (and the tests compare them)."""
from types import SimpleNamespace

from . import _reference
from ._activation import activation
from ._fnn_blocks import (affine, backprop_layer, backprop_step, bias_update, layer_forward,
                          network_forward, output_step, residual, ridge_update, squared_norm,
                          z_hidden_step, z_last_step)
from ._softmax import softmax_ce

_NAMES = ("activation", "softmax_ce", "affine", "layer_forward", "network_forward", "residual",
          "output_step", "z_last_step", "z_hidden_step", "ridge_update", "bias_update",
          "backprop_layer", "backprop_step", "squared_norm")

COMPILED = SimpleNamespace(
    name="compiled", activation=activation, softmax_ce=softmax_ce, affine=affine,
    layer_forward=layer_forward, network_forward=network_forward, residual=residual,
    output_step=output_step, z_last_step=z_last_step, z_hidden_step=z_hidden_step, ridge_update=ridge_update, bias_update=bias_update,
    backprop_layer=backprop_layer, backprop_step=backprop_step, squared_norm=squared_norm)

REFERENCE = SimpleNamespace(name="reference",
                            **{name: getattr(_reference, name) for name in _NAMES})

BACKENDS = {"compiled": COMPILED, "reference": REFERENCE}
