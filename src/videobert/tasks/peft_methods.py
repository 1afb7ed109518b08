"""Which parameters a fine-tuning method trains, and how its result is saved and loaded.

Methods (the classification head is trained by all of them):

    full      every parameter, except the embeddings and the lower `freeze_layers` layers when asked
    linear    the head only (a linear probe of the pooled state)
    bitfit    the biases of the encoder (Ben Zaken et al., 2022)
    adapter   bottleneck adapters after each layer's attention and feed-forward output projections
              (`model.classification.AdaptedLinear`; peft has no bottleneck adapter)
    lora      peft LoRA on the attention query and value projections
    prompt    peft prompt tuning: trained virtual tokens before the input (peft puts them before `[CLS]`, so the
              pooled state the head reads is that of the first virtual token, which is trained for it)
    ia3       peft IA3: learned rescaling of keys, values and the feed-forward output
    two-stream  the two-stream baseline (`model.two_stream`), every parameter trained; saved whole like `full`

Saving keeps the base model out of the checkpoint for every method but `full`: peft methods write peft's adapter
folder (`save_pretrained`, the head included as a module to save); `linear`, `bitfit` and `adapter` write the
trained tensors to `trained.safetensors`. `finetune.json` records the method and its options, so `load_finetuned`
rebuilds the same model on top of the base model directory.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from videobert.model.classification import AdaptedLinear, VideoBertForSegmentClassification
from videobert.model.two_stream import VideoBertTwoStreamForSegmentClassification
from videobert.utils.errors import ConfigError
from videobert.utils.io import read_json, write_json

METHODS = ("full", "linear", "bitfit", "adapter", "lora", "prompt", "ia3", "two-stream")
WHOLE_MODEL_METHODS = ("full", "two-stream")
PEFT_METHODS = ("lora", "prompt", "ia3")
FINETUNE_FILE = "finetune.json"
TRAINED_FILE = "trained.safetensors"
FULL_DIR = "model"
ADAPTER_DIR = "adapter"


@dataclass
class MethodOptions:
    """How a fine-tuning method is applied; saved in finetune.json so a checkpoint reloads the same way."""

    method: str = "full"
    """One of METHODS (module docstring)."""
    freeze_layers: int = 0
    """`full` only: also freeze the embeddings and the lower N encoder layers."""
    lora_rank: int = 8
    """`lora`: rank of the update of each adapted projection."""
    adapter_size: int = 64
    """`adapter`: width of each bottleneck adapter."""
    num_virtual_tokens: int = 10
    """`prompt`: number of trained virtual tokens placed before `[CLS]`."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.freeze_layers < 0:
            raise ConfigError(f"freeze_layers must be at least 0, got {self.freeze_layers}")
        if self.freeze_layers and self.method != "full":
            raise ConfigError(
                f"freeze_layers applies to method 'full' only ({self.method!r} already freezes the encoder)"
            )
        for name in ("lora_rank", "adapter_size", "num_virtual_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


def apply_method(
    model: VideoBertForSegmentClassification | VideoBertTwoStreamForSegmentClassification, options: MethodOptions
) -> nn.Module:
    """Set which parameters of `model` train under `options.method`; returns the model to train (a `PeftModel`
    wrapping `model` for the peft methods, `model` itself otherwise). `two-stream` takes the two-stream model,
    every other method `VideoBertForSegmentClassification`."""
    if (options.method == "two-stream") != isinstance(model, VideoBertTwoStreamForSegmentClassification):
        raise ConfigError(f"method {options.method!r} does not apply to a {type(model).__name__}")
    config = model.config
    if options.freeze_layers > config.num_hidden_layers:
        raise ConfigError(
            f"freeze_layers={options.freeze_layers} but the model has {config.num_hidden_layers} layers"
        )
    if options.method == "lora":
        peft_config = LoraConfig(
            r=options.lora_rank, lora_alpha=2 * options.lora_rank, target_modules=["query", "value"],
            modules_to_save=["classifier"],
        )  # fmt: skip
        return get_peft_model(model, peft_config)
    if options.method == "ia3":
        # peft's BERT defaults, named explicitly: peft keys its defaults by model_type and does not know "videobert".
        peft_config = IA3Config(
            target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"],
            modules_to_save=["classifier"],
        )  # fmt: skip
        return get_peft_model(model, peft_config)
    if options.method == "prompt":
        # SEQ_CLS makes peft prepend the prompt embeddings (and a type-0 token type for each) to the input.
        peft_config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=options.num_virtual_tokens)
        return get_peft_model(model, peft_config)

    if options.method == "adapter":
        for layer in model.bert.encoder.layer:
            # `attention.output.dense` and `output.dense` project back to the residual stream, where Houlsby
            # adapters sit (before the residual sum and its LayerNorm).
            layer.attention.output.dense = AdaptedLinear(layer.attention.output.dense, options.adapter_size)
            layer.output.dense = AdaptedLinear(layer.output.dense, options.adapter_size)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = _trains(name, options)
    return model


