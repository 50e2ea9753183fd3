"""Pruning: capture of calibration inputs from the model's own forward, the layer-by-layer engine, masks, and the methods."""
