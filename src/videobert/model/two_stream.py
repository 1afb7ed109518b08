"""The two-stream baseline for segment classification: separate text and visual encoders, fused by an MLP.

Where VideoBERT reads `[CLS] narration [>] visual tokens [SEP]` as one sequence (every layer attends across the
modalities), the baseline encodes `[CLS] narration [SEP]` with a text encoder and `[CLS] [>] visual tokens [SEP]`
with a visual encoder, and only their pooled `[CLS]` states meet, in a two-layer MLP. Both encoders start from the
same pretrained VideoBERT weights, so the comparison with `VideoBertForSegmentClassification` on the same data
isolates single-stream versus late fusion. Labels and heads follow `model.classification` (targets side by side).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils.generic import can_return_tuple

from videobert.model.classification import TARGETS, VideoBertForSegmentClassificationOutput
from videobert.model.configuration import VideoBertConfig
from videobert.model.modeling import VideoBertModel, VideoBertPreTrainedModel
from videobert.utils.errors import ConfigError


class VideoBertTwoStreamForSegmentClassification(VideoBertPreTrainedModel):
    """Text encoder + visual encoder + fusion MLP over their pooled states (module docstring).

    `config.classification_labels` maps each target (`verb`, `noun` or both) to its label names.
    """

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        labels = getattr(config, "classification_labels", None)
        if not labels or any(target not in TARGETS for target in labels):
            raise ConfigError(f"config.classification_labels must map targets among {TARGETS} to their label names")
        self.targets = tuple(labels)
        self.num_labels_per_target = tuple(len(labels[target]) for target in self.targets)
        self.text_encoder = VideoBertModel(config)
        self.visual_encoder = VideoBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.fusion = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.hidden_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(config.hidden_size, sum(self.num_labels_per_target)),
        )
        self.post_init()

    @classmethod
    def from_videobert(
        cls, model_dir: str | os.PathLike, classification_labels: dict[str, list[str]]
    ) -> "VideoBertTwoStreamForSegmentClassification":
        """Both encoders initialised from the encoder of a VideoBERT model directory; the fusion MLP starts random.
        The directory's tokenizers are attached."""
        encoder = VideoBertModel.from_pretrained(model_dir)
        config = encoder.config
        config.classification_labels = {target: list(names) for target, names in classification_labels.items()}
        model = cls(config)
        model.text_encoder.load_state_dict(encoder.state_dict())
        model.visual_encoder.load_state_dict(encoder.state_dict())
        model.tokenizer, model.visual_tokenizer = encoder.tokenizer, encoder.visual_tokenizer
        return model

    @can_return_tuple
    def forward(
        self,
        text_input_ids: torch.LongTensor,
        text_attention_mask: torch.Tensor,
        visual_input_ids: torch.LongTensor,
        visual_attention_mask: torch.Tensor,
        visual_token_type_ids: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> VideoBertForSegmentClassificationOutput:
        r"""
        text_input_ids, text_attention_mask (`(batch_size, text_length)`):
            `[CLS] narration [SEP]`, as `VideoBertTokenizer.batch_encode` of the texts alone.
        visual_input_ids, visual_attention_mask, visual_token_type_ids (`(batch_size, visual_length)`):
            `[CLS] [>] visual tokens [SEP]`, as `VideoBertTokenizer.batch_encode` of the visual tokens alone.
        labels (`torch.LongTensor` of shape `(batch_size, num_targets)`, *optional*):
            As in `VideoBertForSegmentClassification.forward`.
        """
        text = self.text_encoder(text_input_ids, attention_mask=text_attention_mask, return_dict=True, **kwargs)
        visual = self.visual_encoder(
            visual_input_ids, attention_mask=visual_attention_mask, token_type_ids=visual_token_type_ids,
            return_dict=True, **kwargs,
        )  # fmt: skip
        pooled = torch.cat([text.pooler_output, visual.pooler_output], dim=-1)  # (batch, 2 * hidden)
        logits = self.fusion(pooled)  # (batch, total_labels)
        target_logits = dict(zip(self.targets, logits.split(self.num_labels_per_target, dim=-1)))

        loss = None
        if labels is not None:
            labels = labels.view(labels.shape[0], -1)  # (batch, num_targets)
            loss = sum(
                F.cross_entropy(target_logits[target].float(), labels[:, column], ignore_index=-100)
                for column, target in enumerate(self.targets)
            )
        return VideoBertForSegmentClassificationOutput(loss=loss, logits=logits, target_logits=target_logits)
