"""lysep: softmax cross-entropy classifiers trained by layer separation (LySep).

The hot loops are compiled Cython kernels calling BLAS/LAPACK through scipy; see
``MATH.md`` in the project for the method and its guarantee ``loss <= C(s) * J``.
"""
from ._cnn import CNNClassifier
from ._fnn import FNNClassifier
from ._persistence import load
from .exceptions import ConvergenceWarning, NotFittedError, NumericalWarning, ScaleWarning

__version__ = "0.1.0"
__all__ = ["CNNClassifier", "FNNClassifier", "load", "ConvergenceWarning", "NotFittedError", "NumericalWarning", "ScaleWarning",
           "__version__"]
