"""Non-transformer students (Tang et al. 2019's BiLSTM, a TextCNN, model2vec-style static embeddings).

Each is a small transformers `PreTrainedModel` with its own `PretrainedConfig` (model_type `alembert-<kind>`),
registered with `AutoConfig` and `AutoModelForSequenceClassification` on import, so a saved student is a plain
Hugging Face model directory (config.json, model.safetensors, the tokenizer files, label_map.json) that
alembert's loaders, `python -m export` and any transformers user (after `import alembert.students`) load.
They classify or score whole sequences; their model families (alembert/families/small.py) have no layers for
layer-wise terms or structural passes. distill/students.py builds them from a teacher.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification

from alembert.students.bilstm import BiLstmConfig, BiLstmStudent
from alembert.students.cnn import CnnConfig, CnnStudent
from alembert.students.static import StaticConfig, StaticStudent

MODELS = {config.model_type: (config, model) for config, model in
          ((BiLstmConfig, BiLstmStudent), (CnnConfig, CnnStudent), (StaticConfig, StaticStudent))}

for _config, _model in MODELS.values():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForSequenceClassification.register(_config, _model, exist_ok=True)
