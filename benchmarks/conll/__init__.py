"""Named-entity recognition on CoNLL-2003: the MiniLM-L6 teacher against distilled and exported students.

`python -m benchmarks.conll` fine-tunes the packaged MiniLM-L6 teacher for CoNLL-2003's tags (cached), trains the
3- and 2-layer students of alembert/conf/conll.yaml (kd, tinybert, hard labels alone), exports each to ONNX (fused
fp32 and int8), and times every model in one process, so the speedups are ratios from one run. The table's metric
is the token_classification task's entity F1, and each distilled student is tested against the same-size
hard-label student with a paired bootstrap that recomputes entity F1 from per-sentence entity counts. Finished
rows are cached under `work_dir`; an interrupted benchmark resumes from them. `mode=quick` is the smoke test.
"""
