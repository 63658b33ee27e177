"""A benchmark as a table of rows: each row is a `python -m distill` run (teacher, student, compressed
student), trained or reloaded from its cache, exported to ONNX if asked, and timed with every other row
in one process. `python -m benchmarks.sst2` (alembert/conf/sst2.yaml), `python -m benchmarks.recipes`
(alembert/conf/recipes.yaml) and `python -m benchmarks.conll` (alembert/conf/conll.yaml, NER) are such tables.
Nothing here names a task: the metric column is the task's primary metric, outputs of different widths are
gathered by the task, and the paired comparison resamples the per-example counts the task gives.
"""
