"""Warnings and errors raised by lysep (named as in scikit-learn).

scikit-learn is not a dependency.  When it is loaded, what lysep raises or warns is also
an instance of scikit-learn's class of the same name (see ``_with_sklearn``), so code
written for scikit-learn catches it; ``except lysep.NotFittedError`` always works.
"""
import sys


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted model is called before ``fit``."""


class ConvergenceWarning(UserWarning):
    """Training stopped before its convergence criterion was met."""


class NumericalWarning(RuntimeWarning):
    """Training met non-finite values or stalled line searches and stopped safely."""


class ScaleWarning(UserWarning):
    """The features are on a scale at which the default initialisation saturates."""


class DataConversionWarning(UserWarning):
    """The input was converted (e.g. a column-vector y raveled)."""


_mixed = {}


def _with_sklearn(cls):
    """`cls`, or a subclass that is also scikit-learn's class of that name when
    scikit-learn is already imported (never imports it)."""
    module = sys.modules.get("sklearn.exceptions")
    other = getattr(module, cls.__name__, None) if module is not None else None
    if other is None:
        return cls
    if cls not in _mixed:
        _mixed[cls] = type(cls.__name__, (cls, other), {"__module__": cls.__module__})
    return _mixed[cls]
