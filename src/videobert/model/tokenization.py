"""The joint VideoBERT tokenizer: the text checkpoint's WordPiece tokenizer plus visual words.

Visual words are not added to the WordPiece tokenizer (20,736 added tokens would make it slow and huge); their
ids are computed from the layout in `VideoBertConfig` (`[>]` = text_vocab_size, `[V{v}]` = text_vocab_size + 1 + v).

Sequence layouts (token type 0 = text, 1 = visual, as BERT's segment A / segment B)::

    text and video   [CLS] text [>] visual [SEP]      types 0 ... 0 0 1 ... 1
    text only        [CLS] text [SEP]                 types 0 ... 0          (exactly the text BERT's input)
    video only       [CLS] [>] visual [SEP]           types 0 0 1 ... 1

`[>]` closes the text segment like BERT's first `[SEP]` closes segment A, so it takes type 0. Video-only keeps the
`[>]`: the visual part then always reads `[>] visual [SEP]`, whether or not text precedes it, which is also the
shape of the zero-shot template `[CLS] now let me show you how to [MASK] the [MASK] [>] visual [SEP]`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videobert.model.configuration import VideoBertConfig, require_videobert_dir
from videobert.tokenizer.joint import TEXT_TYPE, VISUAL_TYPE, JointEncoder
from videobert.utils.errors import ConfigError

__all__ = ["TEXT_TYPE", "VISUAL_TYPE", "VideoBertTokenizer"]


class VideoBertTokenizer:
    """Encode text and visual words into joint ids, and back.

    `text_tokenizer` is the text checkpoint's tokenizer; `config` gives the joint layout and must agree with it.
    """

    def __init__(self, text_tokenizer: PreTrainedTokenizerBase, config: VideoBertConfig):
        self.text_tokenizer = text_tokenizer
        self.config = config
        if len(text_tokenizer) > config.text_vocab_size:
            raise ConfigError(
                f"the text tokenizer has {len(text_tokenizer)} tokens but the model has only "
                f"{config.text_vocab_size} text ids"
            )
        for role in ("cls", "sep", "mask", "pad"):
            token_id = getattr(text_tokenizer, f"{role}_token_id")
            if token_id != getattr(config, f"{role}_token_id"):
                raise ConfigError(
                    f"the text tokenizer's {role} token id is {token_id}, the model's config says "
                    f"{getattr(config, f'{role}_token_id')}"
                )
        # The sequence layout itself lives in tokenizer.joint, shared with the torch-free ONNX runtime.
        self.joint = JointEncoder(self._text_ids, config)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, config: VideoBertConfig | None = None
    ) -> "VideoBertTokenizer":
        """Load from a VideoBERT model directory (its text tokenizer files and config.json)."""
        directory = require_videobert_dir(directory)
        return cls(AutoTokenizer.from_pretrained(directory), config or VideoBertConfig.from_pretrained(directory))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the text tokenizer files and config.json, so the directory loads with `from_pretrained`."""
        directory = Path(directory)
        self.text_tokenizer.save_pretrained(directory)
        self.config.save_pretrained(directory)
        return directory

    def __len__(self) -> int:
        return self.config.vocab_size

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    def encode(
        self,
        text: str | None = None,
        visual_tokens: Sequence[int] | None = None,
        max_length: int | None = None,
    ) -> dict[str, list[int]]:
        """`input_ids`, `token_type_ids` and `attention_mask` of one sequence (layouts in the module docstring).

        `visual_tokens` are visual words in `[0, visual_vocab_size)` (not joint ids). When the sequence is longer
        than `max_length` (default: `max_position_embeddings`), the longer side is cut first and a side that fits
        into half of the budget is kept whole, so neither modality crowds out the other; both sides keep their
        beginning.
        """
        return self.joint.encode(text, visual_tokens, max_length)

    def batch_encode(
        self,
        texts: Sequence[str | None] | None = None,
        visual_tokens: Sequence[Sequence[int] | None] | None = None,
        max_length: int | None = None,
        padding: Literal["longest", "max_length"] = "longest",
    ) -> dict[str, torch.Tensor]:
        """`encode` each (text, visual_tokens) pair and right-pad to the longest sequence or to `max_length`.

        Returns (batch, seq) int64 tensors; padding has `[PAD]` ids, token type 0 and attention mask 0.
        """
        batch = self.joint.batch_encode(texts, visual_tokens, max_length, padding)
        return {key: torch.from_numpy(value) for key, value in batch.items()}

    def convert_ids_to_tokens(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Token strings; visual words render as `[V{v}]`."""
        return [self._token(int(i)) for i in _as_list(ids)]

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Readable text: runs of WordPiece ids go through the text tokenizer's decoder, visual words render as
        `[V{v}]`, the separator as `[>]`."""
        pieces: list[str] = []
        text_run: list[int] = []
        for token_id in [*_as_list(ids), None]:  # None flushes the last text run
            if token_id is not None and self.config.is_text(token_id):
                text_run.append(token_id)
                continue
            if text_run:
                pieces.append(self.text_tokenizer.decode(text_run, skip_special_tokens=skip_special_tokens))
                text_run = []
            if token_id is not None and not (skip_special_tokens and token_id == self.config.visual_separator_token_id):
                pieces.append(self._token(token_id))
        return " ".join(piece for piece in pieces if piece)

    def _text_ids(self, text: str) -> list[int]:
        return self.text_tokenizer.encode(text, add_special_tokens=False)

    def _token(self, token_id: int) -> str:
        if self.config.is_text(token_id):
            return self.text_tokenizer.convert_ids_to_tokens(token_id)
        if token_id == self.config.visual_separator_token_id:
            return self.config.visual_separator_token
        if self.config.is_visual(token_id):
            return f"[V{self.config.id_to_visual_token(token_id)}]"
        raise ConfigError(f"id {token_id} is outside the joint vocabulary [0, {self.config.vocab_size})")


def _as_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
