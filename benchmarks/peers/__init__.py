"""`python -m benchmarks.peers`: the bundle side by side with Optimum, on the same student and the same CPU."""
