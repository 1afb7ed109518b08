"""Retrieval: the candidate pool, exact R@K / median rank from a model whose alignment scores and hidden states the
test sets, and parity of the pooled embeddings and the faiss search with direct computations on a real tiny model.
(`evaluate --task retrieval` end to end is in test_zeroshot.py, next to the shared MiniCook model.)"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from videobert.model import ALIGNED, NOT_ALIGNED, VideoBertConfig, VideoBertForPreTraining, VideoBertTokenizer
from videobert.tasks.metrics import retrieval_metrics
from videobert.tasks.retrieval import (
    alignment_similarity,
    candidate_pool,
    distinct_captions,
    embedding_similarity,
    likelihood_similarity,
    pooled_embeddings,
    retrieval,
)
from videobert.utils.errors import ConfigError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "egg", "onion", "bread", "fish", "apple", "lemon"]
ID = {w: i for i, w in enumerate(WORDS)}
T = len(WORDS)
# Pair i: caption word WORDS[5 + i], repeated so that captions (and visual sequences) differ in length and batches
# hold padding; its video is visual word i.
CAPTIONS = [" ".join([word] * (i % 3 + 1)) for i, word in enumerate(WORDS[5:])]
VISUAL = [[i] * (i % 2 + 1) for i in range(len(CAPTIONS))]

# Alignment log-odds of (text row, video column). Gold ranks (ties against gold):
# text to video, rows:    2 (3 beats 2), 2 (tie), 6 (all >= 0), 1, 2, 6 (all >= -1)
# video to text, columns: 1, 2 (tie), 6 (all >= 0), 1, 2 (tie), 6 (all >= -1)
ALIGNMENT = np.array(
    [
        [2, 0, 0, 0, 0, 3],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 1, 1],
        [0, 0, 0, 3, 0, 0],
        [0, 0, 2, 0, 1, 0],
        [0, 0, 0, 0, 0, -1],
    ],
    dtype=np.float64,
)


@pytest.fixture(scope="module")
def config():
    return VideoBertConfig(text_vocab_size=T, visual_vocab_size=8, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                           cls_token_id=ID["[CLS]"], sep_token_id=ID["[SEP]"], mask_token_id=ID["[MASK]"],
                           pad_token_id=ID["[PAD]"])  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(config):
    return VideoBertTokenizer(BertTokenizer(vocab=ID), config)


class KnownScores:
    """Stands in for `VideoBertForPreTraining`: the alignment logits of (caption i, video j) are (ALIGNMENT[i, j], 0),
    the last hidden state of a token is its row of `embedding`, and at a labelled (masked) position beside video j the
    masked-token logit of caption word k is ALIGNMENT[k, j] (0 for every other id, and for every id without video)."""

    def __init__(self, config: VideoBertConfig, embedding: torch.Tensor):
        self.config = config
        self.embedding = embedding  # (vocab, dim)
        self.batch_sizes: list[int] = []

    def __call__(self, input_ids, attention_mask, token_type_ids, labels, output_hidden_states=False):
        self.batch_sizes.append(len(input_ids))
        predictions = []
        for row, ids in enumerate(input_ids.tolist()):
            videos = [self.config.id_to_visual_token(i) for i in ids if self.config.is_visual(i)]
            for _ in range(int((labels[row] != -100).sum())):
                assert ids.count(ID["[MASK]"]) == 1, "one masked caption piece per sequence"
                logits = torch.zeros(self.config.vocab_size)
                if videos:
                    logits[ID["egg"] : T] = torch.from_numpy(ALIGNMENT[:, videos[0]])
                predictions.append(logits)
        logits = torch.zeros(len(input_ids), 2)
        for row, ids in enumerate(input_ids.tolist()):
            texts = [i - ID["egg"] for i in ids if ID["egg"] <= i < T]
            videos = [self.config.id_to_visual_token(i) for i in ids if self.config.is_visual(i)]
            if texts and videos:
                logits[row, ALIGNED] = float(ALIGNMENT[texts[0], videos[0]])
        hidden = (self.embedding[input_ids],) if output_hidden_states else None  # (batch, seq, dim)
        prediction_logits = torch.stack(predictions) if predictions else None  # (labelled, vocab)
        return SimpleNamespace(alignment_logits=logits, hidden_states=hidden, prediction_logits=prediction_logits)


@pytest.fixture
def known(config):
    """Text word i and visual word j embed as rows of A and B; special tokens as 0 and padding as a large vector that
    would show if it leaked into the mean."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    b[3] = a[4]  # video 3 looks exactly like caption 4
    embedding = torch.zeros(config.vocab_size, 4, dtype=torch.float64)
    embedding[ID["egg"] : T] = torch.from_numpy(a)
    embedding[config.visual_token_offset : config.visual_token_offset + 6] = torch.from_numpy(b)
    embedding[ID["[PAD]"]] = 100.0
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return KnownScores(config, embedding), a @ b.T  # (texts, videos) cosine similarities


