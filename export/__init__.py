"""alembert's export package: ONNX export with parity checks, optimized/int8/fp16 variants, and a torch-free runtime.

This file imports nothing on purpose: `export.runtime` must load on a device without torch.
"""
