"""The headline SST-2 benchmark: teacher against distilled, compressed and exported students.

`python -m benchmarks.sst2 data_dir=../shared/data/sst2` fine-tunes the packaged MiniLM-L6 teacher
(cached), trains every row of alembert/conf/sst2.yaml, exports each student to ONNX (fused fp32 and int8),
and times every model in one process, so the speedups are ratios from one run. Finished rows are
cached under `work_dir`; an interrupted benchmark resumes from them.
"""
