"""The ``pretrain`` stage: VideoBERT pretraining on a work directory with the Hugging Face Trainer.

    videobert pretrain WORK --out MODEL_DIR                       # MiniLM initialisation, one process
    videobert pretrain WORK --out M --init scratch:2x64 --max-steps 50  # a tiny random BERT (tests, CI)
    videobert pretrain WORK --out M --visual-input features        # continuous clip features, masked clips by NCE
    torchrun --nproc_per_node 8 -m videobert.cli pretrain WORK --out M --bf16     # DDP on one node
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc_per_node 8 -m videobert.cli pretrain ...
    accelerate launch --num_processes 8 -m videobert.cli pretrain WORK --out M      # the same through accelerate

Recipe: setup (visual vocabulary, model from a text checkpoint, example streams, objectives, Trainer) -> train ->
save (the model, atomically, and metrics.json) -> cleanup. Examples, regimes and masking are described in
`videobert.training.data`, the objectives (masked words, masked visual words, alignment, masked clips) in
`videobert.training.objectives`; the network is `videobert.model` (this module defines no layers).

Distributed training. Every process builds the same model (same seed; DDP also broadcasts rank 0's weights) and
streams its own share of the training videos, so ``batch_size`` is per process and the global batch is
``batch_size x processes x grad_accum``. Gradients are averaged over processes, so N processes with batch B equal
one process accumulating N batches of B (``tests/test_distributed.py`` checks this with two CPU processes on gloo).
Evaluation is sharded the same way and its sums are reduced over processes. FSDP goes through accelerate:
``accelerate launch --use_fsdp --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP --fsdp_transformer_layer_cls_to_wrap
BertLayer --fsdp_state_dict_type FULL_STATE_DICT -m videobert.cli pretrain ...`` (the embeddings and the tied
output layer then stay in the root unit; the final save gathers the full state dict). FSDP is not exercised by the
tests.

Output directory::

    OUT/config.json, model.safetensors, tokenizer files, visual_vocab/   the model (`VideoBertForPreTraining`)
    OUT/metrics.json   final per-regime losses (train and held-out), alignment accuracy, masked-clip loss and
                       accuracy (models over clip features), tokens/s
    OUT/run.json       the settings and the inputs' identity (vocabulary hash, features fingerprint)
    OUT/checkpoints/   Trainer checkpoints (checkpoint-STEP/), what ``resume`` continues from
    OUT/logs/          TensorBoard: each regime's masked-token loss, the alignment loss and accuracy

The model is written to a temporary folder and then moved into OUT with config.json last: OUT reads as a model
directory (`require_videobert_dir`) only once every model file is in place, and metrics.json, written after it,
marks the run finished. Re-running a finished run with the same settings does nothing; an interrupted one resumes
from its last checkpoint.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from accelerate import PartialState
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForPreTraining,
    BertTokenizerFast,
    PreTrainedTokenizerBase,
    SchedulerType,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback

from videobert.features.store import FeatureStore
from videobert.model import VideoBertForPreTraining, default_text_checkpoint
from videobert.model.configuration import VISUAL_INPUTS
from videobert.tokenizer.hkmeans import FeatureSource, VisualTokenizer
from videobert.tokenizer.stages import features_fingerprint, tokens_metadata
from videobert.training.checkpoints import last_complete_checkpoint, set_aside_damaged
from videobert.training.data import MaskingCollator, PretrainCorpus, PretrainDataConfig, PretrainStream
from videobert.training.objectives import (
    Objective,
    ObjectiveMeter,
    build_objectives,
    model_inputs,
    objectives_step,
)
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import publish_permissions, read_json, write_json
from videobert.utils.lock import LOCK_FILE, locked
from videobert.utils.stage import StageReport, flatten
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

STAGE = "pretrain"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
_STAGING = ".model.tmp"
_SCRATCH = re.compile(r"scratch:(\d+)x(\d+)(?:x(\d+))?")
# The WordPiece trainer's alphabet and special tokens alone take about 100 entries.
_MIN_TEXT_VOCAB = 200
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXT_VOCAB = "text_vocab"

# Settings that may change when an interrupted run resumes: they do not change what is trained.
_CADENCE_FIELDS = ("save_steps", "save_total_limit", "eval_steps", "logging_steps")


@dataclass
class PretrainConfig:
    """Everything that decides a pretraining run besides its input and output directories."""

    init: str = "minilm"
    """Text initialisation: ``minilm`` (the offline all-MiniLM-L6-v2 BERT), a BERT directory or Hub id, or
    ``scratch:LAYERSxHIDDEN[xHEADS]`` (a random BERT with MiniLM's WordPiece vocabulary, or ``text_vocab``'s, HEADS
    attention heads (default max(1, HIDDEN // 64)) and a 4 x HIDDEN feed-forward layer)."""
    text_vocab: int = 0
    """Scratch initialisations only: train a WordPiece vocabulary of at most this many entries on the narration of
    the training videos (Hugging Face ``tokenizers``, BERT's lowercasing normaliser and pre-tokeniser) instead of
    using MiniLM's 30,522. A BERT trained from scratch gains nothing from word pieces its corpus never uses, and on
    CPU the embedding table's optimizer update and the output projection over 30k ids cost about half of a small
    model's step. 0 keeps MiniLM's vocabulary."""
    visual_init: str = "centroids"
    """Visual word embeddings: ``centroids`` (projected k-means centroids) or ``random``."""
    visual_input: str = "words"
    """What a visual position reads: ``words`` (visual words, VideoBERT), ``features`` (projected continuous clip
    features, masked clips trained by noise-contrastive estimation, CBT) or ``both`` (summed; masked clips trained on
    their word and their feature). See `videobert.model.visual_input`."""
    nce_weight: float = 1.0
    """Weight of the noise-contrastive loss of masked clips (models that read features)."""
    nce_temperature: float = 0.1
    """Temperature of the noise-contrastive loss (cosine similarity / temperature)."""
    nce_memory: int = 0
    """Masked clips of earlier batches kept as extra negatives of the noise-contrastive loss; 0: the batch's own."""
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    """Examples, batching and masking."""
    max_steps: int = 1000
    """Optimizer steps."""
    alignment_weight: float = 1.0
    """Weight of the alignment loss against the masked-token loss (the paper sums them: 1). The alignment head sees
    only the text-video pairs, a fraction of each batch, and its signal is slower to learn than masked words."""
    masked_words_weight: float = 1.0
    """Weight of the masked-word loss (`training.objectives.masked_tokens`: with the visual words' at 1, the two sum
    to the paper's single masked-token loss)."""
    masked_visual_words_weight: float = 1.0
    """Weight of the masked visual-word loss (models that read visual words)."""
    learning_rate: float = 1e-4
    """Peak learning rate of AdamW."""
    lr_schedule: str = "linear"
    """A transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."""
    warmup: float = 0.1
    """Warm-up: a fraction of ``max_steps`` when below 1, else a number of steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    grad_accum: int = 1
    """Batches accumulated per optimizer step."""
    bf16: bool = False
    """bfloat16 mixed precision (CUDA with bf16 support, or CPU)."""
    fp16: bool = False
    """float16 mixed precision (CUDA only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 20 % slower."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cuda`` or ``cpu``."""
    num_workers: int = 0
    """DataLoader worker processes per training process; each reads its own share of the videos."""
    save_steps: int = 500
    """Steps between checkpoints in OUT/checkpoints (the last step is always saved)."""
    save_total_limit: int = 2
    """Checkpoints kept; older ones are deleted."""
    eval_steps: int = 500
    """Steps between evaluations on the held-out (val) videos; 0 evaluates only at the start and the end."""
    logging_steps: int = 50
    """Steps between training logs (console, TensorBoard); the last step is always logged."""

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):  # a config read back from JSON (run.json, a launcher's arguments)
            self.data = PretrainDataConfig(**self.data)
        if self.visual_init not in ("centroids", "random"):
            raise ConfigError(f"visual_init must be 'centroids' or 'random', got {self.visual_init!r}")
        if self.init.startswith("scratch") and not _SCRATCH.fullmatch(self.init):
            raise ConfigError(
                f"init {self.init!r}: write a random BERT as scratch:LAYERSxHIDDEN[xHEADS], e.g. scratch:2x64"
            )
        if self.text_vocab and not _SCRATCH.fullmatch(self.init):
            raise ConfigError(f"text_vocab replaces the vocabulary of a random BERT; init {self.init!r} brings its own")
        if self.text_vocab and self.text_vocab < _MIN_TEXT_VOCAB:
            raise ConfigError(f"text_vocab must be 0 or at least {_MIN_TEXT_VOCAB}, got {self.text_vocab}")
        for name in ("max_steps", "grad_accum", "save_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "weight_decay", "max_grad_norm", "eval_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.alignment_weight < 0:
            raise ConfigError(f"alignment_weight must be non-negative, got {self.alignment_weight}")
        if self.visual_input not in VISUAL_INPUTS:
            raise ConfigError(f"visual_input must be one of {', '.join(VISUAL_INPUTS)}, got {self.visual_input!r}")
        for name in ("nce_weight", "nce_memory", "masked_words_weight", "masked_visual_words_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.nce_temperature <= 0:
            raise ConfigError(f"nce_temperature must be positive, got {self.nce_temperature}")
        try:
            SchedulerType(self.lr_schedule)
        except ValueError:
            names = ", ".join(s.value for s in SchedulerType)
            raise ConfigError(f"lr_schedule must be one of {names}; got {self.lr_schedule!r}") from None
        if self.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"device must be auto, cuda or cpu, got {self.device!r}")
        cuda = torch.cuda.is_available() and self.device != "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA GPU is available")
        if self.bf16 and self.fp16:
            raise ConfigError("choose one of bf16 and fp16")
        if self.fp16 and not cuda:
            raise ConfigError("fp16 mixed precision needs a CUDA GPU; on CPU use bf16")
        if self.bf16 and cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"{torch.cuda.get_device_name()} does not support bfloat16; use fp16")

    def differences(self, other: dict[str, Any]) -> list[str]:
        """The settings (as ``name: old -> new``) in which the saved ``other`` (an `asdict`) differs from this one,
        cadence settings left out."""
        mine = flatten(asdict(self))
        theirs = flatten(other)
        # A setting the saved run predates had its default then.
        defaults = flatten(asdict(PretrainConfig(device="cpu")))
        return [
            f"{key}: {theirs.get(key)!r} -> {value!r}"
            for key, value in mine.items()
            if theirs.get(key, defaults.get(key)) != value and key not in _CADENCE_FIELDS
        ]


class PretrainTrainer(Trainer):
    """The Trainer with VideoBERT's streams and metrics.

    * The training stream yields whole length-bucketed batches and shards videos over processes itself, so its
      DataLoader bypasses accelerate's sharding (which would re-split batches).
    * `compute_loss` sums the run's objectives' weighted losses (`training.objectives`) and feeds their metrics
      to an `ObjectiveMeter`; training logs report the means since the previous log, `evaluate` reports them on the
      held-out videos.
    """

    # compute_loss returns the batch mean, which the Trainer divides by the number of accumulated batches.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, objectives: Sequence[Objective], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.objectives = tuple(objectives)
        # The model's forward takes **kwargs (attention options for BertModel); the Trainer would read that as "the
        # model normalises its loss by num_items_in_batch", which it does not.
        self.model_accepts_loss_kwargs = False
        self.train_meter = ObjectiveMeter(self.objectives, self.args.device)

    def get_train_dataloader(self) -> DataLoader:
        workers = self.args.dataloader_num_workers
        return DataLoader(
            self.train_dataset,
            batch_size=None,  # the stream yields batches
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=workers > 0,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        regime = inputs.pop("regime")
        # labels and alignment_labels (and feature_labels) are always passed (-100 where there is nothing to
        # predict), so every head takes part in every step and DDP needs no unused-parameter search.
        outputs = model(**inputs, **model_inputs(self.objectives, train=True))
        loss, sums = objectives_step(self.objectives, outputs, inputs, regime, train=True)
        self.train_meter.add(sums, inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (every process logs at the same steps, as collect requires)
            logs.update(self.train_meter.collect())
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """The objectives' metrics on the held-out videos (per-regime masked-token losses, alignment loss and
        accuracy, masked-clip loss and accuracy)."""
        stream = self.eval_dataset if eval_dataset is None else eval_dataset
        model = self.model  # unwrapped: each process evaluates its own videos, no collective per batch
        was_training = model.training
        model.eval()
        meter = ObjectiveMeter(self.objectives, self.args.device)
        with torch.no_grad(), self.accelerator.autocast():
            for examples in stream:
                batch = self._prepare_inputs(self.data_collator(examples))
                regime = batch.pop("regime")
                outputs = model(**batch, **model_inputs(self.objectives, train=False))
                _, sums = objectives_step(self.objectives, outputs, batch, regime, train=False)
                meter.add(sums, batch["attention_mask"])
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in meter.collect().items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class _LogLastStep(TrainerCallback):
    """Log at the last step as well, so the final training losses cover the steps since the previous log."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class _TensorBoard(TensorBoardCallback):
    """TensorBoard logging into a chosen folder (transformers 5 has no ``logging_dir`` argument any more)."""

    def __init__(self, log_dir: Path):
        super().__init__()
        self.logging_dir = str(log_dir)


class PretrainRecipe:
    """setup -> train -> save -> cleanup for one process of a (possibly distributed) run."""

    def __init__(self, work: str | os.PathLike, out: str | os.PathLike, config: PretrainConfig):
        self.work = WorkDir(work)
        self.out = Path(out)
        self.config = config
        self.trainer: PretrainTrainer | None = None

    def training_arguments(self, has_eval: bool) -> TrainingArguments:
        c = self.config
        return TrainingArguments(
            output_dir=str(self.out / CHECKPOINTS),
            max_steps=c.max_steps,
            per_device_train_batch_size=c.data.batch_size,
            per_device_eval_batch_size=c.data.batch_size,
            gradient_accumulation_steps=c.grad_accum,
            learning_rate=c.learning_rate,
            lr_scheduler_type=c.lr_schedule,
            warmup_steps=c.warmup if c.warmup < 1 else int(c.warmup),
            weight_decay=c.weight_decay,
            max_grad_norm=c.max_grad_norm,
            bf16=c.bf16,
            fp16=c.fp16,
            activation_checkpointing=c.gradient_checkpointing,
            seed=c.data.seed,
            use_cpu=c.device == "cpu",
            logging_steps=c.logging_steps,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=c.eval_steps or c.max_steps,
            eval_on_start=has_eval,
            save_strategy="steps",
            save_steps=c.save_steps,
            save_total_limit=c.save_total_limit,
            report_to="none",  # TensorBoard is added as a callback writing to OUT/logs
            dataloader_num_workers=c.num_workers,
            dataloader_pin_memory=torch.cuda.is_available() and c.device != "cpu",
            remove_unused_columns=False,
            # Every parameter is used in every step (see compute_loss), and BERT's buffers are constants.
            ddp_find_unused_parameters=False,
            ddp_broadcast_buffers=False,
        )

    def setup(self) -> None:
        """Load the vocabulary, build the model, the example streams and the Trainer."""
        c = self.config
        corpus = PretrainCorpus.from_work_dir(self.work.root, c.visual_input)
        visual_tokenizer = self.visual_tokenizer() if c.visual_input != "features" else None
        features = FeatureStore(self.work.root) if c.visual_input != "words" else None
        # The Trainer's arguments start the process group (under torchrun) before anything is rank-dependent.
        args = self.training_arguments(has_eval=bool(corpus.eval_videos))
        set_seed(c.data.seed)
        model = self.build_model(visual_tokenizer, corpus, features)
        if c.data.max_length > model.config.max_position_embeddings:
            raise ConfigError(
                f"max_length {c.data.max_length} exceeds the model's {model.config.max_position_embeddings} positions"
            )
        objectives = build_objectives(c, model.config, features)
        collator = MaskingCollator(
            model.tokenizer, c.data.mask_prob, c.data.content_word_weight, visual_tokenizer, objectives
        )  # fmt: skip
        streams = {
            train: PretrainStream(
                corpus,
                corpus.train_videos if train else corpus.eval_videos,
                model.tokenizer,
                c.data,
                train=train,
                rank=args.process_index,
                world_size=args.world_size,
            )
            for train in (True, False)
        }
        if not corpus.eval_videos:
            logger.warning("no video of split val has visual tokens: training without held-out evaluation")
        self.trainer = PretrainTrainer(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=streams[True],
            eval_dataset=streams[False] if corpus.eval_videos else None,
            callbacks=[_LogLastStep(), _TensorBoard(self.out / LOGS)],
            objectives=objectives,
        )

    def visual_tokenizer(self) -> VisualTokenizer:
        """The work directory's vocabulary, checked against the one tokens.parquet was made with."""
        visual_tokenizer = VisualTokenizer.from_pretrained(self.work.require(self.work.vocab, "vocab"))
        made_with = tokens_metadata(self.work.require(self.work.tokens, "tokenize")).get("vocab_hash")
        if made_with != visual_tokenizer.content_hash:
            raise ConfigError(
                f"{self.work.tokens} was made with vocabulary {made_with}, but {self.work.vocab} is "
                f"{visual_tokenizer.content_hash}; run `videobert tokenize` again"
            )
        return visual_tokenizer

    def build_model(
        self, visual_tokenizer: VisualTokenizer | None, corpus: PretrainCorpus, features: FeatureStore | None = None
    ) -> VideoBertForPreTraining:
        """The model to pretrain; one that reads clip features standardises them with the training clips' mean and
        std."""
        model = self._text_initialised(visual_tokenizer, corpus, None if features is None else features.dim)
        if features is not None:
            model.set_feature_statistics(*features.statistics(corpus.train_videos))
            source = FeatureSource.from_meta(features.meta)  # None for features not written by `extract`
            model.config.feature_source = None if source is None else source.to_meta()
        return model

    def _text_initialised(
        self, visual_tokenizer: VisualTokenizer | None, corpus: PretrainCorpus, feature_dim: int | None
    ) -> VideoBertForPreTraining:
        c = self.config
        extend = dict(
            visual_tokenizer=visual_tokenizer, visual_init=c.visual_init, visual_input=c.visual_input,
            feature_dim=feature_dim, nce_temperature=c.nce_temperature,
        )  # fmt: skip
        scratch = _SCRATCH.fullmatch(c.init)
        if scratch is None:
            source = default_text_checkpoint() if c.init == "minilm" else c.init
            return VideoBertForPreTraining.from_text_checkpoint(source, **extend)
        tokenizer = None
        if c.text_vocab:
            # Trained once, by the main process, into OUT: every process and every resume reads the same vocabulary.
            folder = self.out / TEXT_VOCAB
            with PartialState().main_process_first():
                if not (folder / "tokenizer_config.json").is_file():
                    train_text_vocab(self.work, corpus.train_videos, c.text_vocab, folder)
            tokenizer = BertTokenizerFast.from_pretrained(folder)
        # A random BERT goes through a checkpoint folder so that it is extended exactly like a pretrained one.
        with tempfile.TemporaryDirectory(prefix="videobert-scratch-") as folder:
            write_scratch_bert(
                Path(folder), layers=int(scratch.group(1)), hidden=int(scratch.group(2)), tokenizer=tokenizer,
                heads=int(scratch.group(3)) if scratch.group(3) else None,
            )  # fmt: skip
            return VideoBertForPreTraining.from_text_checkpoint(folder, **extend)

    def train(self, resume: bool) -> None:
        checkpoint = last_complete_checkpoint(self.out / CHECKPOINTS) if resume else None
        if checkpoint is not None:
            logger.info("resuming from %s", checkpoint)
        self.train_output = self.trainer.train(resume_from_checkpoint=checkpoint)

    def save(self) -> dict[str, Any]:
        """Write the model into OUT (config.json last) and metrics.json; returns the metrics."""
        trainer = self.trainer
        state = PartialState()
        staging = self.out / _STAGING
        if state.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        state.wait_for_everyone()
        trainer.save_model(str(staging))  # every process: FSDP gathers the full state dict collectively
        metrics = self.metrics()
        if state.is_main_process:
            # A pickle of the TrainingArguments; the settings are in run.json and metrics.json instead.
            (staging / "training_args.bin").unlink(missing_ok=True)
            _commit_model(staging, self.out)
            write_json(self.out / METRICS_FILE, metrics)
        state.wait_for_everyone()
        return metrics

    def metrics(self) -> dict[str, Any]:
        history = self.trainer.state.log_history
        train_logs = [entry for entry in history if "loss" in entry]
        evals = [entry for entry in history if any(key.startswith("eval_") for key in entry)]
        runtime = self.train_output.metrics["train_runtime"]

        def strip(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            return {k[len(prefix) :]: v for k, v in entry.items() if k.startswith(prefix) and k not in ("epoch",)}

        return {
            "steps": self.trainer.state.global_step,
            "processes": self.trainer.args.world_size,
            "train": strip(train_logs[-1]) if train_logs else {},
            "eval_start": strip(evals[0], "eval_") | {"step": evals[0]["step"]} if evals else {},
            "eval": strip(evals[-1], "eval_") | {"step": evals[-1]["step"]} if evals else {},
            "train_runtime_seconds": runtime,
            # Real (unpadded) tokens over all processes, in this session (since the resume, if any).
            "train_tokens_per_second": self.trainer.train_meter.tokens_total / runtime if runtime else 0.0,
        }

    def cleanup(self) -> None:
        """Close the trackers and drop the Trainer (the model, optimizer and data workers go with it)."""
        if self.trainer is not None:
            self.trainer.accelerator.end_training()
            self.trainer = None


def write_scratch_bert(
    folder: Path,
    layers: int,
    hidden: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    heads: int | None = None,
) -> Path:
    """A randomly initialised BERT (pretraining layout) with ``tokenizer`` (default MiniLM's WordPiece) and ``heads``
    attention heads (default max(1, hidden // 64)), in ``folder``."""
    if layers < 1 or hidden < 1 or (heads is not None and heads < 1):
        raise ConfigError(f"scratch:{layers}x{hidden}: layers, hidden size and heads must be positive")
    heads = heads or max(1, hidden // 64)
    if hidden % heads:
        raise ConfigError(f"scratch:{layers}x{hidden}x{heads}: the hidden size must be a multiple of the heads")
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(default_text_checkpoint())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    BertForPreTraining(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_text_vocab(wd: WorkDir, videos: Any, size: int, folder: Path) -> Path:
    """Train a lowercase WordPiece vocabulary of at most ``size`` entries on the sentences of ``videos`` and save it
    as a BERT tokenizer in ``folder`` (atomically). Sentences are streamed from sentences.parquet batch by batch."""
    from tokenizers import BertWordPieceTokenizer

    wanted = pa.array(sorted(set(videos)))
    parquet = pq.ParquetFile(wd.require(wd.sentences, "ingest"))

    def texts():
        for batch in parquet.iter_batches(columns=["video", "text"], batch_size=4096):
            keep = pc.is_in(batch.column("video"), value_set=wanted)
            yield batch.filter(keep).column("text").to_pylist()

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts(), vocab_size=size, min_frequency=1, special_tokens=list(_SPECIAL_TOKENS))
    if wordpiece.get_vocab_size() <= len(_SPECIAL_TOKENS):
        raise InputError(wd.sentences, "no narration in the training videos to build a text vocabulary from")
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=True).save_pretrained(staging)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def pretrain(
    work: Path,
    *,
    out: Path,
    init: str = "minilm",
    text_vocab: int = 0,
    visual_init: str = "centroids",
    visual_input: str = "words",
    nce_weight: float = 1.0,
    nce_temperature: float = 0.1,
    nce_memory: int = 0,
    max_steps: int = 1000,
    alignment_weight: float = 1.0,
    masked_words_weight: float = 1.0,
    masked_visual_words_weight: float = 1.0,
    batch_size: int = 32,
    grad_accum: int = 1,
    learning_rate: float = 1e-4,
    lr_schedule: str = "linear",
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_length: int = 128,
    text_weight: float = 0.25,
    video_weight: float = 0.25,
    text_video_weight: float = 0.5,
    negative_prob: float = 0.5,
    mask_prob: float = 0.15,
    content_word_weight: float = 1.0,
    max_concat: int = 3,
    max_stride: int = 5,
    video_only_length: int = 16,
    shuffle_buffer: int = 2048,
    chunk_videos: int = 64,
    num_workers: int = 0,
    bf16: bool = False,
    fp16: bool = False,
    gradient_checkpointing: bool = False,
    device: str = "auto",
    seed: int = 0,
    save_steps: int = 500,
    save_total_limit: int = 2,
    eval_steps: int = 500,
    logging_steps: int = 50,
    resume: bool = True,
    overwrite: bool = False,
) -> StageReport:
    """Pretrain VideoBERT on the visual tokens and sentences of a work directory; writes a model directory.

    Three regimes, mixed in every batch: text-only masked language modelling, video-only masked visual-token
    prediction, and text-video ([CLS] text [>] video [SEP]) with masking on both sides plus linguistic-visual
    alignment. Trains on the videos of split train (and those without a split), evaluates on split val. Run it
    under torchrun or accelerate launch for several processes or machines.

    Args:
        work: Work directory; reads manifest.parquet, sentences.parquet, tokens.parquet and vocab/.
        out: Output model directory (also holds checkpoints/, logs/ for TensorBoard, run.json, metrics.json).
        init: Text initialisation: minilm (the offline all-MiniLM-L6-v2 BERT), a BERT directory or Hub id,
            or a small random BERT written scratch:LAYERSxHIDDEN (e.g. scratch:2x64 for tests).
        text_vocab: With a scratch init: train a WordPiece vocabulary of at most this many entries on the training
            narration (saved in OUT/text_vocab) instead of MiniLM's 30,522; about 2x faster steps on CPU. 0 keeps
            MiniLM's.
        visual_init: Visual word embeddings: centroids (projected k-means centroids) or random.
        visual_input: What visual positions read: words (visual words), features (continuous clip features from
            features/ and clips.parquet, masked clips trained by noise-contrastive estimation as in CBT; no vocab or
            tokenize needed) or both (the two summed).
        nce_weight: Weight of the masked clips' noise-contrastive loss (features, both).
        nce_temperature: Temperature of the noise-contrastive loss (cosine similarity / temperature).
        nce_memory: Masked clips of earlier batches kept as extra negatives (0: the batch's own clips only).
        max_steps: Optimizer steps.
        alignment_weight: Weight of the alignment loss against the masked-token loss (the paper's sum: 1).
        masked_words_weight: Weight of the masked-word loss.
        masked_visual_words_weight: Weight of the masked visual-word loss (visual input words or both).
        batch_size: Sequences per batch and process (global batch = batch_size x processes x grad_accum).
        grad_accum: Batches accumulated per optimizer step.
        learning_rate: Peak AdamW learning rate.
        lr_schedule: Learning-rate schedule (a transformers scheduler: linear, cosine, constant, ...).
        warmup: Warm-up as a fraction of max_steps (below 1) or a number of steps.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm (0 disables).
        max_length: Longest sequence in tokens, special tokens included.
        text_weight: Relative frequency of the text-only regime for a narrated sentence group.
        video_weight: Relative frequency of the video-only regime (0 also skips videos without speech).
        text_video_weight: Relative frequency of the text-video regime (masking on both sides plus alignment).
        negative_prob: Probability that a text-video pair takes another video's visual sentence (not aligned).
        mask_prob: Fraction of each modality's tokens that is predicted (80 % [MASK], 10 % random, 10 % kept).
        content_word_weight: How many times more likely a content word (not a stopword) is masked than a function
            word, at the same overall rate; 1 masks uniformly.
        max_concat: Most neighbouring sentences joined into one training sequence (1 disables).
        max_stride: Largest stride of the random visual-token subsampling (1 disables).
        video_only_length: Visual tokens per sequence of a video without speech.
        shuffle_buffer: Examples held for shuffling and length bucketing (bounds memory).
        chunk_videos: Videos read from Parquet at once (bounds memory).
        num_workers: DataLoader worker processes per training process.
        bf16: bfloat16 mixed precision (CUDA with bf16 support, or CPU).
        fp16: float16 mixed precision (CUDA only).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        device: auto (CUDA when available), cuda or cpu.
        seed: Seed of the model initialisation, the data order, augmentations and masks.
        save_steps: Steps between checkpoints (the last step is always saved).
        save_total_limit: Checkpoints kept.
        eval_steps: Steps between held-out evaluations (0: only at the start and the end).
        logging_steps: Steps between training logs.
        resume: Continue an interrupted run from the last checkpoint in OUT/checkpoints (--no-resume starts over).
        overwrite: Replace a finished model in OUT that was trained with other settings.
    """
    data = PretrainDataConfig(
        batch_size=batch_size, max_length=max_length, text_weight=text_weight, video_weight=video_weight,
        text_video_weight=text_video_weight, negative_prob=negative_prob, mask_prob=mask_prob,
        content_word_weight=content_word_weight, max_concat=max_concat, max_stride=max_stride,
        video_only_length=video_only_length, shuffle_buffer=shuffle_buffer, chunk_videos=chunk_videos, seed=seed,
    )  # fmt: skip
    config = PretrainConfig(
        init=init, text_vocab=text_vocab, visual_init=visual_init, visual_input=visual_input, nce_weight=nce_weight,
        nce_temperature=nce_temperature, nce_memory=nce_memory, data=data, max_steps=max_steps,
        alignment_weight=alignment_weight,
        masked_words_weight=masked_words_weight, masked_visual_words_weight=masked_visual_words_weight,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule, warmup=warmup, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        grad_accum=grad_accum, bf16=bf16, fp16=fp16, gradient_checkpointing=gradient_checkpointing, device=device,
        num_workers=num_workers, save_steps=save_steps, save_total_limit=save_total_limit, eval_steps=eval_steps,
        logging_steps=logging_steps,
    )  # fmt: skip
    return run_pretraining(work, out, config, resume=resume, overwrite=overwrite)


@locked("out")
def run_pretraining(
    work: str | os.PathLike,
    out: str | os.PathLike,
    config: PretrainConfig,
    resume: bool = True,
    overwrite: bool = False,
) -> StageReport:
    """`pretrain` with a ready `PretrainConfig`."""
    out = Path(out)
    outputs = {"model": str(out), "metrics": str(out / METRICS_FILE), "logs": str(out / LOGS)}
    report = StageReport(STAGE, outputs=outputs)
    recipe = PretrainRecipe(work, out, config)
    identity = {"config": asdict(config), **_inputs_identity(recipe.work, config.visual_input)}
    # The first PartialState starts the process group under torchrun / accelerate launch; it must be created with
    # the device choice the Trainer's arguments will ask for.
    state = PartialState(cpu=config.device == "cpu")
    action = _plan(out, identity, config, resume, overwrite)
    state.wait_for_everyone()  # every process has read OUT before the main one changes it
    if action == "skip":
        report.skipped = 1
        report.stats.update(_summary(read_json(out / METRICS_FILE)))
        return report
    if state.is_main_process:
        if action == "fresh":
            _clear(out)
        else:
            set_aside_damaged(out / CHECKPOINTS)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_FILE, identity)
    state.wait_for_everyone()
    try:
        recipe.setup()
        recipe.train(resume=action == "resume")
        metrics = recipe.save()
    finally:
        recipe.cleanup()
    report.done = 1
    report.stats.update(_summary(metrics))
    return report


def _plan(out: Path, identity: dict[str, Any], config: PretrainConfig, resume: bool, overwrite: bool) -> str:
    """What to do with OUT: ``skip`` (finished with these settings), ``resume`` or ``fresh`` (clear and start)."""
    if not out.exists() or all(entry.name == LOCK_FILE for entry in out.iterdir()):
        return "fresh"
    if not (out / RUN_FILE).is_file():
        raise ConfigError(f"{out} is not empty and holds no {RUN_FILE}: not a pretraining output; choose another --out")
    previous = read_json(out / RUN_FILE)
    changed = config.differences(previous.get("config", {}))
    changed += [f"the {key} changed" for key in ("vocab_hash", "features") if previous.get(key) != identity[key]]
    if (out / METRICS_FILE).is_file():
        if not changed:
            return "skip"
        if not overwrite:
            raise ConfigError(
                f"{out} holds a model trained with other settings ({'; '.join(changed)}); "
                "pass --overwrite to replace it"
            )
        return "fresh"
    if resume and last_complete_checkpoint(out / CHECKPOINTS) is not None:
        if changed:
            raise ConfigError(
                f"{out} holds an interrupted run with other settings ({'; '.join(changed)}); pass --no-resume to "
                "start over"
            )
        return "resume"
    return "fresh"


def _inputs_identity(wd: WorkDir, visual_input: str = "words") -> dict[str, Any]:
    """The visual vocabulary hash and the features fingerprint recorded in tokens.parquet; a model over clip
    features alone has no vocabulary and fingerprints the features itself."""
    if visual_input == "features":
        return {"vocab_hash": None, "features": features_fingerprint(FeatureStore(wd.root))}
    meta = tokens_metadata(wd.require(wd.tokens, "tokenize"))
    return {"vocab_hash": meta.get("vocab_hash"), "features": meta.get("features")}


def _clear(out: Path) -> None:
    """Remove the previous run's files from OUT (only the entries a pretraining run writes)."""
    for entry in out.iterdir() if out.exists() else ():
        if entry.name == LOCK_FILE:  # held by this run
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _commit_model(staging: Path, out: Path) -> None:
    """Move the saved model files from ``staging`` into ``out``, config.json last, then remove ``staging``."""
    publish_permissions(staging)
    entries = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")
    (out / "config.json").unlink(missing_ok=True)  # OUT stops reading as a model until the new one is complete
    for entry in entries:
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers a stage report shows."""
    stats: dict[str, Any] = {"steps": metrics.get("steps"), "tokens/s": metrics.get("train_tokens_per_second")}
    for split in ("train", "eval"):
        for key, value in metrics.get(split, {}).items():
            if key.startswith(("mlm_loss_", "alignment_", "nce_")) and "_text_video_" not in key:
                stats[f"{split} {key}"] = value
    return stats
