"""VideoBERT configuration: a `BertConfig` whose vocabulary is WordPiece + `[>]` + visual words.

Joint vocabulary layout (T = ``text_vocab_size``, V = ``visual_vocab_size``)::

    id            token
    [0, T)        the text checkpoint's WordPiece vocabulary, unchanged (so [CLS], [SEP], [MASK], [PAD] keep
                  their ids and the text-only path is exactly the text BERT)
    T             [>]        the separator between the text and the visual part (``visual_separator_token_id``)
    T + 1 + v     [V{v}]     visual word v of the hierarchical k-means vocabulary, 0 <= v < V
                             (``visual_token_offset`` = T + 1)

    vocab_size = T + 1 + V

The config also records the content hash of the visual vocabulary the model was trained with, so that a model is
never used with visual tokens produced by a different k-means tree (same ids, different meaning), and the visual
input it reads (`visual_input`): visual words, continuous clip features (CBT) or both. A model that reads features
alone has a one-word placeholder vocabulary (`[V0]` marks the visual positions; `model.visual_input`).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import BertConfig

from videobert.utils.errors import ConfigError, InputError, VideoBertError

if TYPE_CHECKING:
    from videobert.tokenizer.hkmeans import VisualTokenizer

# Labels of the linguistic–visual alignment head. The head is BERT's next-sentence head (see modeling.py), so
# "aligned" takes BERT's "is next" index.
ALIGNED = 0
NOT_ALIGNED = 1

# What the visual positions of a sequence read (`model.visual_input` says how each is embedded).
VISUAL_INPUTS = ("words", "features", "both")

# Fields of a text BERT config that describe the network and carry over unchanged into the joint model.
_ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "classifier_dropout",
)


@strict
class VideoBertConfig(BertConfig):
    r"""
    Configuration of [`VideoBertModel`] and [`VideoBertForPreTraining`]. All `BertConfig` fields keep their
    meaning; `vocab_size` is derived from the joint layout (module docstring) and may be omitted.

    Args:
        text_vocab_size (`int`, defaults to 30522):
            Number of WordPiece ids, i.e. the text checkpoint's embedding rows. Ids `[0, text_vocab_size)` are text.
        visual_vocab_size (`int`, defaults to 20736):
            Number of visual words (`k ** depth` of the hierarchical k-means; the paper uses 12 ** 4).
        visual_vocab_hash (`str`, *optional*):
            `VisualTokenizer.content_hash` of the visual vocabulary; `None` when the model was built without one
            (then only the vocabulary size is checked).
        cls_token / sep_token / mask_token / pad_token (`str`):
            The text tokenizer's special tokens, as strings.
        cls_token_id / sep_token_id / mask_token_id / pad_token_id (`int`):
            Their ids in the text tokenizer (they must lie in the text range).
        visual_separator_token (`str`, defaults to `"[>]"`):
            The token between the text and the visual part.
        visual_separator_token_id (`int`, *optional*):
            Always `text_vocab_size`; filled in when omitted and checked when given.
        visual_input (`str`, defaults to `"words"`):
            What a visual position reads: `"words"` (the visual word's embedding), `"features"` (the projected
            continuous clip feature; masked positions are trained by noise-contrastive estimation) or `"both"` (the
            two summed).
        feature_dim (`int`, *optional*):
            Width of the clip features; required when `visual_input` reads features.
        nce_temperature (`float`, defaults to 0.1):
            Temperature of the noise-contrastive loss over masked clip features (cosine similarity / temperature).
        feature_source (`dict`, *optional*):
            For a model that reads features: how they were made (the feature store's meta.json fields backbone,
            dim, fps, clip_frames, size), so that a new video is embedded the same way (`videobert predict`).
    """

    model_type = "videobert"

    vocab_size: int | None = None
    text_vocab_size: int = 30522
    visual_vocab_size: int = 12**4
    visual_vocab_hash: str | None = None
    cls_token: str = "[CLS]"
    cls_token_id: int = 101
    sep_token: str = "[SEP]"
    sep_token_id: int = 102
    mask_token: str = "[MASK]"
    mask_token_id: int = 103
    pad_token: str = "[PAD]"
    pad_token_id: int = 0
    visual_separator_token: str = "[>]"
    visual_separator_token_id: int | None = None
    visual_input: str = "words"
    feature_dim: int | None = None
    nce_temperature: float = 0.1
    feature_source: dict | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """`BertConfig.from_pretrained`; a config.json with fields of the wrong type raises `InputError`."""
        with reading_model_files(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __post_init__(self, **kwargs: Any) -> None:
        # Checks raise ConfigError here rather than in `validate_*` methods, which `@strict` would re-wrap.
        if self.text_vocab_size <= 0:
            raise ConfigError(f"text_vocab_size must be positive, got {self.text_vocab_size}")
        if self.visual_vocab_size <= 0:
            raise ConfigError(f"visual_vocab_size must be positive, got {self.visual_vocab_size}")
        joint_size = self.text_vocab_size + 1 + self.visual_vocab_size
        if self.vocab_size is not None and self.vocab_size != joint_size:
            raise ConfigError(
                f"vocab_size={self.vocab_size} does not match the joint layout text_vocab_size + 1 + "
                f"visual_vocab_size = {self.text_vocab_size} + 1 + {self.visual_vocab_size} = {joint_size}"
            )
        self.vocab_size = joint_size
        if self.visual_separator_token_id is None:
            self.visual_separator_token_id = self.text_vocab_size
        elif self.visual_separator_token_id != self.text_vocab_size:
            raise ConfigError(
                f"visual_separator_token_id must be text_vocab_size ({self.text_vocab_size}), "
                f"got {self.visual_separator_token_id}"
            )
        for name in ("cls_token_id", "sep_token_id", "mask_token_id", "pad_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.text_vocab_size:
                raise ConfigError(f"{name}={value} is outside the text vocabulary [0, {self.text_vocab_size})")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.visual_input not in VISUAL_INPUTS:
            raise ConfigError(f"visual_input must be one of {', '.join(VISUAL_INPUTS)}, got {self.visual_input!r}")
        if self.reads_features and (self.feature_dim is None or self.feature_dim < 1):
            raise ConfigError(
                f"visual_input {self.visual_input!r} needs a positive feature_dim, got {self.feature_dim}"
            )
        if self.nce_temperature <= 0:
            raise ConfigError(f"nce_temperature must be positive, got {self.nce_temperature}")
        if self.type_vocab_size < 2:
            raise ConfigError(
                f"type_vocab_size must be at least 2 (0 marks text, 1 the visual part), got {self.type_vocab_size}"
            )
        super().__post_init__(**kwargs)

    @classmethod
    def from_text_config(
        cls,
        text_config: BertConfig,
        *,
        visual_vocab_size: int,
        visual_vocab_hash: str | None = None,
        special_tokens: dict[str, tuple[str, int]] | None = None,
        **kwargs: Any,
    ) -> "VideoBertConfig":
        """The joint config of a text BERT extended with `visual_vocab_size` visual words.

        `special_tokens` maps a role (`"cls"`, `"sep"`, `"mask"`, `"pad"`) to the text tokenizer's (token, id);
        roles left out keep the BERT defaults. `kwargs` override any other field (e.g. `attn_implementation`).
        """
        if text_config.model_type == cls.model_type:
            raise ConfigError(
                "this checkpoint is already a VideoBERT model; load it with VideoBertForPreTraining.from_pretrained"
            )
        if text_config.model_type != BertConfig.model_type:
            raise ConfigError(f"VideoBERT extends a BERT checkpoint; got model_type {text_config.model_type!r}")
        fields = {name: getattr(text_config, name) for name in _ARCHITECTURE_FIELDS}
        for role, (token, token_id) in (special_tokens or {}).items():
            fields[f"{role}_token"] = token
            fields[f"{role}_token_id"] = token_id
        return cls(
            text_vocab_size=text_config.vocab_size,
            visual_vocab_size=visual_vocab_size,
            visual_vocab_hash=visual_vocab_hash,
            **fields,
            **kwargs,
        )

    @property
    def reads_words(self) -> bool:
        """Whether visual positions read visual-word embeddings (`visual_input` words or both)."""
        return self.visual_input in ("words", "both")

    @property
    def reads_features(self) -> bool:
        """Whether visual positions read continuous clip features (`visual_input` features or both)."""
        return self.visual_input in ("features", "both")

    def check_visual_input(self, has_features: bool, source: str | os.PathLike = "") -> None:
        """Raise `ConfigError` unless clip features are given (`has_features`) exactly when this model reads them;
        `source` names the model for the message."""
        where = f"{source}: " if str(source) else ""
        if has_features and not self.reads_features:
            raise ConfigError(
                f"{where}the model was trained on visual words (visual_input=words) and cannot read continuous clip "
                "features; pretrain a model with --visual-input features or both for them"
            )
        if self.reads_features and not has_features:
            raise ConfigError(
                f"{where}the model was trained on continuous clip features (visual_input={self.visual_input}) and "
                "needs them: run `videobert extract` on the work directory (clips.parquet and features/)"
            )

    @property
    def visual_token_offset(self) -> int:
        """Id of `[V0]`; visual word v has id `visual_token_offset + v`."""
        return self.text_vocab_size + 1

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token -> id, `[>]` included."""
        return {
            self.cls_token: self.cls_token_id,
            self.sep_token: self.sep_token_id,
            self.mask_token: self.mask_token_id,
            self.pad_token: self.pad_token_id,
            self.visual_separator_token: self.visual_separator_token_id,
        }

    def visual_token_to_id(self, visual_token: Any) -> Any:
        """Joint id of visual word(s) `visual_token` (an int, a NumPy array or a tensor)."""
        return visual_token + self.visual_token_offset

    def id_to_visual_token(self, token_id: Any) -> Any:
        """Visual word of joint id(s) `token_id`; only meaningful where `is_visual(token_id)`."""
        return token_id - self.visual_token_offset

    def is_visual(self, token_id: Any) -> Any:
        """Whether joint id(s) `token_id` are visual words (elementwise for arrays and tensors)."""
        return (token_id >= self.visual_token_offset) & (token_id < self.vocab_size)

    def is_text(self, token_id: Any) -> Any:
        """Whether joint id(s) `token_id` are WordPiece ids (special text tokens included, `[>]` excluded)."""
        return (token_id >= 0) & (token_id < self.text_vocab_size)

    def check_visual_tokenizer(self, visual_tokenizer: "VisualTokenizer", source: str | os.PathLike = "") -> None:
        """Raise `ConfigError` unless `visual_tokenizer` is the vocabulary this config was built for.

        `source` names where the visual tokenizer came from, for the message.
        """
        where = f" ({source})" if str(source) else ""
        if visual_tokenizer.vocab_size != self.visual_vocab_size:
            raise ConfigError(
                f"visual vocabulary{where} has {visual_tokenizer.vocab_size} words but the model was built for "
                f"{self.visual_vocab_size}"
            )
        if self.visual_vocab_hash is not None and visual_tokenizer.content_hash != self.visual_vocab_hash:
            raise ConfigError(
                f"visual vocabulary{where} has hash {visual_tokenizer.content_hash} but the model was trained with "
                f"hash {self.visual_vocab_hash}; its visual token ids mean different clips. Re-tokenize with the "
                "model's vocabulary (the `visual_vocab/` folder of the model directory) or retrain the model."
            )


