"""Distributed pretraining: two CPU processes (gloo, launched with torchrun) keep identical replicas and match one
process that accumulates the same two batches per step, over visual words and over continuous clip features."""
from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain_data import narrated, write_work_dir
from torch.utils.data import IterableDataset
from transformers import AutoTokenizer, BertConfig, BertForPreTraining

from videobert.model import VideoBertForPreTraining, default_text_checkpoint
from videobert.training.data import PretrainStream
from videobert.training.pretrain import PretrainConfig, PretrainRecipe

WORKER = """
import json, sys
from pathlib import Path
import torch
from accelerate import PartialState
from videobert.training.pretrain import PretrainConfig, PretrainRecipe

work, out, config = sys.argv[1], Path(sys.argv[2]), PretrainConfig(**json.loads(sys.argv[3]))
state = PartialState(cpu=True)
recipe = PretrainRecipe(work, out, config)
recipe.setup()
recipe.train(resume=False)
weights = {k: v.detach().clone() for k, v in recipe.trainer.model.state_dict().items()}
torch.save(weights, out / f"rank{state.process_index}.pt")
recipe.save()
recipe.cleanup()
"""

# Parameters after 4 AdamW steps: the two runs sum the same per-batch gradients in a different order (all-reduce vs
# accumulation); measured difference 3e-6, and 1e-4 leaves room for Adam's division by small second moments.
ATOL = 1e-4


class Interleaved(IterableDataset):
    """Batch i of every stream in turn (what the ranks of a distributed run see at step i), until all are done."""

    def __init__(self, streams: list[PretrainStream]):
        self.streams = streams

    def __iter__(self):
        for batches in itertools.zip_longest(*self.streams):
            yield from (batch for batch in batches if batch is not None)


def rank_streams(stream: PretrainStream, world_size: int) -> list[PretrainStream]:
    return [
        PretrainStream(stream.corpus, stream.videos, stream.tokenizer, stream.config, stream.train, rank, world_size)
        for rank in range(world_size)
    ]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT with MiniLM's WordPiece vocabulary and no dropout, so both runs are deterministic."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(default_text_checkpoint())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("visual_input", ["words", "features"])
def test_two_processes_match_one_process_with_accumulation(tmp_path, tiny_bert, visual_input):
    videos = {f"n{i}": narrated(i % 4, 10 + i, "train") for i in range(8)}
    videos.update({"held0": narrated(4, 10, "val"), "held1": narrated(5, 12, "val")})
    work = write_work_dir(tmp_path / "work", videos, with_features=visual_input != "words")
    config = PretrainConfig(init=str(tiny_bert), visual_init="random", visual_input=visual_input, max_steps=4,
                            learning_rate=1e-3, warmup=0,
                            data={"batch_size": 4, "shuffle_buffer": 8, "max_length": 64},
                            device="cpu", save_steps=4, eval_steps=2, logging_steps=2)  # fmt: skip

    ddp_out = tmp_path / "ddp"
    ddp_out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(work), str(ddp_out), json.dumps(dataclasses.asdict(config))]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    # One process, two batches accumulated per step: the batches rank 0 and rank 1 saw, in that order.
    reference = PretrainRecipe(work, tmp_path / "single", dataclasses.replace(config, grad_accum=2))
    reference.setup()
    trainer = reference.trainer
    trainer.train_dataset = Interleaved(rank_streams(trainer.train_dataset, 2))
    trainer.eval_dataset = Interleaved(rank_streams(trainer.eval_dataset, 2))
    reference.train(resume=False)
    single = {k: v.detach() for k, v in trainer.model.state_dict().items()}
    single_metrics = reference.metrics()
    reference.cleanup()

    rank0, rank1 = (torch.load(ddp_out / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the replicas never drift apart
    changed = max((rank0[k] - VideoBertForPreTraining.from_pretrained(ddp_out).state_dict()[k]).abs().max() for k in rank0)
    assert changed == 0  # the saved model is the trained one
    assert max((rank0[k] - single[k]).abs().max().item() for k in rank0) < ATOL

    ddp_metrics = json.loads((ddp_out / "metrics.json").read_text())
    assert ddp_metrics["processes"] == 2 and ddp_metrics["steps"] == 4
    for split in ("train", "eval_start", "eval"):  # per-regime sums reduced over the processes
        for key, value in single_metrics[split].items():
            if key.startswith(("mlm_loss_", "alignment_", "nce_")):
                assert ddp_metrics[split][key] == pytest.approx(value, rel=1e-4), (split, key)
