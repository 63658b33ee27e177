"""`python -m distill.sweep sweep=NAME [overrides...]`: the entry point of the Optuna sweep, whose logic lives in
the pipeline layer (`pipeline/sweep/`), since a trial runs every stage.
"""
