"""The recipes table: kd, distilbert, tinybert and minilm for a 2- and a 3-layer student of the MiniLM
teacher, against the same students trained on hard labels alone, on SST-2 or on the demo task.

    python -m benchmarks.recipes data_dir=../shared/data/sst2   # SST-2 (rows shared with benchmarks.sst2)
    python -m benchmarks.recipes mode=demo                        # the built-in demo task
"""
