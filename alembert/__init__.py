"""alembert: distil, compress and export BERT-family models for edge devices.

This package holds what every stage shares and installs with them: the Hydra configuration
(`alembert/conf/`, shipped as package data so that a non-editable install finds it) and the
`alembert` console script (`alembert.cli`).
"""
