"""Warnings and errors raised by lysep (named as in scikit-learn)."""


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted model is called before ``fit``."""


class ConvergenceWarning(UserWarning):
    """Training stopped before its convergence criterion was met."""


class NumericalWarning(RuntimeWarning):
    """Training met non-finite values or stalled line searches and stopped safely."""