def _trains(name: str, options: MethodOptions) -> bool:
    """Whether parameter `name` of the model trains under a non-peft method."""
    if name.startswith("classifier."):
        return True
    if options.method == "two-stream":
        return True
    if options.method == "full":
        frozen = ["bert.embeddings."] if options.freeze_layers else []
        frozen += [f"bert.encoder.layer.{i}." for i in range(options.freeze_layers)]
        return not name.startswith(tuple(frozen))
    if options.method == "bitfit":
        return name.endswith(".bias")
    if options.method == "adapter":
        return ".adapter." in name
    return False  # linear


def count_parameters(model: nn.Module) -> dict[str, int]:
    """`{"trainable": ..., "total": ...}` parameter counts (shared tensors counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return {"trainable": trainable, "total": total}


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors, by name: enough to restore a model's trained state (early stopping)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def restore_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back tensors taken with `trained_state`."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def save_finetuned(model: nn.Module, options: MethodOptions, base_model: str | os.PathLike, out: Path) -> Path:
    """Write what `options.method` trained to `out` (module docstring); returns the checkpoint folder."""
    write_json(out / FINETUNE_FILE, {"base_model": str(base_model), **asdict(options)})
    if options.method in WHOLE_MODEL_METHODS:
        model.save_pretrained(out / FULL_DIR)
        return out / FULL_DIR
    if options.method in PEFT_METHODS:
        model.save_pretrained(out / ADAPTER_DIR)
    else:
        (out / ADAPTER_DIR).mkdir(parents=True, exist_ok=True)
        save_file({name: t.contiguous() for name, t in trained_state(model).items()}, out / ADAPTER_DIR / TRAINED_FILE)
    # The labels live in the classifier's config; the base directory's config does not have them.
    model_config = model.get_base_model().config if isinstance(model, PeftModel) else model.config
    model_config.save_pretrained(out / ADAPTER_DIR)
    return out / ADAPTER_DIR


def load_finetuned(out: str | os.PathLike, base_model: str | os.PathLike | None = None) -> nn.Module:
    """The model `save_finetuned` wrote to `out`, rebuilt on `base_model` (default: the directory recorded at save
    time) for the methods that save only what they trained."""
    out = Path(out)
    saved = read_json(out / FINETUNE_FILE)
    recorded = saved.pop("base_model")
    base_model = recorded if base_model is None else base_model
    options = MethodOptions(**saved)
    if options.method == "full":
        return VideoBertForSegmentClassification.from_pretrained(out / FULL_DIR)
    if options.method == "two-stream":
        return VideoBertTwoStreamForSegmentClassification.from_pretrained(out / FULL_DIR)
    labels = read_json(out / ADAPTER_DIR / "config.json")["classification_labels"]
    model = VideoBertForSegmentClassification.from_pretrained(base_model, classification_labels=labels)
    if options.method in PEFT_METHODS:
        return PeftModel.from_pretrained(model, out / ADAPTER_DIR)
    model = apply_method(model, options)
    state = load_file(out / ADAPTER_DIR / TRAINED_FILE)
    expected = set(trained_state(model))
    if set(state) != expected:
        raise ConfigError(
            f"{out / ADAPTER_DIR / TRAINED_FILE} holds {sorted(set(state) ^ expected)} that do not match method "
            f"{options.method!r}"
        )
    restore_state(model, state)
    return model


def options_dict(options: MethodOptions) -> dict[str, Any]:
    """The options that matter for `options.method`, for reports."""
    keep = {"full": ["freeze_layers"], "lora": ["lora_rank"], "adapter": ["adapter_size"],
            "prompt": ["num_virtual_tokens"]}.get(options.method, [])  # fmt: skip
    return {name: getattr(options, name) for name in keep}
