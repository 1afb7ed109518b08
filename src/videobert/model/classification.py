"""Segment classification with VideoBERT: the encoder plus a linear head on the pooled `[CLS]` state.

A segment is encoded like in pretraining (`[CLS] narration [>] visual tokens [SEP]`, or `[CLS] [>] visual tokens
[SEP]` without text) and classified from the pooler output. Each target (`verb`, `noun`) has its own labels; the
heads of all targets are stacked into one `nn.Linear` whose output is split per target. Stacked linear heads are
exactly independent heads (each output block has its own weights), and a single module named `classifier` is what
`peft` keeps trainable and saves next to an adapter (`modules_to_save`) without extra configuration.

The label names of each target are stored in the config (`classification_labels`, target -> names), so a saved
classifier knows what its outputs mean.

Also here: `BottleneckAdapter`, the small residual adapter (Houlsby et al., 2019) that `tasks.peft_methods` inserts
after the output projections of each layer, since `peft` has no bottleneck adapter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from videobert.model.configuration import VideoBertConfig
from videobert.model.modeling import VideoBertModel, VideoBertPreTrainedModel
from videobert.utils.errors import ConfigError

TARGETS = ("verb", "noun")


@dataclass
class VideoBertForSegmentClassificationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
        Sum over the targets of the mean cross-entropy of each target's head.
    logits (`torch.FloatTensor` of shape `(batch_size, total_labels)`):
        Scores of every target's labels side by side, in the order of `config.classification_labels`.
    target_logits (`dict[str, torch.FloatTensor]`):
        The same scores per target: target -> `(batch_size, num_labels_of_target)`.
    hidden_states, attentions:
        As in `BertModel`, when `output_hidden_states` / `output_attentions` is passed.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    target_logits: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class VideoBertForSegmentClassification(VideoBertPreTrainedModel):
    """VideoBERT with one classification head per target on the pooled `[CLS]` state (module docstring).

    `config.classification_labels` maps each target (`verb`, `noun` or both, in that order) to its label names.
    """

    # A pretrained directory also holds the pretraining heads (`cls.*`); classification does not use them, so their
    # absence from this model is expected rather than worth a load warning.
    _keys_to_ignore_on_load_unexpected = [r"^cls\."]

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        labels = getattr(config, "classification_labels", None)
        if not labels:
            raise ConfigError("config.classification_labels must map at least one target to its label names")
        unknown = [target for target in labels if target not in TARGETS]
        if unknown:
            raise ConfigError(f"unknown classification target(s) {unknown}; choose from {', '.join(TARGETS)}")
        for target, names in labels.items():
            if len(names) < 2:
                raise ConfigError(f"target {target!r} needs at least 2 labels, got {len(names)}")
        # In TARGETS order, not the dict's: config.json is written with sorted keys, so a reloaded classifier would
        # otherwise read its output rows as (noun, verb).
        self.targets = tuple(target for target in TARGETS if target in labels)
        self.num_labels_per_target = tuple(len(labels[target]) for target in self.targets)
        self.bert = VideoBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, sum(self.num_labels_per_target))
        self.post_init()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        classification_labels: dict[str, list[str]] | None = None,
        **kwargs: Any,
    ) -> "VideoBertForSegmentClassification":
        """Load a VideoBERT model directory (a pretrained one, whose heads are dropped and whose classifier starts
        random, or a saved classifier). `classification_labels` (target -> label names) sets the heads; it is
        required unless the directory is a saved classifier."""
        if classification_labels is not None:
            config = kwargs.pop("config", None) or VideoBertConfig.from_pretrained(pretrained_model_name_or_path)
            config.classification_labels = {target: list(names) for target, names in classification_labels.items()}
            kwargs["config"] = config
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> VideoBertForSegmentClassificationOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, num_targets)`, *optional*):
            `(batch_size,)` is accepted with one target. Label index of each target, in the order of `config.classification_labels`; -100 leaves an example out
            of that target's loss.
        """
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (batch, total_labels)
        target_logits = dict(zip(self.targets, logits.split(self.num_labels_per_target, dim=-1)))

        loss = None
        if labels is not None:
            labels = labels.view(labels.shape[0], -1)  # (batch, num_targets)
            if labels.shape[1] != len(self.targets):
                raise ConfigError(f"labels has {labels.shape[1]} column(s) but the model has targets {self.targets}")
            loss = sum(
                F.cross_entropy(target_logits[target].float(), labels[:, column], ignore_index=-100)
                for column, target in enumerate(self.targets)
            )
        return VideoBertForSegmentClassificationOutput(
            loss=loss,
            logits=logits,
            target_logits=target_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class BottleneckAdapter(nn.Module):
    """`x + up(gelu(down(x)))` with a `bottleneck`-wide hidden layer (Houlsby et al., 2019).

    The up-projection starts at zero, so a freshly inserted adapter is the identity and fine-tuning starts exactly
    from the pretrained network.
    """

    def __init__(self, hidden_size: int, bottleneck: int):
        super().__init__()
        if bottleneck < 1:
            raise ConfigError(f"the adapter bottleneck must be at least 1, got {bottleneck}")
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.up(F.gelu(self.down(hidden_states)))  # (..., hidden)


class AdaptedLinear(nn.Module):
    """A frozen projection followed by a `BottleneckAdapter`: what an adapted layer's output `dense` becomes."""

    def __init__(self, linear: nn.Linear, bottleneck: int):
        super().__init__()
        self.linear = linear
        self.adapter = BottleneckAdapter(linear.out_features, bottleneck)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.linear(hidden_states))