@contextlib.contextmanager
def reading_model_files(path: str | os.PathLike) -> Iterator[None]:
    """Turn what a damaged model directory makes `from_pretrained` raise (a truncated model.safetensors, a
    config.json whose fields have the wrong type or an impossible value) into an `InputError` naming the directory;
    videobert's own errors pass through unchanged."""
    try:
        yield
    except VideoBertError:
        raise
    except (SafetensorError, StrictDataclassError, OSError, RuntimeError, TypeError, ValueError, KeyError) as error:
        detail = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in detail[:2]) if detail else ""
        # Name the file when the error says which one it is.
        culprit = {SafetensorError: "model.safetensors", StrictDataclassError: "config.json"}
        name = next((name for kind, name in culprit.items() if isinstance(error, kind)), None)
        where = Path(path) / name if name and Path(path).is_dir() else path
        raise InputError(where, f"cannot load the model ({type(error).__name__}: {detail})") from error


def require_visual_words(config: VideoBertConfig, source: str | os.PathLike, task: str) -> None:
    """Raise `ConfigError` unless the model of `config` (from `source`) reads visual words alone: `task` feeds it
    visual words and nothing else."""
    if config.visual_input != "words":
        raise ConfigError(
            f"{source}: {task} feeds the model visual words only, but it was pretrained with "
            f"visual_input={config.visual_input} (continuous clip features); use a model pretrained with "
            "--visual-input words, or the tasks that read clip features (evaluate --task zeroshot or retrieval)"
        )


