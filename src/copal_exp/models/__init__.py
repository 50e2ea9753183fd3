"""Models: loading by source (a registry), GGUF files read out of PyPI wheels, and the anatomy of a decoder (layers, prunable linears)."""
