"""Measurements of adaptloop, run from the repository root: ``python -m bench.drift``."""
