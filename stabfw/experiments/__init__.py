"""Experiments: a single run of a run file, sweeps over a grid, where their cells run
(backends), and a sweep's stability diagram (as data)."""
