"""The non-transformer students (alembert/students/): no layer list and no attention, so layer-wise terms and
structural passes refuse them in one line; int8 and vocabulary pruning work on their Linear/LSTM and word table."""

from alembert.families.base import Family, register

for model_type in ("alembert-bilstm", "alembert-cnn", "alembert-static"):
    register(Family(model_type, layers=None, attention="eager", ort_model_type=None, transformer=False))
