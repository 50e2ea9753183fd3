"""Pruning methods, registered by name (see :mod:`copal_exp.pruning.methods.registry`)."""

# Importing the modules registers their methods.
from copal_exp.pruning.methods import copal, dense, dsnot, magnitude, ria, sparsegpt, wanda  # noqa: F401,E402
from copal_exp.pruning.methods.registry import (
                                         METHODS,
                                         Memory,
                                         PruningMethod,
                                         build_method,
                                         method_class,
                                         reference_method,
                                         register,
)

__all__ = ["METHODS", "Memory", "PruningMethod", "build_method", "method_class", "reference_method", "register"]
