"""The analyzers: fixed-point statistics and solvers, Jacobians and their spectra, the
bounds of the seed paper, critical values, and the pipeline that runs a config's
``analysis:`` section. Imported on first use of an analyzer (scipy.sparse and, for the
differentiable methods, torch)."""
