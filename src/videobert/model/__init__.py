"""The VideoBERT model: configuration, joint tokenizer, network and pretraining heads.

Importing this package registers the `videobert` model type with transformers' Auto classes, so
`AutoConfig` / `AutoModel` / `AutoModelForPreTraining.from_pretrained(model_dir)` work on a saved model directory.
"""
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from videobert.model.configuration import ALIGNED, NOT_ALIGNED, VideoBertConfig, require_videobert_dir
from videobert.model.modeling import (
    VideoBertForPreTraining,
    VideoBertForPreTrainingOutput,
    VideoBertModel,
    VideoBertPreTrainedModel,
    default_text_checkpoint,
    require_tokenizer,
    visual_tokenizer_from_work_dir,
)
from videobert.model.tokenization import VideoBertTokenizer

AutoConfig.register(VideoBertConfig.model_type, VideoBertConfig, exist_ok=True)
AutoModel.register(VideoBertConfig, VideoBertModel, exist_ok=True)
AutoModelForPreTraining.register(VideoBertConfig, VideoBertForPreTraining, exist_ok=True)

__all__ = [
    "ALIGNED",
    "NOT_ALIGNED",
    "VideoBertConfig",
    "VideoBertForPreTraining",
    "VideoBertForPreTrainingOutput",
    "VideoBertModel",
    "VideoBertPreTrainedModel",
    "VideoBertTokenizer",
    "default_text_checkpoint",
    "require_tokenizer",
    "require_videobert_dir",
    "visual_tokenizer_from_work_dir",
]