def test_alignment_similarity_is_the_log_odds_of_every_pair(tokenizer, known):
    model, _ = known
    scores = alignment_similarity(model, tokenizer, CAPTIONS, VISUAL, batch_size=4)
    np.testing.assert_array_equal(scores, ALIGNMENT)
    assert model.batch_sizes == [4] * 9  # 36 pairs


def expected_likelihood() -> np.ndarray:
    """Caption i is word i said n_i = i % 3 + 1 times; each piece scores log softmax(ALIGNMENT[:, j] over the caption
    words, 0 for the other text ids)[i] beside video j and log(1 / T) without video."""
    lengths = np.array([i % 3 + 1 for i in range(len(CAPTIONS))])
    logits = np.zeros((T, len(VISUAL)))
    logits[ID["egg"] :] = ALIGNMENT  # (text ids, videos)
    log_probs = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))
    with_video = log_probs[ID["egg"] :]  # (caption words, videos)
    return lengths[:, None] * (with_video - np.log(1 / T))


def test_likelihood_similarity_is_the_masked_word_pmi_of_every_pair(tokenizer, known):
    model, _ = known
    scores = likelihood_similarity(model, tokenizer, CAPTIONS, VISUAL, batch_size=3)
    np.testing.assert_allclose(scores, expected_likelihood(), rtol=1e-6)
    # Each caption's pieces beside every video and without video: sum_i n_i * (6 + 1) sequences, 3 at a time.
    assert sum(model.batch_sizes) == sum(i % 3 + 1 for i in range(6)) * 7


def test_retrieval_exact_recall_and_median_rank(tokenizer, known):
    model, cosine = known
    results = retrieval(model, tokenizer, CAPTIONS, VISUAL, batch_size=5)
    assert results["alignment"] == {
        "text_to_video": {"r1": 1 / 6, "r5": 4 / 6, "r10": 1.0, "median_rank": 2.0},
        "video_to_text": {"r1": 2 / 6, "r5": 4 / 6, "r10": 1.0, "median_rank": 2.0},
    }
    # The embedding path ranks by the cosine of the pooled (padding-free) states: exactly A·B, both directions.
    assert results["embedding"] == {
        "text_to_video": pytest.approx(retrieval_metrics(cosine)),
        "video_to_text": pytest.approx(retrieval_metrics(cosine.T)),
    }
    assert results["likelihood"] == {
        "text_to_video": pytest.approx(retrieval_metrics(expected_likelihood())),
        "video_to_text": pytest.approx(retrieval_metrics(expected_likelihood().T)),
    }
    # Video 3 is caption 4's embedding, so text 4 finds video 3 first and its own video second.
    assert cosine[4].argmax() == 3
    with pytest.raises(ValueError, match="at least 2"):
        retrieval(model, tokenizer, CAPTIONS[:1], VISUAL[:1])


