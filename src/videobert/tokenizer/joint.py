"""The joint sequence layout (`[CLS] text [>] visual [SEP]`, model.tokenization) without torch or transformers.

`VideoBertTokenizer` builds its sequences here, and so does the ONNX runtime (`serving.runtime`), which must run
where PyTorch is not installed: both read the same ids from a layout, `VideoBertConfig` itself or the plain
`JointLayout` an export writes, so the two cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from videobert.utils.errors import ConfigError

TEXT_TYPE = 0
VISUAL_TYPE = 1


class Layout(Protocol):
    """What a joint sequence needs to know of the vocabulary (`VideoBertConfig` has all of it)."""

    cls_token_id: int
    sep_token_id: int
    pad_token_id: int
    mask_token_id: int
    text_vocab_size: int
    visual_vocab_size: int
    max_position_embeddings: int

    @property
    def visual_separator_token_id(self) -> int: ...

    @property
    def visual_token_offset(self) -> int: ...


@dataclass(frozen=True)
class JointLayout:
    """The joint vocabulary's layout as plain numbers (configuration.py explains it): what an export records so that
    a deployment builds its sequences without transformers."""

    cls_token_id: int
    sep_token_id: int
    pad_token_id: int
    mask_token_id: int
    text_vocab_size: int
    visual_vocab_size: int
    max_position_embeddings: int

    @property
    def visual_separator_token_id(self) -> int:
        return self.text_vocab_size

    @property
    def visual_token_offset(self) -> int:
        return self.text_vocab_size + 1

    @classmethod
    def of(cls, layout: Layout) -> "JointLayout":
        """The numbers of any layout, e.g. a `VideoBertConfig`."""
        return cls(**{name: int(getattr(layout, name)) for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def encode_joint(
    layout: Layout,
    text_ids: Sequence[int] | None,
    visual_tokens: Sequence[int] | None,
    max_length: int | None = None,
) -> dict[str, list[int]]:
    """`input_ids`, `token_type_ids` and `attention_mask` of one sequence from the text's WordPiece ids (None: no
    text) and the visual words in `[0, visual_vocab_size)` (None: no video); `VideoBertTokenizer.encode` documents
    the layouts and how a sequence longer than `max_length` (default `max_position_embeddings`) is cut."""
    if text_ids is None and visual_tokens is None:
        raise ValueError("encode needs text, visual_tokens or both")
    max_length = layout.max_position_embeddings if max_length is None else max_length
    text_ids = [] if text_ids is None else list(text_ids)
    visual_ids = [] if visual_tokens is None else _visual_ids(layout, visual_tokens)
    n_special = 2 if visual_tokens is None else 3  # [CLS], [SEP] and, with video, [>]
    if max_length < n_special:
        raise ConfigError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
    n_text, n_visual = fair_lengths(len(text_ids), len(visual_ids), max_length - n_special)

    input_ids = [layout.cls_token_id, *text_ids[:n_text]]
    if visual_tokens is None:
        input_ids.append(layout.sep_token_id)
        token_type_ids = [TEXT_TYPE] * len(input_ids)
    else:
        input_ids.append(layout.visual_separator_token_id)
        n_text_segment = len(input_ids)
        input_ids += [*visual_ids[:n_visual], layout.sep_token_id]
        token_type_ids = [TEXT_TYPE] * n_text_segment + [VISUAL_TYPE] * (len(input_ids) - n_text_segment)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": [1] * len(input_ids)}


def pad_joint(layout: Layout, encoded: Sequence[dict[str, list[int]]], width: int | None = None) -> dict[str, np.ndarray]:
    """Right-pad encoded sequences to `width` (default: the longest): (batch, seq) int64 arrays; padding has `[PAD]`
    ids, token type 0 and attention mask 0."""
    width = max(len(e["input_ids"]) for e in encoded) if width is None else width
    pad_values = {"input_ids": layout.pad_token_id, "token_type_ids": TEXT_TYPE, "attention_mask": 0}
    return {
        key: np.asarray([e[key] + [pad] * (width - len(e[key])) for e in encoded], dtype=np.int64).reshape(-1, width)
        for key, pad in pad_values.items()
    }


class JointEncoder:
    """Batches of joint sequences as NumPy arrays, from a text encoder (text -> WordPiece ids, no special tokens)
    and a layout."""

    def __init__(self, encode_text: Callable[[str], list[int]], layout: Layout):
        self.encode_text = encode_text
        self.layout = layout

    def encode(
        self, text: str | None = None, visual_tokens: Sequence[int] | None = None, max_length: int | None = None
    ) -> dict[str, list[int]]:
        return encode_joint(self.layout, None if text is None else self.encode_text(text), visual_tokens, max_length)

    def batch_encode(
        self,
        texts: Sequence[str | None] | None = None,
        visual_tokens: Sequence[Sequence[int] | None] | None = None,
        max_length: int | None = None,
        padding: str = "longest",
    ) -> dict[str, np.ndarray]:
        """`encode` each (text, visual_tokens) pair, right-padded to the longest or to `max_length` (`padding`
        "max_length"): (batch, seq) int64 arrays."""
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
        width = None
        if padding == "max_length":
            width = self.layout.max_position_embeddings if max_length is None else max_length
        return pad_joint(self.layout, encoded, width)


def fair_lengths(n_text: int, n_visual: int, budget: int) -> tuple[int, int]:
    """How many text and visual tokens to keep within `budget`: the shorter side is kept whole when it fits into
    its half, the longer side gets the rest; when both exceed their half, text gets ceil(budget / 2)."""
    if n_text + n_visual <= budget:
        return n_text, n_visual
    keep_text = min(n_text, max(budget - budget // 2, budget - n_visual))
    return keep_text, min(n_visual, budget - keep_text)


def _visual_ids(layout: Layout, visual_tokens: Sequence[Any]) -> list[int]:
    tokens = [int(v) for v in visual_tokens]
    out_of_range = [v for v in tokens if not 0 <= v < layout.visual_vocab_size]
    if out_of_range:
        raise ConfigError(
            f"visual token {out_of_range[0]} is outside the visual vocabulary "
            f"[0, {layout.visual_vocab_size}); were these tokens made with another vocabulary?"
        )
    return [layout.visual_token_offset + v for v in tokens]
