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
from videobert.utils.errors import ConfigError

TEXT_TYPE = 0
VISUAL_TYPE = 1


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
        if text is None and visual_tokens is None:
            raise ValueError("encode needs text, visual_tokens or both")
        max_length = self.config.max_position_embeddings if max_length is None else max_length
        text_ids = [] if text is None else self.text_tokenizer.encode(text, add_special_tokens=False)
        visual_ids = [] if visual_tokens is None else self._visual_ids(visual_tokens)
        n_special = 2 if visual_tokens is None else 3  # [CLS], [SEP] and, with video, [>]
        if max_length < n_special:
            raise ConfigError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
        n_text, n_visual = _fair_lengths(len(text_ids), len(visual_ids), max_length - n_special)

        input_ids = [self.config.cls_token_id, *text_ids[:n_text]]
        if visual_tokens is None:
            input_ids.append(self.config.sep_token_id)
            token_type_ids = [TEXT_TYPE] * len(input_ids)
        else:
            input_ids.append(self.config.visual_separator_token_id)
            n_text_segment = len(input_ids)
            input_ids += [*visual_ids[:n_visual], self.config.sep_token_id]
            token_type_ids = [TEXT_TYPE] * n_text_segment + [VISUAL_TYPE] * (len(input_ids) - n_text_segment)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": [1] * len(input_ids)}

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
        if texts is None and visual_tokens is None:
            raise ValueError("batch_encode needs texts, visual_tokens or both")
        n = len(texts) if texts is not None else len(visual_tokens)
        texts = [None] * n if texts is None else texts
        visual_tokens = [None] * n if visual_tokens is None else visual_tokens
        if len(texts) != len(visual_tokens):
            raise ValueError(f"got {len(texts)} texts but {len(visual_tokens)} visual sequences")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        encoded = [self.encode(t, v, max_length) for t, v in zip(texts, visual_tokens)]
        if padding == "max_length":
            width = self.config.max_position_embeddings if max_length is None else max_length
        else:
            width = max(len(e["input_ids"]) for e in encoded)
        pad_values = {"input_ids": self.config.pad_token_id, "token_type_ids": TEXT_TYPE, "attention_mask": 0}
        return {
            key: torch.tensor([e[key] + [pad] * (width - len(e[key])) for e in encoded], dtype=torch.long)
            for key, pad in pad_values.items()
        }

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

    def _token(self, token_id: int) -> str:
        if self.config.is_text(token_id):
            return self.text_tokenizer.convert_ids_to_tokens(token_id)
        if token_id == self.config.visual_separator_token_id:
            return self.config.visual_separator_token
        if self.config.is_visual(token_id):
            return f"[V{self.config.id_to_visual_token(token_id)}]"
        raise ConfigError(f"id {token_id} is outside the joint vocabulary [0, {self.config.vocab_size})")

    def _visual_ids(self, visual_tokens: Sequence[int]) -> list[int]:
        tokens = [int(v) for v in visual_tokens]
        out_of_range = [v for v in tokens if not 0 <= v < self.config.visual_vocab_size]
        if out_of_range:
            raise ConfigError(
                f"visual token {out_of_range[0]} is outside the visual vocabulary "
                f"[0, {self.config.visual_vocab_size}); were these tokens made with another vocabulary?"
            )
        return [self.config.visual_token_to_id(v) for v in tokens]


def _fair_lengths(n_text: int, n_visual: int, budget: int) -> tuple[int, int]:
    """How many text and visual tokens to keep within `budget`: the shorter side is kept whole when it fits into
    its half, the longer side gets the rest; when both exceed their half, text gets ceil(budget / 2)."""
    if n_text + n_visual <= budget:
        return n_text, n_visual
    keep_text = min(n_text, max(budget - budget // 2, budget - n_visual))
    return keep_text, min(n_visual, budget - keep_text)


def _as_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