def test_pooled_embeddings_exclude_padding(tokenizer, known):
    model, cosine = known
    texts = pooled_embeddings(model, tokenizer, texts=CAPTIONS, batch_size=6)
    videos = pooled_embeddings(model, tokenizer, visual_tokens=VISUAL, batch_size=6)
    np.testing.assert_allclose(texts @ videos.T, cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-6)


def test_pooled_embeddings_match_a_direct_forward_pass(config, tokenizer):
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config).eval()
    with torch.inference_mode():
        for texts, visual in ((CAPTIONS, None), (None, VISUAL)):
            pooled = pooled_embeddings(model, tokenizer, texts=texts, visual_tokens=visual, batch_size=4)  # padded
            for row in range(len(CAPTIONS)):
                encoded = tokenizer.encode(texts and texts[row], visual and visual[row])
                inputs = {key: torch.tensor([value]) for key, value in encoded.items()}
                hidden = model.bert(**inputs).last_hidden_state[0]  # (seq, hidden), no padding
                expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
                np.testing.assert_allclose(pooled[row], expected, rtol=1e-4, atol=1e-5)
        # The alignment log-odds of a pair are those of its own forward pass, whatever the batch.
        scores = alignment_similarity(model, tokenizer, CAPTIONS[:3], VISUAL[:2], batch_size=4)
        inputs = {key: torch.tensor([value]) for key, value in tokenizer.encode(CAPTIONS[2], VISUAL[1]).items()}
        logits = model(**inputs).alignment_logits[0]
        assert scores[2, 1] == pytest.approx((logits[ALIGNED] - logits[NOT_ALIGNED]).item(), rel=1e-4, abs=1e-5)


def test_embedding_similarity_is_the_inner_product_in_gallery_order():
    rng = np.random.default_rng(1)
    queries, gallery = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(embedding_similarity(queries, gallery), queries @ gallery.T, rtol=1e-5, atol=1e-5)


def test_candidate_pool_subsamples_with_a_seed():
    captions = ["Cut the egg", "fry the fish", "cut  the  egg", "add the egg", "roll the bread", "wash the apple"]
    assert distinct_captions(captions).tolist() == [0, 1, 3, 4, 5]  # the second "cut the egg" is a repeat
    assert candidate_pool(captions, max_candidates=100).tolist() == [0, 1, 2, 3, 4, 5]
    pool = candidate_pool(captions, max_candidates=3, seed=0)
    assert len(pool) == 3 and list(pool) == sorted(set(pool))
    assert candidate_pool(captions, max_candidates=3, seed=0).tolist() == pool.tolist()
    assert {tuple(candidate_pool(captions, 3, seed=s)) for s in range(10)} != {tuple(pool)}
    with pytest.raises(ConfigError, match="at least 2"):
        candidate_pool(captions, max_candidates=1)


def test_repeated_captions_are_one_query_whose_right_answers_are_all_its_videos(tokenizer, known):
    model, _ = known
    # Videos 0 and 2 are both captioned "egg": one query "egg" (ALIGNMENT row 0) whose right answers are videos 0 and
    # 2, and one query "onion" (row 1) for video 1. Alignment scores (query, video): egg (2, 0, 0), onion (1, 1, 0).
    results = retrieval(model, tokenizer, ["egg", "onion", "egg"], [[0], [1], [2]], batch_size=4)
    # text to video: egg's best right answer (video 0, score 2) ranks first; onion's video 1 ties with video 0: rank 2.
    assert results["alignment"]["text_to_video"] == {"r1": 0.5, "r5": 1.0, "r10": 1.0, "median_rank": 1.5}
    # video to text over the 2 distinct captions: video 0: egg 2 > onion 1 (rank 1); video 1: onion 1 > egg 0 (rank
    # 1); video 2: egg 0 ties onion 0, counted against egg (rank 2).
    assert results["alignment"]["video_to_text"] == {"r1": 2 / 3, "r5": 1.0, "r10": 1.0, "median_rank": 1.0}
    with pytest.raises(ValueError, match="2 distinct texts"):
        retrieval(model, tokenizer, ["egg", "Egg"], [[0], [1]])
