"""Pruning methods, registered by name (see :mod:`copal_exp.methods.registry`)."""

from copal_exp.methods.registry import (METHODS, Memory, PruningMethod, build_method, method_class, reference_method,
                                         register)

# Importing the modules registers their methods.
from copal_exp.methods import copal, dense, magnitude, sparsegpt, wanda  # noqa: F401,E402

__all__ = ["METHODS", "Memory", "PruningMethod", "build_method", "method_class", "reference_method", "register"]