def directory_model_type(path: str | os.PathLike) -> str | None:
    """The `model_type` recorded in `path`/config.json, or None when there is no such file; a config.json that is
    not a JSON object raises a `ConfigError` naming it."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        with open(config_file, encoding="utf-8") as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_file}: unreadable ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file}: not a JSON object")
    return config.get("model_type")


def require_model_dir(
    path: str | os.PathLike, model_type: str, kind: str, hints: dict[str | None, str] | None = None
) -> Path:
    """Return `path` if its config.json records `model_type`, else raise a `ConfigError` that names the directory
    and says what it is instead; `kind` names what was expected (e.g. "VideoBERT model directory"), `hints` adds a
    suggestion for a directory of another known model_type."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory; expected a {kind}")
    found = directory_model_type(path)
    if found is None:
        raise ConfigError(f"{path}: no config.json; not a {kind}")
    if found != model_type:
        raise ConfigError(f"{path}: model_type is {found!r}, not a {kind}{(hints or {}).get(found, '')}")
    return path


def require_videobert_dir(path: str | os.PathLike) -> Path:
    """Return `path` if it is a VideoBERT model directory, else raise a `ConfigError` that says what it is."""
    return require_model_dir(
        path, VideoBertConfig.model_type, "VideoBERT model directory",
        {"bert": "; to start from a text BERT use VideoBertForPreTraining.from_text_checkpoint"},
    )  # fmt: skip
