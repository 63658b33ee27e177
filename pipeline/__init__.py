"""The pipeline layer: it composes the stages (distill -> compress -> export) for `python -m distill`, the Optuna
sweep and the benchmark tables. It alone imports more than one stage package; the stages import only the base
(`alembert`) and never each other.
"""
