"""Continual learning and robust fine-tuning: the pieces of `training.regularizers` against hand-computed cases (Fisher
and EWC penalty, reservoir uniformity, distillation, embedding attacks, layer-wise learning rates), the continual
metrics on a hand-made accuracy matrix, the augmentations, and the `continual` and `finetune` stages end to end on
MiniCook with a tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import nn

from videobert.data.synth import NOUNS, VERBS
from videobert.tasks.augmentation import VisualNeighbours, drop_narration
from videobert.tasks.continual import ContinualOptions, continual, continual_metrics, read_stages
from videobert.tasks.finetune import finetune
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.training.regularizers import (
    EmbeddingAttack,
    EWCPenalty,
    ReservoirBuffer,
    distillation_loss,
    fisher_diagonal,
    layerwise_parameter_groups,
    perturbed_embeddings,
)
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_json
from checkpoints import save_tiny_videobert

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *NOUNS]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(minicook_work, tmp_path_factory):
    return save_tiny_videobert(tmp_path_factory.mktemp("tiny"), minicook_work / "vocab", WORDS)


# ---------------------------------------------------------------------------------------------- EWC


def test_fisher_and_ewc_penalty_equal_the_hand_computed_case():
    # loss_n = 0.5 (w . x_n - t_n)^2, so grad_n = (w . x_n - t_n) x_n
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    xs, ts = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([0.0, 1.0])
    fisher = fisher_diagonal(model, (0.5 * (model(x).squeeze() - t) ** 2 for x, t in zip(xs, ts)))
    # residuals 1 and 2: grads (1, 0) and (2, 2); mean of squares (2.5, 2)
    assert torch.allclose(fisher["weight"], torch.tensor([[2.5, 2.0]]))

    penalty = EWCPenalty(strength=4.0)
    penalty.consolidate(model, fisher)
    assert penalty(model).item() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0]]))
    # 4 / 2 * (2.5 * 1^2 + 2 * 2^2) = 21
    assert penalty(model).item() == pytest.approx(21.0)
    penalty.consolidate(model, {"weight": torch.tensor([[1.0, 1.0]])})  # a second stage adds its own term
    assert penalty(model).item() == pytest.approx(21.0)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 1.0]]))
    # first anchor: 2 * (2.5 * 1 + 2 * 1) = 9; second: 2 * (1 * 0 + 1 * 1) = 2
    assert penalty(model).item() == pytest.approx(11.0)


# ---------------------------------------------------------------------------------------------- replay


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    capacity, stream, trials = 10, 50, 4000
    rng = np.random.default_rng(0)
    counts = np.zeros(stream)
    for _ in range(trials):
        buffer = ReservoirBuffer(capacity, rng)
        for item in range(stream):
            buffer.add(item)
        assert len(buffer) == capacity and len(set(buffer.items)) == capacity and buffer.seen == stream
        counts[buffer.items] += 1
    # every item is kept with probability capacity / stream = 0.2
    assert chisquare(counts).pvalue > 0.01
    assert abs(counts[:capacity].mean() - counts[-capacity:].mean()) < 0.05 * trials
    # a buffer that stops at the first `capacity` items (the usual bug) fails the same test
    assert chisquare(np.r_[np.full(capacity, trials), np.zeros(stream - capacity)]).pvalue < 1e-6


def test_reservoir_samples_without_replacement_and_rejects_zero_capacity():
    buffer = ReservoirBuffer(5, np.random.default_rng(1))
    for item in range(3):
        buffer.add(item)
    assert sorted(buffer.sample(10)) == [0, 1, 2] and len(set(buffer.sample(2))) == 2
    with pytest.raises(ConfigError):
        ReservoirBuffer(0, np.random.default_rng())


# ---------------------------------------------------------------------------------------------- LwF


def test_distillation_is_zero_for_equal_models_and_the_scaled_kl_otherwise():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert distillation_loss(logits, logits.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-7)
    teacher = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    p = torch.softmax(teacher / 2, dim=-1)
    kl = (p * (p.log() - torch.log_softmax(logits / 2, dim=-1))).sum(dim=-1).mean()
    assert distillation_loss(logits, teacher, temperature=2.0).item() == pytest.approx(4 * kl.item(), rel=1e-5)
    with pytest.raises(ConfigError):
        distillation_loss(logits, teacher, temperature=0)


# ---------------------------------------------------------------------------------------------- metrics


def test_continual_metrics_on_a_hand_made_matrix():
    matrix = np.array([[0.9, 0.1, 0.0],
                       [0.6, 0.8, 0.2],
                       [0.3, 0.7, 0.9]])  # fmt: skip
    before = np.array([0.1, 0.0, 0.1])
    metrics = continual_metrics(matrix, before)
    assert metrics["average_accuracy"] == pytest.approx((0.3 + 0.7 + 0.9) / 3)
    assert metrics["backward_transfer"] == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    assert metrics["forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)
    assert metrics["forward_transfer"] == pytest.approx(((0.1 - 0.0) + (0.2 - 0.1)) / 2)
    # forgetting takes the best accuracy a stage ever had, not the one right after it
    later_peak = np.array([[0.5, 0.0], [0.2, 0.9]])
    assert continual_metrics(np.array([[0.5, 0.0, 0.0], [0.8, 0.9, 0.0], [0.4, 0.9, 1.0]]),
                             np.zeros(3))["forgetting"] == pytest.approx(((0.8 - 0.4) + 0.0) / 2)  # fmt: skip
    assert continual_metrics(later_peak, np.zeros(2))["backward_transfer"] == pytest.approx(-0.3)
    assert continual_metrics(np.array([[0.7]]), np.array([0.1]))["forgetting"] is None


def test_options_reject_unknown_and_contradictory_strategies():
    assert ContinualOptions(strategy="replay+ewc+lwf").strategies == ("replay", "ewc", "lwf")
    for strategy in ("sgd", "naive+replay", ""):
        with pytest.raises(ConfigError):
            ContinualOptions(strategy=strategy)
    with pytest.raises(ConfigError):
        ContinualOptions(replay_size=0)


def test_stages_file_errors_name_the_file(tmp_path):
    path = tmp_path / "stages.json"
    for text in ("not json", "[]", '[{"work": "w"}, {"name": "x"}]', '[{"work": "w"}, {"work": "w", "labels": []}]',
                 '[{"work": "w"}, {"work": "w", "task": "x"}]'):  # fmt: skip
        path.write_text(text)
        with pytest.raises(InputError, match="stages.json"):
            read_stages(path)
    path.write_text('[{"work": "a", "labels": ["cut"]}, {"work": "/abs/b", "name": "two"}]')
    first, second = read_stages(path)
    assert (first.name, first.work, first.labels) == ("stage 1", tmp_path / "a", ["cut"])
    assert (second.name, str(second.work), second.labels) == ("two", "/abs/b", None)


# ---------------------------------------------------------------------------------------------- attacks


class _Embedded(nn.Module):
    """A bag-of-embeddings classifier with the `get_input_embeddings` the attacks hook into."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def loss(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.head(self.embed(ids).mean(dim=1)), labels)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_embedding_attack_stays_in_the_ball_raises_the_loss_and_leaves_no_gradient(method):
    model = _Embedded()
    ids, labels = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 2])
    attack = EmbeddingAttack(method, eps=0.5, steps=4)
    delta = attack.perturbation(model, lambda: model.loss(ids, labels))
    assert delta.shape == (2, 3, 4)
    norms = delta.flatten(1).norm(dim=1)
    if method == "fgm":
        assert torch.allclose(norms, torch.full((2,), 0.5))
    assert (norms <= 0.5 + 1e-6).all()
    assert all(p.grad is None for p in model.parameters())
    clean = model.loss(ids, labels).item()
    with perturbed_embeddings(model, delta):
        attacked = model.loss(ids, labels).item()
    assert attacked > clean
    assert model.loss(ids, labels).item() == clean  # the hook is gone after the block
    with pytest.raises(ConfigError):
        EmbeddingAttack("fgsm")


