"""The config schema: every key typed with its default once, the typed reading of values, and single-section checks."""
