"""Optuna sweeps over the whole recipe: `python -m distill.sweep sweep=NAME [overrides...]`.

Each trial is a `python -m distill` run composed by Hydra from alembert/conf/config.yaml with the sweep's base overrides
plus the trial's sampled ones (only distill/sweep/__main__.py touches Hydra); everything below takes typed configs.
"""