def test_layerwise_learning_rates_decay_from_the_head_down():
    model = nn.Module()
    model.bert = nn.Module()
    model.bert.embeddings = nn.Linear(1, 1)
    model.bert.encoder = nn.Module()
    model.bert.encoder.layer = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    model.classifier = nn.Linear(1, 1)
    groups = layerwise_parameter_groups(model, 1.0, 0.5, num_layers=2)
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rates[id(model.classifier.weight)] == 1.0
    assert rates[id(model.bert.encoder.layer[1].weight)] == 0.5
    assert rates[id(model.bert.encoder.layer[0].bias)] == 0.25
    assert rates[id(model.bert.embeddings.weight)] == 0.125
    with pytest.raises(ConfigError):
        layerwise_parameter_groups(model, 1.0, 1.5, num_layers=2)


# ---------------------------------------------------------------------------------------------- augmentation


def test_neighbour_substitution_stays_under_the_same_parent(minicook_work):
    tokenizer = VisualTokenizer.from_pretrained(minicook_work / "vocab")
    k = tokenizer.config.k
    neighbours = VisualNeighbours(tokenizer)
    reachable = np.flatnonzero(tokenizer.reachable())
    visual = np.array(reachable[:20])
    rng = np.random.default_rng(0)
    assert np.array_equal(neighbours.substitute(visual, 0.0, rng), visual)
    swapped = neighbours.substitute(visual, 0.99, rng)
    assert np.array_equal(swapped // k, visual // k)  # same parent
    assert np.isin(swapped, reachable).all()
    has_sibling = np.array([len(neighbours.siblings[t]) > 0 for t in visual])
    assert (swapped[has_sibling] != visual[has_sibling]).mean() > 0.9
    assert np.array_equal(swapped[~has_sibling], visual[~has_sibling])


def test_narration_dropout_and_word_dropout():
    rng = np.random.default_rng(0)
    text = "now cut the tomato into small pieces"
    assert drop_narration(text, 0.0, 0.0, rng) == text and drop_narration(None, 0.5, 0.5, rng) is None
    dropped = [drop_narration(text, 0.5, 0.0, rng) for _ in range(400)]
    assert 0.4 < np.mean([d is None for d in dropped]) < 0.6
    for _ in range(50):
        words = drop_narration(text, 0.0, 0.9, rng).split()
        assert 1 <= len(words) and all(w in text.split() for w in words)
    with pytest.raises(ConfigError):
        drop_narration(text, 1.0, 0.0, rng)


# ---------------------------------------------------------------------------------------------- stages


def test_continual_stage_end_to_end_with_every_strategy(tiny_model, minicook_work, tmp_path):
    stages = tmp_path / "stages.json"
    stages.write_text(json.dumps([{"name": "a", "work": str(minicook_work), "labels": list(VERBS[:2])},
                                  {"name": "b", "work": str(minicook_work), "labels": list(VERBS[2:4])}]))
    out = tmp_path / "out"
    report = continual(tiny_model, stages, out, strategy="replay+ewc+lwf", epochs=2, learning_rate=1e-3,
                       replay_size=8, fisher_examples=4, device="cpu")  # fmt: skip
    assert report.ok
    result = read_json(out / "continual.json")
    assert result["labels"] == list(VERBS[:4])
    matrix = np.array(result["accuracy_matrix"])
    assert matrix.shape == (2, 2) and ((0 <= matrix) & (matrix <= 1)).all()
    assert result["metrics"] == pytest.approx(continual_metrics(matrix, np.array(result["accuracy_before"])))
    within = np.array(result["accuracy_matrix_within_stage"])
    assert within.shape == (2, 2) and (within >= matrix).all()  # two labels to choose from instead of four
    assert (out / "model" / "config.json").exists() and "<svg" in (out / "report.html").read_text()
    stages.write_text(json.dumps([{"work": str(minicook_work), "labels": ["juggle"]}, {"work": str(minicook_work)}]))
    with pytest.raises(ConfigError, match="no verb label"):
        continual(tiny_model, stages, out, device="cpu")


def test_finetune_reports_accuracy_under_attack_with_adversarial_training_and_augmentation(tiny_model, minicook_work,
                                                                                          tmp_path):  # fmt: skip
    report = finetune(tiny_model, minicook_work, tmp_path, epochs=1, adversarial="pgd", adv_eps=0.5, adv_steps=2,
                      lr_decay=0.8, word_substitution=0.2, with_text=True, narration_dropout=0.3, word_dropout=0.1,
                      device="cpu")  # fmt: skip
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["adversarial"] == metrics["attack"] == "pgd"
    assert set(metrics["test_under_attack"]["verb"]) == {"top1", "top5"}
    assert report.stats["verb_top1_under_attack"] == metrics["test_under_attack"]["verb"]["top1"]
    for bad in ({"adversarial": "fgsm"}, {"attack": "x"}, {"narration_dropout": 0.2}, {"lr_decay": 0.0},
                {"adversarial": "fgm", "adv_eps": 0.0}):  # fmt: skip
        with pytest.raises(ConfigError):
            finetune(tiny_model, minicook_work, tmp_path / "bad", epochs=1, device="cpu", **bad)


def test_attack_leaves_the_layout_tokens_alone():
    model = _Embedded()
    ids, labels = torch.tensor([[0, 2, 3, 9], [0, 5, 9, 9]]), torch.tensor([0, 2])
    attack = EmbeddingAttack("pgd", eps=0.5, steps=2, fixed_ids=(0, 9))
    delta = attack.perturbation(model, lambda: model.loss(ids, labels))
    fixed = (ids == 0) | (ids == 9)
    assert (delta[fixed] == 0).all() and (delta[~fixed].abs().sum(dim=-1) > 0).all()
