"""Hierarchical k-means (the visual vocabulary) against flat k-means with as many clusters, in one run.

    .venv/bin/python benchmarks/kmeans.py                          # paper size: 200k x 1024, 12^4 words
    .venv/bin/python benchmarks/kmeans.py --n 50000 --dim 256      # smaller

All three methods cluster the same (n, dim) float32 vectors (a Gaussian mixture with 2,000 components,
so there is structure to find) into k**depth clusters, with the same thread count:

1. ``VisualTokenizer.fit`` with its defaults (each node's k-means on at most 8192 of its points, all of
   them assigned), ``niter`` Lloyd iterations per node, run to the end; then ``encode`` of all n vectors
   (a tree descent).
2. flat ``faiss.Kmeans`` with k**depth centroids and the same ``niter``: too slow to run to the end, so it
   runs ``--flat-iters`` iterations and is extrapolated linearly. Every iteration costs the same (an
   exhaustive search of all n vectors over all centroids plus a centroid update; faiss reports the time
   of each), and the random initialisation is negligible.
3. sklearn ``MiniBatchKMeans(n_clusters=k**depth)`` with its defaults (batch_size 1024, k-means++ init on
   init_size = 3 * n_clusters points, up to 100 epochs with early stopping). Estimated as a LOWER bound,
   from two measured pieces:
   * k-means++ initialisation: ``sklearn.cluster.kmeans_plusplus`` on an init sample of the same size,
     with the same number of local trials (2 + ln n_clusters), for ``--kpp-centers`` centres, scaled to
     n_clusters centres (each new centre costs the same: its candidates' distances to the whole sample);
   * one epoch (n / batch_size minibatch steps): ``partial_fit`` on ``--mbk-steps`` batches, median step
     time times the steps of one epoch. sklearn's own ``fit`` runs at least one epoch, usually many, and
     also labels every point at the end; neither is counted.
   The same bound with a free random initialisation is printed too, as the most favourable case.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import faiss
import numpy as np
import sklearn
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from threadpoolctl import threadpool_limits

from videobert.tokenizer.hkmeans import VisualTokenizer, VisualVocabConfig


def sec(seconds: float) -> str:
    return f"{seconds:.3g} s"


def mixture(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2000, dim), dtype=np.float32)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= 0.5
    x += centers[rng.integers(0, len(centers), n)]
    return x


def bench_tree(x: np.ndarray, args: argparse.Namespace, threads: int) -> dict:
    config = VisualVocabConfig(k=args.k, depth=args.depth, seed=args.seed, normalize="none", niter=args.niter)
    tok = VisualTokenizer(config)
    t0 = time.perf_counter()
    tok.fit(x, threads=threads)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = tok.encode(x)
    encode = time.perf_counter() - t0
    mse = float(((x - tok.leaf_centroids()[tokens]) ** 2).sum(axis=1).mean())
    return {"fit": fit, "encode": encode, "used": int(np.unique(tokens).size), "mse": mse}


def bench_flat_faiss(x: np.ndarray, clusters: int, args: argparse.Namespace) -> dict:
    km = faiss.Kmeans(x.shape[1], clusters, niter=args.flat_iters, seed=args.seed, min_points_per_centroid=1)
    t0 = time.perf_counter()
    km.train(x)
    wall = time.perf_counter() - t0
    per_iter = km.iteration_stats[-1]["time"] / len(km.iteration_stats)  # faiss times are cumulative
    search = km.iteration_stats[0]["time_search"]  # one nearest-centroid search of all n over all centroids
    total = wall + (args.niter - args.flat_iters) * per_iter
    return {"measured": wall, "per_iter": per_iter, "search": search, "total": total}


def bench_minibatch(x: np.ndarray, clusters: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    n = len(x)
    batch = 1024  # sklearn's default
    init_size = min(max(3 * batch, 3 * clusters), n)  # what MiniBatchKMeans uses for its initialisation
    trials = 2 + int(math.log(clusters))  # sklearn's default number of local trials
    sample = x[rng.choice(n, init_size, replace=False)]
    t0 = time.perf_counter()
    kmeans_plusplus(sample, min(args.kpp_centers, clusters), n_local_trials=trials, random_state=args.seed)
    kpp = (time.perf_counter() - t0) / min(args.kpp_centers, clusters) * clusters

    # start from random centroids; the first partial_fit must see at least n_clusters points, so it is
    # a larger step and is not timed
    mbk = MiniBatchKMeans(
        n_clusters=clusters, init=x[rng.choice(n, clusters, replace=False)], n_init=1, batch_size=batch,
        compute_labels=False, random_state=args.seed,
    )
    mbk.partial_fit(x[rng.choice(n, clusters, replace=False)])
    steps = []
    for _ in range(args.mbk_steps):
        chunk = x[rng.integers(0, n, batch)]
        t0 = time.perf_counter()
        mbk.partial_fit(chunk)
        steps.append(time.perf_counter() - t0)
    step = float(np.median(steps))
    epoch = step * math.ceil(n / batch)
    return {"kpp": kpp, "step": step, "epoch": epoch, "default_lower": kpp + epoch, "random_lower": epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="vectors")
    parser.add_argument("--dim", type=int, default=1024, help="dimension")
    parser.add_argument("--k", type=int, default=12, help="children per node")
    parser.add_argument("--depth", type=int, default=4, help="tree depth (k**depth clusters)")
    parser.add_argument("--niter", type=int, default=20, help="Lloyd iterations (per node, and of the flat k-means)")
    parser.add_argument("--flat-iters", type=int, default=1, help="flat faiss iterations actually run")
    parser.add_argument("--kpp-centers", type=int, default=200, help="k-means++ centres actually drawn")
    parser.add_argument("--mbk-steps", type=int, default=6, help="MiniBatchKMeans steps actually timed")
    parser.add_argument("--threads", type=int, default=0, help="threads for every method (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    clusters = args.k**args.depth
    print(
        f"{args.n} x {args.dim} float32, {args.k}^{args.depth} = {clusters} clusters, niter {args.niter}, "
        f"{threads} thread(s) of {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"faiss {faiss.__version__}, scikit-learn {sklearn.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    x = mixture(args.n, args.dim, args.seed)
    faiss.omp_set_num_threads(threads)
    with threadpool_limits(limits=threads):
        tree = bench_tree(x, args, threads)
        print(f"hierarchical k-means: fit {sec(tree['fit'])}, encode {sec(tree['encode'])} "
              f"({tree['used']} leaves used, quantisation MSE {tree['mse']:.1f})")
        flat = bench_flat_faiss(x, clusters, args)
        print(f"flat faiss k-means:   {args.flat_iters} iteration(s) in {sec(flat['measured'])}, "
              f"{sec(flat['per_iter'])} each -> {args.niter} iterations ~ {sec(flat['total'])}; "
              f"one flat nearest-centroid search of all vectors {sec(flat['search'])}")
        mbk = bench_minibatch(x, clusters, args)
        print(f"MiniBatchKMeans:      k-means++ init ~ {sec(mbk['kpp'])}, step {sec(mbk['step'])}, "
              f"one epoch ~ {sec(mbk['epoch'])} -> defaults >= {sec(mbk['default_lower'])}, "
              f"random init >= {sec(mbk['random_lower'])}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    vs_mbk, vs_mbk_random = mbk["default_lower"] / tree["fit"], mbk["random_lower"] / tree["fit"]
    vs_flat = flat["total"] / tree["fit"]
    print(f"speed-up of the tree: >= {vs_mbk:.1f}x vs MiniBatchKMeans (defaults), >= {vs_mbk_random:.1f}x vs "
          f"MiniBatchKMeans (random init, 1 epoch), ~{vs_flat:.1f}x vs flat faiss; encode by descent "
          f"{flat['search'] / tree['encode']:.1f}x faster than a flat search over the leaves")
    print("\n| vectors | clusters | threads | hierarchical k-means fit | flat faiss k-means (est.) "
          "| MiniBatchKMeans defaults (lower bound) | MBK random init, 1 epoch (lower bound) "
          "| encode: descent vs flat search |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.n} x {args.dim} | {args.k}^{args.depth} = {clusters} | {threads} | {sec(tree['fit'])} "
        f"| ~{sec(flat['total'])} ({vs_flat:.0f}x) | >= {sec(mbk['default_lower'])} ({vs_mbk:.0f}x) "
        f"| >= {sec(mbk['random_lower'])} ({vs_mbk_random:.0f}x) | {sec(tree['encode'])} vs {sec(flat['search'])} |"
    )


if __name__ == "__main__":
    main()
