"""The pretrain stage on a MiniCook work directory: every regime's loss goes down, the output is a self-contained
model directory with metrics and TensorBoard logs, an interrupted run resumes to the same weights, the CLI is
generated from the signature."""
from __future__ import annotations

import inspect

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer
from typer.testing import CliRunner

from videobert.cli import _docstring_args, command_from_function
from videobert.model import VideoBertForPreTraining, require_videobert_dir
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.training.pretrain import PretrainConfig, pretrain
from videobert.utils.errors import ConfigError

# A tiny random BERT and a high learning rate: enough steps for every loss to fall, seconds on two cores.
RUN = dict(init="scratch:2x64", max_steps=60, batch_size=16, learning_rate=2e-3, shuffle_buffer=128, save_steps=30,
           eval_steps=30, logging_steps=10, device="cpu", seed=0)  # fmt: skip
REGIME_LOSSES = ("mlm_loss_text", "mlm_loss_video", "mlm_loss_text_video", "mlm_loss_text_video_words",
                 "mlm_loss_text_video_visual")  # fmt: skip


@pytest.fixture(scope="module")
def trained(minicook_work, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "model"
    report = pretrain(minicook_work, out=out, **RUN)
    assert report.ok and report.done == 1
    return out


def test_every_regime_loss_goes_down(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    start, end = metrics["eval_start"], metrics["eval"]
    assert (start["step"], end["step"], metrics["steps"]) == (0, 60, 60)
    for key in REGIME_LOSSES:  # held-out videos, the same masked examples at both ends
        assert end[key] < 0.9 * start[key], key
    history = json.loads((trained / "checkpoints" / "checkpoint-60" / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    for key in REGIME_LOSSES:  # training batches: the first ten steps against the last ten
        assert train_logs[-1][key] < 0.9 * train_logs[0][key], key
    # The alignment head is trained and measured on both; from scratch it needs far more than 60 steps to leave
    # chance (see the report), so only its bookkeeping is checked here.
    for split in ("train", "eval"):
        assert 0.0 <= metrics[split]["alignment_accuracy"] <= 1.0
        assert 0.0 < metrics[split]["alignment_loss"] < 2.0
    assert metrics["train_tokens_per_second"] > 0 and metrics["processes"] == 1


def test_output_is_a_self_contained_model_directory(trained, minicook_work):
    require_videobert_dir(trained)
    model = VideoBertForPreTraining.from_pretrained(trained)
    vocab = VisualTokenizer.from_pretrained(minicook_work / "vocab")
    assert model.visual_tokenizer.content_hash == vocab.content_hash == model.config.visual_vocab_hash
    assert model.tokenizer.decode(model.tokenizer.encode("cut the tomato", [0, 5])["input_ids"]) == (
        "[CLS] cut the tomato [>] [V0] [V5] [SEP]"
    )
    assert (trained / "run.json").is_file() and not (trained / "training_args.bin").exists()
    assert not list(trained.glob(".*"))  # no staging folder left behind
    (events,) = (trained / "logs").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for split in ("train", "eval"):
        assert {f"{split}/{key}" for key in (*REGIME_LOSSES, "alignment_loss", "alignment_accuracy")} <= tags


def test_rerun_skips_and_refuses_other_settings(trained, minicook_work, tmp_path):
    report = pretrain(minicook_work, out=trained, **RUN)
    assert report.skipped == 1 and report.done == 0
    with pytest.raises(ConfigError, match="learning_rate: 0.002 -> 0.001.*--overwrite"):
        pretrain(minicook_work, out=trained, **{**RUN, "learning_rate": 1e-3})
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ConfigError, match="not a pretraining output"):
        pretrain(minicook_work, out=tmp_path, **RUN)


def test_resume_continues_the_same_run(trained, minicook_work, tmp_path):
    """Kill after the checkpoint at step 30 (simulated: keep only what existed then), re-run: same final weights."""
    resumed = tmp_path / "model"
    shutil.copytree(trained, resumed)
    for entry in resumed.iterdir():
        if entry.name not in ("run.json", "checkpoints"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-60")
    report = pretrain(minicook_work, out=resumed, **RUN)
    assert report.done == 1
    uninterrupted, continued = load_file(trained / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert max((uninterrupted[k] - continued[k]).abs().max().item() for k in uninterrupted) < 1e-6
    final = [json.loads((out / "metrics.json").read_text())["eval"] for out in (trained, resumed)]
    assert final[1] == pytest.approx(final[0], rel=1e-6)


def test_cli_is_generated_from_the_signature():
    summary, helps = _docstring_args(pretrain.__doc__)
    parameters = inspect.signature(pretrain).parameters
    assert summary and set(helps) == set(parameters)  # every argument documented
    result = CliRunner().invoke(_typer_app(), ["--help"], env={"COLUMNS": "200"})  # rich cuts long names at 80
    assert result.exit_code == 0
    # `out` is keyword-only in the API, so the CLI takes it as the required option the issue names.
    for option in ("--out", "--init", "--max-steps", "--content-word-weight", "--bf16", "--no-resume", "--overwrite"):
        assert option in result.output


def _typer_app():
    import typer

    app = typer.Typer()
    app.command()(command_from_function(pretrain, "pretrain"))
    return app


def test_config_validation():
    for bad, message in [
        (dict(bf16=True, fp16=True), "one of bf16 and fp16"),
        (dict(init="scratch:2-64"), "scratch:LAYERSxHIDDEN"),
        (dict(init="scratch:2x64x2x1"), "scratch:LAYERSxHIDDEN"),
        (dict(lr_schedule="sawtooth"), "lr_schedule"),
        (dict(visual_init="zeros"), "visual_init"),
        (dict(max_steps=0), "max_steps"),
        (dict(device="tpu"), "device"),
    ]:
        with pytest.raises(ConfigError, match=message):
            PretrainConfig(**bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
            PretrainConfig(fp16=True)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            PretrainConfig(device="cuda")


def test_scratch_init_takes_an_optional_head_count(tmp_path):
    from videobert.training.pretrain import write_scratch_bert

    config = json.loads((write_scratch_bert(tmp_path / "a", 2, 128, heads=8) / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (2, 128, 8)
    default = json.loads((write_scratch_bert(tmp_path / "b", 1, 128) / "config.json").read_text())
    assert default["num_attention_heads"] == 2
    with pytest.raises(ConfigError, match="multiple of the heads"):
        write_scratch_bert(tmp_path / "c", 1, 128, heads=3)
    assert PretrainConfig(init="scratch:2x128x8").init == "scratch:2x128x8"


def test_text_vocab_trains_a_narration_wordpiece_vocabulary(minicook_work, tmp_path):
    out = tmp_path / "model"
    run = RUN | dict(max_steps=4, save_steps=4, eval_steps=0, logging_steps=2)
    assert pretrain(minicook_work, out=out, text_vocab=300, **run).ok
    trained_vocab = AutoTokenizer.from_pretrained(out / "text_vocab")
    model = VideoBertForPreTraining.from_pretrained(out)
    assert model.config.text_vocab_size == len(trained_vocab) <= 300
    assert trained_vocab.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert model.tokenizer.text_tokenizer.get_vocab() == trained_vocab.get_vocab()
    # Every MiniCook verb and noun is said often enough to be one piece, so zero-shot labels are single tokens.
    text_tokenizer = model.tokenizer.text_tokenizer
    for word in ("cut", "pour", "tomato", "onion"):
        assert text_tokenizer.tokenize(word) == [word]
    assert text_tokenizer.tokenize("Now CUT the Tomato") == ["now", "cut", "the", "tomato"]
    with pytest.raises(ConfigError, match="text_vocab replaces the vocabulary of a random BERT"):
        PretrainConfig(init="minilm", text_vocab=300)
    with pytest.raises(ConfigError, match="at least 200"):
        PretrainConfig(init="scratch:2x64", text_vocab=50)


def test_alignment_weight_scales_the_alignment_term(minicook_work, tmp_path, monkeypatch):
    import videobert.training.pretrain as pretrain_module

    seen = []
    original = pretrain_module.PretrainTrainer.compute_loss

    def spy(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = original(self, model, inputs, return_outputs=True)
        seen.append((loss.item(), outputs.mlm_loss.item(), outputs.alignment_loss.item()))
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(pretrain_module.PretrainTrainer, "compute_loss", spy)
    run = RUN | dict(max_steps=2, save_steps=2, eval_steps=0, logging_steps=1)
    assert pretrain(minicook_work, out=tmp_path / "m", alignment_weight=3.0, **run).ok
    assert seen and all(loss == pytest.approx(mlm + 3.0 * alignment, rel=1e-5) for loss, mlm, alignment in seen)
    with pytest.raises(ConfigError, match="alignment_weight must be non-negative"):
        PretrainConfig(alignment_weight=-1.0)
