"""A benchmark as a table of rows: each row is a `python -m distill` run (teacher, student, compressed
student), trained or reloaded from its cache, exported to ONNX if asked, and timed with every other row
in one process. `python -m benchmarks.sst2` (alembert/conf/sst2.yaml) and `python -m benchmarks.recipes`
(alembert/conf/recipes.yaml) are two such tables.
"""
