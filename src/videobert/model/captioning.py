"""Video captioning with VideoBERT: the VideoBERT encoder and a BART decoder with cross-attention.

    encoder   VideoBERT (`VideoBertModel`) over `[CLS] [>] visual tokens [SEP]`, or with a text prefix such as the
              paper's template, `[CLS] now let me show you how to [MASK] the [MASK] [>] visual tokens [SEP]`
    decoder   transformers' `BartForCausalLM`: BART's decoder stack (causal self-attention, cross-attention to the
              encoder states, feed-forward) and its LM head, tied to its token embedding
    output    WordPiece ids of the model's text tokenizer: `[CLS]` starts a caption, `[SEP]` ends it, `[PAD]` pads

Encoder modes (`VideoBertCaptioningConfig.encoder_mode`), the rows of the paper-style comparison (Table 3):

    pretrained           the encoder of a pretrained VideoBERT model directory
    random               the same architecture, randomly initialised (what pretraining adds)
    features             a randomly initialised encoder of the same size whose visual positions read the segment's
                         continuous clip features (standardised, then a linear projection to the hidden size)
                         instead of visual-word embeddings: video without quantisation and without pretraining
    pretrained+features  the paper's "VideoBERT + S3D" row: both of the above side by side, the pretrained
                         encoder over the visual words and the features encoder over the same clips' features,
                         fused position by position: the decoder cross-attends to the sum of the two encoders'
                         states (the paper concatenates VideoBERT's features with S3D's per clip; a sum is that
                         concatenation followed by the decoder's own key/value projections with the two halves
                         tied, and keeps the pretrained states at the width the decoder reads).
    random+features      its control: the same two encoders with the word encoder randomly initialised. It sees
                         exactly what `pretrained+features` sees, so the difference between these two rows is what
                         VideoBERT pretraining adds on top of the features.

A VideoBERT pretrained over continuous clip features (`pretrain --visual-input features` or `both`, CBT) captions in
modes `pretrained` and `random`: its encoder itself reads the clip features (or words and features) through its
clip-feature input (`model.visual_input`), copied with the other weights in mode `pretrained`.

Fusion by sum was measured against concatenating the two state sequences (the decoder attending to 2 x length
states) and against concatenating them per position followed by a new linear layer; on the demo corpus the sum was
ahead of both (BENCHMARKS.md, "Captioning over seeds").

Why a small composite instead of `EncoderDecoderModel`: the features mode needs an input projection inside the
encoder, and a caption checkpoint must carry the joint tokenizer and the visual vocabulary (as VideoBERT model
directories do) so that it captions token sequences on its own; `EncoderDecoderModel` would need extra Auto classes
for both and still could not save the vocabulary. The composite is still only transformers parts: `VideoBertModel`
(a `BertModel`), `BartForCausalLM`, and `GenerationMixin` unchanged, so `generate` gives greedy and beam search,
length penalty, no-repeat n-grams and the key/value cache of the decoder as for BART itself.

The decoder's vocabulary is the text WordPiece vocabulary (`text_vocab_size` ids), so captions decode with the text
tokenizer. Its token embedding starts as a copy of the encoder's WordPiece rows when the widths agree
(`VideoBertForCaptioning.from_videobert`): in mode `pretrained` the decoder then starts from the words' pretrained
embeddings; in the random modes the copy is as random as the rest. A decoder narrower or wider than the encoder reads
the encoder states through a linear projection (`encoder_projection`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoTokenizer, BartConfig, BartForCausalLM, GenerationMixin, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.models.bart.modeling_bart import shift_tokens_right
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from videobert.model.configuration import VideoBertConfig, reading_model_files, require_model_dir
from videobert.model.modeling import (
    IGNORE_INDEX,
    VISUAL_VOCAB_DIR,
    VideoBertForPreTraining,
    VideoBertModel,
    require_tokenizer,
)
from videobert.model.tokenization import VideoBertTokenizer
from videobert.model.visual_input import ClipFeatureInput, visual_embeddings
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.utils.errors import ConfigError

ENCODER_MODES = ("pretrained", "random", "features", "pretrained+features", "random+features")
FEATURE_MODES = ("features", "pretrained+features", "random+features")  # modes that read continuous clip features
WORD_MODES = ("pretrained", "random", "pretrained+features", "random+features")  # modes that read visual words
PRETRAINED_MODES = ("pretrained", "pretrained+features")  # modes whose word encoder starts from the VideoBERT weights


@strict
class VideoBertCaptioningConfig(PreTrainedConfig):
    r"""
    Configuration of [`VideoBertForCaptioning`].

    Args:
        encoder (`VideoBertConfig` or `dict`):
            The VideoBERT encoder's configuration (joint vocabulary, special tokens, visual vocabulary hash).
        decoder (`BartConfig` or `dict`):
            The BART decoder's configuration; `vocab_size` must be the encoder's `text_vocab_size`.
        encoder_mode (`str`, defaults to `"pretrained"`):
            One of `ENCODER_MODES` (module docstring). Recorded so that a checkpoint says how its encoder started
            and which inputs it reads.
        feature_dim (`int`, *optional*):
            Width of the continuous clip features; required by the modes that read them (`FEATURE_MODES`).
        encoder_source (`str`, *optional*):
            The VideoBERT model directory the encoder (or, in the random modes, the architecture) came from.
        caption_prefix (`str`, *optional*):
            Text put before the visual tokens of every segment to caption (e.g. the paper's template
            `now let me show you how to [MASK] the [MASK]`); `None` encodes the video alone. Recorded so that a
            checkpoint captions new segments with the input it was trained on.
    """

    model_type = "videobert-captioning"
    sub_configs_defaults = {"encoder": VideoBertConfig, "decoder": BartConfig}

    encoder: VideoBertConfig | dict | None = None
    decoder: BartConfig | dict | None = None
    encoder_mode: str = "pretrained"
    feature_dim: int | None = None
    encoder_source: str | None = None
    caption_prefix: str | None = None
    is_encoder_decoder: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None

    @property
    def reads_features(self) -> bool:
        """Whether the encoder reads continuous clip features (`visual_features`): a features mode, or a VideoBERT
        pretrained over them."""
        return self.encoder_mode in FEATURE_MODES or self.encoder.reads_features

    @property
    def reads_words(self) -> bool:
        """Whether the encoder reads visual words (ids in `input_ids`)."""
        return self.encoder_mode in WORD_MODES and self.encoder.reads_words

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.encoder_mode not in ENCODER_MODES:
            raise ConfigError(f"encoder_mode must be one of {', '.join(ENCODER_MODES)}, got {self.encoder_mode!r}")
        if self.encoder.reads_features:
            if self.encoder_mode not in ("pretrained", "random"):
                raise ConfigError(
                    f"encoder_mode {self.encoder_mode!r}: a VideoBERT pretrained over clip features (visual_input="
                    f"{self.encoder.visual_input}) reads them itself; use encoder pretrained or random"
                )
            self.feature_dim = self.encoder.feature_dim
        if self.encoder_mode in FEATURE_MODES and (self.feature_dim is None or self.feature_dim < 1):
            raise ConfigError(f"encoder_mode {self.encoder_mode!r} needs a positive feature_dim, got {self.feature_dim}")
        if self.decoder.vocab_size != self.encoder.text_vocab_size:
            raise ConfigError(
                f"the decoder's vocab_size ({self.decoder.vocab_size}) must be the encoder's text vocabulary "
                f"({self.encoder.text_vocab_size} WordPiece ids)"
            )
        # Captions are WordPiece sequences [CLS] words [SEP], padded with [PAD]: the decoder's special ids are the
        # text tokenizer's, whatever was passed.
        self.pad_token_id = self.encoder.pad_token_id
        self.bos_token_id = self.decoder_start_token_id = self.encoder.cls_token_id
        self.eos_token_id = self.encoder.sep_token_id
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            setattr(self.decoder, name, getattr(self, name))

    @classmethod
    def for_encoder(
        cls,
        encoder: VideoBertConfig,
        *,
        encoder_mode: str = "pretrained",
        feature_dim: int | None = None,
        encoder_source: str | None = None,
        caption_prefix: str | None = None,
        decoder_layers: int = 2,
        decoder_hidden_size: int | None = None,
        decoder_heads: int | None = None,
        decoder_ffn_dim: int | None = None,
        max_caption_length: int = 64,
    ) -> "VideoBertCaptioningConfig":
        """A captioning config around `encoder`. The decoder has `decoder_layers` layers; its width, heads and
        feed-forward width default to the encoder's; `max_caption_length` is its position table (tokens, `[CLS]` and
        `[SEP]` included). Dropout follows the encoder's."""
        if decoder_layers < 1:
            raise ConfigError(f"decoder_layers must be at least 1, got {decoder_layers}")
        hidden = decoder_hidden_size or encoder.hidden_size
        heads = decoder_heads or encoder.num_attention_heads
        if hidden % heads:
            raise ConfigError(f"the decoder width ({hidden}) must be divisible by its heads ({heads})")
        decoder = BartConfig(
            vocab_size=encoder.text_vocab_size,
            d_model=hidden,
            decoder_layers=decoder_layers,
            decoder_attention_heads=heads,
            decoder_ffn_dim=decoder_ffn_dim or (encoder.intermediate_size if hidden == encoder.hidden_size else 4 * hidden),
            encoder_layers=0,
            max_position_embeddings=max_caption_length,
            dropout=encoder.hidden_dropout_prob,
            attention_dropout=encoder.attention_probs_dropout_prob,
            activation_function="gelu",
            init_std=encoder.initializer_range,
            forced_eos_token_id=None,
            is_decoder=True,
            is_encoder_decoder=False,
        )
        return cls(
            encoder=encoder,
            decoder=decoder,
            encoder_mode=encoder_mode,
            feature_dim=feature_dim,
            encoder_source=encoder_source,
            caption_prefix=caption_prefix,
        )


