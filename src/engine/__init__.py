"""One training engine for every stage: settings, batching, loop, checkpoints, plots."""
