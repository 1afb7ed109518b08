"""Hierarchical k-means vocabulary: encoding is a tree descent, the tree is always complete, fits are
reproducible, and a saved vocabulary comes back bit-identical with the same content hash."""
from __future__ import annotations

import json

import numpy as np
import pytest

from videobert.tokenizer.hkmeans import NORMALIZE, VisualTokenizer, VisualVocabConfig
from videobert.utils.errors import ConfigError, InputError


def blobs(n: int = 400, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(10, dim))
    return (centers[rng.integers(0, 10, n)] + rng.normal(0, 1, size=(n, dim))).astype(np.float32)


def brute_force_descent(tok: VisualTokenizer, z: np.ndarray) -> np.ndarray:
    """Token of each working-space row, by walking the tree one point and one level at a time."""
    k, depth = tok.config.k, tok.config.depth
    out = []
    for point in z.astype(np.float64):
        node = 0
        for level in range(1, depth + 1):
            ids = list(range(node * k, node * k + k))
            centers = tok.centroids(level, space="working")[ids].astype(np.float64)
            dist = np.linalg.norm(centers - point, axis=1)
            dist[~tok.reachable(level)[ids]] = np.inf
            node = ids[int(np.argmin(dist))]
        out.append(node)
    return np.array(out)


@pytest.mark.parametrize("normalize", ["none", "standardize"])
def test_encode_is_a_tree_descent(normalize):
    x = blobs()
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=3, normalize=normalize)).fit(x)
    queries = np.concatenate([x[:100], blobs(100, seed=1)])
    z = queries if normalize == "none" else (queries - x.mean(0)) / x.std(0)
    np.testing.assert_array_equal(tok.encode(queries), brute_force_descent(tok, z))


def test_leaf_ids_are_mixed_radix_paths():
    x = blobs()
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=3)).fit(x)
    tokens = tok.encode(x)
    assert tok.vocab_size == 27 and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() < 27
    assert tok.leaf_centroids().shape == (27, 8)
    assert [tok.centroids(level).shape for level in (1, 2, 3)] == [(3, 8), (9, 8), (27, 8)]
    # a token's ancestor at level l is its first l digits: token // k**(depth - l)
    assert all(tok.path(int(t))[0] == t // 9 for t in tokens)
    assert tok.path(26) == (2, 2, 2) and tok.path(5) == (0, 1, 2)
    assert tok.reachable()[tokens].all()


def test_fit_is_deterministic_for_a_seed():
    x = blobs(600, dim=16)
    cfg = VisualVocabConfig(k=4, depth=3, seed=7)
    a, b = VisualTokenizer(cfg).fit(x), VisualTokenizer(cfg).fit(x)
    for level in (1, 2, 3):
        np.testing.assert_array_equal(a.centroids(level, space="working"), b.centroids(level, space="working"))
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    assert a.content_hash == b.content_hash
    other = VisualTokenizer(VisualVocabConfig(k=4, depth=3, seed=8)).fit(x)
    assert other.content_hash != a.content_hash


def test_save_load_round_trip(tmp_path):
    x = blobs()
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=3, normalize="pca-whiten", pca_dim=5)).fit(x)
    tok.save_pretrained(tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["centroids.safetensors", "config.json"]
    back = VisualTokenizer.from_pretrained(tmp_path / "v")
    assert back.config == tok.config and back.dim == 8
    assert back.content_hash == tok.content_hash
    queries = blobs(200, seed=3)
    np.testing.assert_array_equal(back.encode(queries), tok.encode(queries))
    np.testing.assert_array_equal(back.leaf_centroids(), tok.leaf_centroids())
    back.check_hash(tok.content_hash)


def test_hash_mismatch_fails_loudly(tmp_path):
    x = blobs()
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=2)).fit(x)
    wrong = VisualTokenizer(VisualVocabConfig(k=3, depth=2, seed=1)).fit(x).content_hash
    with pytest.raises(ConfigError) as err:
        tok.check_hash(wrong)
    assert wrong in str(err.value) and tok.content_hash in str(err.value)
    # a saved vocabulary whose recorded hash no longer matches its tensors is refused
    tok.save_pretrained(tmp_path / "v")
    meta = json.loads((tmp_path / "v/config.json").read_text())
    meta["content_hash"] = wrong
    (tmp_path / "v/config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not match"):
        VisualTokenizer.from_pretrained(tmp_path / "v")