@dataclass
class VideoBertCaptioningOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
        Mean cross-entropy of the next caption token over the positions whose label is not -100.
    logits (`torch.FloatTensor` of shape `(batch_size, caption_length, text_vocab_size)`):
        Next-token scores over the WordPiece vocabulary.
    past_key_values (`EncoderDecoderCache`, returned with `use_cache=True`):
        The decoder's self- and cross-attention keys and values, for incremental decoding.
    encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, input_length, decoder_hidden_size)`):
        The encoder states the decoder attends to (after `encoder_projection` when there is one).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Any = None
    encoder_last_hidden_state: torch.FloatTensor | None = None


class VideoBertCaptionEncoder(nn.Module):
    """`VideoBertModel` as the caption encoder; in mode `features` its visual positions embed continuous clip features;
    in the modes that read both (`pretrained+features`, `random+features`) a second `VideoBertModel` (`feature_bert`)
    does that beside the first, which reads the visual words, and the output is the sum of the two encoders' states,
    position by position.

    Features are standardised with `feature_mean` / `feature_std` (set from the training split by
    `set_feature_statistics`, saved with the model) and projected to the hidden size; the embeddings' position and
    token-type terms and LayerNorm then apply as to any token.
    """

    main_input_name = "input_ids"  # what `generate` passes its input tensor as

    def __init__(self, config: VideoBertCaptioningConfig):
        super().__init__()
        self.config = config.encoder
        self.bert = VideoBertModel(config.encoder, add_pooling_layer=False)
        self.mode = config.encoder_mode
        self.feature_projection = self.feature_bert = self.clip_input = None
        if config.encoder.reads_features:  # a VideoBERT pretrained over clip features reads them itself
            encoder = config.encoder
            self.clip_input = ClipFeatureInput(encoder.feature_dim, encoder.hidden_size, encoder.layer_norm_eps)
        if config.encoder_mode in FEATURE_MODES:
            self.feature_projection = nn.Linear(config.feature_dim, config.encoder.hidden_size)
            self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
            self.register_buffer("feature_std", torch.ones(config.feature_dim))
        if config.encoder_mode in FEATURE_MODES and config.encoder_mode in WORD_MODES:
            self.feature_bert = VideoBertModel(config.encoder, add_pooling_layer=False)

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-dimension mean and std (feature_dim,) used to standardise clip features; std 0 counts as 1."""
        if self.clip_input is not None:
            self.clip_input.set_statistics(mean, std)
            return
        if self.feature_projection is None:
            raise ConfigError(f"feature statistics apply to the modes {', '.join(FEATURE_MODES)} only")
        with torch.no_grad():
            self.feature_mean.copy_(torch.as_tensor(mean))
            self.feature_std.copy_(torch.where(torch.as_tensor(std) > 0, torch.as_tensor(std), 1.0))

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_features: torch.FloatTensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        r"""
        visual_features (`torch.FloatTensor` of shape `(batch_size, input_length, feature_dim)`, `FEATURE_MODES`):
            The clip feature of each visual position of `input_ids` (any value elsewhere); required in the modes
            that read features.

        Returns `last_hidden_state` of shape `(batch_size, input_length, hidden)`: in the modes that read words and
        features, the word encoder's states plus the features encoder's.
        """
        kwargs.pop("return_dict", None)
        if self.clip_input is not None:
            if visual_features is None:
                raise ConfigError(f"a VideoBERT over clip features ({self.config.visual_input}) needs visual_features")
            embeddings = visual_embeddings(
                self.bert.get_input_embeddings(), self.clip_input, input_ids, visual_features,
                self.config.visual_input, self.config.is_visual(input_ids),
            )  # fmt: skip
            out = self.bert(
                inputs_embeds=embeddings, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
            )  # fmt: skip
            return BaseModelOutput(out.last_hidden_state, out.hidden_states, out.attentions)
        if self.feature_projection is None:
            out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
            return BaseModelOutput(out.last_hidden_state, out.hidden_states, out.attentions)
        if visual_features is None:
            raise ConfigError(f"encoder_mode {self.mode!r} needs visual_features")
        stream = self.bert if self.feature_bert is None else self.feature_bert
        embeddings = stream.embeddings.word_embeddings(input_ids)  # (batch, seq, hidden)
        standardised = (visual_features.to(embeddings.dtype) - self.feature_mean) / self.feature_std
        projected = self.feature_projection(standardised)  # (batch, seq, hidden)
        visual = self.config.is_visual(input_ids).unsqueeze(-1)  # (batch, seq, 1)
        out = stream(
            inputs_embeds=torch.where(visual, projected, embeddings), attention_mask=attention_mask,
            token_type_ids=token_type_ids, **kwargs,
        )  # fmt: skip
        if self.feature_bert is None:
            return BaseModelOutput(out.last_hidden_state, out.hidden_states, out.attentions)
        words = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        return BaseModelOutput(words.last_hidden_state + out.last_hidden_state)  # (batch, seq, hidden)


class VideoBertForCaptioning(PreTrainedModel, GenerationMixin):
    """VideoBERT encoder + BART decoder (module docstring). Build one with `from_videobert`, reload a saved one with
    `from_pretrained`; `tokenizer` (joint) and `visual_tokenizer` travel with the model as in VideoBERT directories."""

    config_class = VideoBertCaptioningConfig
    base_model_prefix = "captioning"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    tokenizer: VideoBertTokenizer | None = None
    visual_tokenizer: VisualTokenizer | None = None

    def __init__(self, config: VideoBertCaptioningConfig):
        super().__init__(config)
        self.encoder = VideoBertCaptionEncoder(config)
        self.decoder = BartForCausalLM(config.decoder)
        self.encoder_projection = (
            nn.Linear(config.encoder.hidden_size, config.decoder.d_model)
            if config.encoder.hidden_size != config.decoder.d_model
            else None
        )
        self.post_init()

    def get_encoder(self) -> VideoBertCaptionEncoder:
        return self.encoder

    def get_decoder(self) -> BartForCausalLM:
        return self.decoder

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.bert.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder.lm_head

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        visual_features: torch.FloatTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: Any = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> VideoBertCaptioningOutput:
        r"""
        input_ids, attention_mask, token_type_ids (`(batch_size, input_length)`):
            The encoder input, as `VideoBertTokenizer.batch_encode` (in mode features: with any visual word at the
            visual positions, e.g. `[V0]`).
        visual_features (`(batch_size, input_length, feature_dim)`, `FEATURE_MODES` only):
            See `VideoBertCaptionEncoder.forward`.
        decoder_input_ids (`(batch_size, caption_length)`, *optional*):
            `[CLS] caption`; built from `labels` (shifted right) when omitted.
        encoder_outputs (*optional*):
            Precomputed encoder states (`generate` encodes once and passes them to every decoding step).
        labels (`torch.LongTensor` of shape `(batch_size, caption_length)`, *optional*):
            `caption [SEP]` WordPiece ids, -100 at padding.
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                visual_features=visual_features,
            )  # fmt: skip
        elif isinstance(encoder_outputs, tuple):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        encoder_states = encoder_outputs.last_hidden_state  # (batch, input_length, encoder_hidden)
        if self.encoder_projection is not None:
            encoder_states = self.encoder_projection(encoder_states)  # (batch, input_length, decoder_hidden)
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )  # (batch, caption_length)
        decoded = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        loss = None
        if labels is not None:
            # (batch * caption_length, vocab) against (batch * caption_length,)
            loss = F.cross_entropy(
                decoded.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
            )
        return VideoBertCaptioningOutput(
            loss=loss,
            logits=decoded.logits,
            past_key_values=decoded.past_key_values,
            encoder_last_hidden_state=encoder_states,
        )

    @classmethod
    def from_videobert(
        cls,
        model_dir: str | os.PathLike,
        *,
        encoder_mode: str = "pretrained",
        feature_dim: int | None = None,
        caption_prefix: str | None = None,
        decoder_layers: int = 2,
        decoder_hidden_size: int | None = None,
        decoder_heads: int | None = None,
        decoder_ffn_dim: int | None = None,
        max_caption_length: int = 64,
    ) -> "VideoBertForCaptioning":
        """A new captioning model on the VideoBERT model directory `model_dir` (written by `videobert pretrain`).

        `pretrained` and `pretrained+features` copy its encoder (the latter's features encoder is new); `random`,
        `features` and `random+features` keep only its architecture and vocabulary, with weights drawn from the torch
        seed. The decoder is new (its embedding rule is in the module docstring). The directory's tokenizer and
        visual vocabulary are attached.
        """
        if encoder_mode not in ENCODER_MODES:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODER_MODES)}, got {encoder_mode!r}")
        source = VideoBertForPreTraining.from_pretrained(model_dir)
        require_tokenizer(source, model_dir)
        config = VideoBertCaptioningConfig.for_encoder(
            source.config, encoder_mode=encoder_mode, feature_dim=feature_dim, encoder_source=str(model_dir),
            caption_prefix=caption_prefix,
            decoder_layers=decoder_layers, decoder_hidden_size=decoder_hidden_size, decoder_heads=decoder_heads,
            decoder_ffn_dim=decoder_ffn_dim, max_caption_length=max_caption_length,
        )  # fmt: skip
        model = cls(config)
        if encoder_mode in PRETRAINED_MODES:
            state = {k: v for k, v in source.bert.state_dict().items() if not k.startswith("pooler.")}
            model.encoder.bert.load_state_dict(state)
            if source.clip_input is not None:
                model.encoder.clip_input.load_state_dict(source.clip_input.state_dict())
        if config.decoder.d_model == config.encoder.hidden_size:
            with torch.no_grad():
                text_rows = model.encoder.bert.get_input_embeddings().weight[: config.encoder.text_vocab_size]
                model.decoder.get_input_embeddings().weight.copy_(text_rows)  # the LM head is tied to it
        model.tokenizer, model.visual_tokenizer = source.tokenizer, source.visual_tokenizer
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus the text tokenizer files and the visual vocabulary."""
        if kwargs.get("is_main_process", True):
            save_directory = Path(save_directory)
            if self.tokenizer is not None:
                self.tokenizer.text_tokenizer.save_pretrained(save_directory)
            if self.visual_tokenizer is not None:
                self.visual_tokenizer.save_pretrained(save_directory / VISUAL_VOCAB_DIR)
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """Load a caption checkpoint directory written by `save_pretrained`; anything else raises `ConfigError`
        saying what the directory is."""
        directory = require_caption_dir(pretrained_model_name_or_path)
        with reading_model_files(directory):
            loaded = super().from_pretrained(directory, *model_args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
            if (directory / "tokenizer_config.json").is_file():
                model.tokenizer = VideoBertTokenizer(AutoTokenizer.from_pretrained(directory), model.config.encoder)
        if (directory / VISUAL_VOCAB_DIR).is_dir():
            visual_tokenizer = VisualTokenizer.from_pretrained(directory / VISUAL_VOCAB_DIR)
            model.config.encoder.check_visual_tokenizer(visual_tokenizer, directory / VISUAL_VOCAB_DIR)
            model.visual_tokenizer = visual_tokenizer
        return loaded


def require_caption_dir(path: str | os.PathLike) -> Path:
    """Return `path` if it is a caption checkpoint directory, else raise a `ConfigError` that says what it is."""
    return require_model_dir(
        path, VideoBertCaptioningConfig.model_type, "caption checkpoint directory",
        {VideoBertConfig.model_type: "; it is a pretrained VideoBERT: build a captioner on it with `videobert finetune "
                                     "MODEL WORK OUT --task caption`"},
    )  # fmt: skip


AutoConfig.register(VideoBertCaptioningConfig.model_type, VideoBertCaptioningConfig, exist_ok=True)
