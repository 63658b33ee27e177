"""alembert's distillation package: teacher/student wrappers, data, losses and the training engine."""

__version__ = "0.1.0"