def test_too_few_points_still_give_a_complete_tree():
    x = blobs(5)
    tok = VisualTokenizer(VisualVocabConfig(k=4, depth=3)).fit(x)
    assert tok.vocab_size == 64
    for level in (1, 2, 3):
        assert np.isfinite(tok.centroids(level)).all() and tok.centroids(level).shape == (4**level, 8)
    tokens = tok.encode(x)
    assert len(set(tokens.tolist())) == 5  # each training point ends in its own leaf
    assert tok.reachable()[tok.encode(blobs(300, seed=4))].all()
    np.testing.assert_array_equal(tok.encode(x), brute_force_descent(tok, (x - x.mean(0)) / x.std(0)))

    # fewer distinct points than k: each becomes a child, the rest is padding no vector reaches
    two = VisualTokenizer(VisualVocabConfig(k=4, depth=3, normalize="none")).fit(np.repeat(x[:2], 6, axis=0))
    np.testing.assert_array_equal(two.encode(x[:2]), [0, 16])
    assert two.reachable().sum() == 2
    np.testing.assert_array_equal(two.leaf_centroids()[[0, 1, 2, 3]], np.repeat(x[:1], 4, axis=0))
    assert set(two.encode(blobs(50, seed=5)).tolist()) <= {0, 16}

    one = VisualTokenizer(VisualVocabConfig(k=4, depth=2, normalize="none")).fit(x[:1])
    assert one.encode(x).tolist() == [0] * 5 and one.reachable().sum() == 1


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_normalization_round_trips(tmp_path, normalize):
    x = blobs() * np.linspace(0.1, 10, 8, dtype=np.float32) + 3
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=2, normalize=normalize)).fit(x)
    tok.save_pretrained(tmp_path / normalize)
    back = VisualTokenizer.from_pretrained(tmp_path / normalize)
    np.testing.assert_array_equal(back.encode(x), tok.encode(x))
    assert back.content_hash == tok.content_hash
    working, inputs = tok.centroids(2, space="working"), tok.centroids(2)
    assert inputs.shape == (9, 8)
    if normalize == "none":
        np.testing.assert_array_equal(inputs, working)
    if normalize == "standardize":
        np.testing.assert_allclose((inputs - x.mean(0)) / x.std(0), working, rtol=1e-4, atol=1e-4)
    if normalize == "l2":
        np.testing.assert_allclose(inputs, working * np.linalg.norm(x, axis=1).mean(), rtol=1e-5)
    if normalize == "pca-whiten":
        # all components kept: whitening is invertible, so the input-space centroids are its inverse image
        z = np.cov(x.T.astype(np.float64))
        mahalanobis_sq = np.einsum("nd,de,ne->n", inputs - x.mean(0), np.linalg.inv(z), inputs - x.mean(0))
        np.testing.assert_allclose(mahalanobis_sq, (working.astype(np.float64) ** 2).sum(1), rtol=1e-3)


def test_pca_dim_reduces_the_working_space():
    x = blobs(dim=12)
    tok = VisualTokenizer(VisualVocabConfig(k=3, depth=2, normalize="pca-whiten", pca_dim=4)).fit(x)
    assert tok.centroids(1, space="working").shape == (3, 4)
    assert tok.leaf_centroids().shape == (9, 12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 1},
        {"depth": 0},
        {"normalize": "zscore"},
        {"pca_dim": 4},
        {"normalize": "pca-whiten", "pca_dim": -1},
        {"niter": 0},
        {"max_points_per_node": 2, "k": 3},
        {"k": 2.5},
        {"k": 50, "depth": 6},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        VisualVocabConfig(**kwargs)


def test_invalid_inputs_raise():
    tok = VisualTokenizer(VisualVocabConfig(k=2, depth=1))
    with pytest.raises(RuntimeError, match="not fitted"):
        tok.encode(blobs(3))
    with pytest.raises(ConfigError, match="zero feature vectors"):
        tok.fit(np.zeros((0, 8), np.float32))
    with pytest.raises(ConfigError, match="NaN"):
        tok.fit(np.full((4, 2), np.nan, np.float32))
    tok.fit(blobs())
    with pytest.raises(ConfigError, match="dimension 3"):
        tok.encode(np.zeros((2, 3), np.float32))
    with pytest.raises(ConfigError, match="pca_dim=9 exceeds"):
        VisualTokenizer(VisualVocabConfig(k=2, depth=1, normalize="pca-whiten", pca_dim=9)).fit(blobs())


def test_sklearn_fallback_builds_the_same_kind_of_tree(monkeypatch):
    from videobert.tokenizer import hkmeans

    monkeypatch.setattr(hkmeans, "faiss", None)
    x = blobs()
    cfg = VisualVocabConfig(k=3, depth=2)
    tok = VisualTokenizer(cfg).fit(x)
    np.testing.assert_array_equal(tok.encode(x), VisualTokenizer(cfg).fit(x).encode(x))
    np.testing.assert_array_equal(tok.encode(x), brute_force_descent(tok, (x - x.mean(0)) / x.std(0)))
    assert tok.leaf_centroids().shape == (9, 8)
