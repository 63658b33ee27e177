"""Importing this module registers every compression pass (each module registers its own on import).

The pipeline and the CLI import it, so passes are available however `compress` itself was imported.
"""

from compress import factorize, hidden, layers, prune, quantize, share, sparsity  # noqa: F401

PASS_MODULES = (factorize, hidden, layers, prune, quantize, share, sparsity)
