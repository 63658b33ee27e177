"""Extractive question answering on SQuAD v1.1: the MiniLM-L6 teacher against distilled and exported students.

`python -m benchmarks.squad` fine-tunes the packaged MiniLM-L6 teacher on a subset of the reconstructed SQuAD v1.1
training set (cached), trains the 3- and 2-layer students of alembert/conf/squad.yaml (kd, tinybert, hard labels
alone), exports each to ONNX (fused fp32 and int8), and times every model in one process at sequence 384, so the
speedups are ratios from one run. The table's metric is SQuAD F1 (EM beside it) after the best span over all
windows of a question; each distilled student is tested against the same-size hard-label student with a paired
bootstrap over questions. The reconstructed training set has synthetic ids, and its answer_start is the first
occurrence of the answer text, wrong for about 3-4% of answers: the table says so. Finished rows are cached under
`work_dir`; an interrupted benchmark resumes from them. `mode=quick` is the smoke test.
"""
