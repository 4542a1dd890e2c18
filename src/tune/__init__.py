"""Optuna sweeps over `train_pref` runs (the CLI is `python -m src.sweep`).

    space.py   the sweep YAML: base config, fixed fields, search space, study settings
    study.py   storage, sampler, pruner, the worker loop, one trial = one train_pref run
    report.py  best config, table of trials, optuna's matplotlib plots
    toy.py     a seconds-fast stand-in for `train_pref.run` (tests, trying a setup)
"""
