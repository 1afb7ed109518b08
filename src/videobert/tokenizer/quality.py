"""Does a visual vocabulary keep what distinguishes the steps of a video? (DESIGN.md §6)

Before spending hours on pretraining, check the tokens: a prototype found that quantisation threw away
most of the information its clip features had. Two measures, both on annotated segments:

* clip level: NMI and purity between each clip's word and its segment's verb / noun, next to the same
  measures against shuffled labels (both grow with vocabulary size even without signal);
* segment level, on held-out videos: a logistic-regression probe on the segment's bag of visual words,
  next to the same probe on the mean of its continuous clip features (what CBT-style models see, with no
  quantisation loss) and the majority-class rate (chance).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from videobert.data.ingest import load_segments
from videobert.features.store import FeatureStore
from videobert.tokenizer.stages import clip_labels, token_informativeness
from videobert.utils.errors import InputError
from videobert.utils.io import read_parquet
from videobert.workdir import WorkDir


def segment_clip_index(clips: pa.Table, segments: pa.Table) -> list[np.ndarray]:
    """For each segment (row order), the clip-table rows whose midpoint lies in [start, end)."""
    mids = (clips["start"].to_numpy() + clips["end"].to_numpy()) / 2
    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(clips["video"].to_pylist()):
        by_video.setdefault(v, []).append(i)
    out = []
    for seg in segments.select(["video", "start", "end"]).to_pylist():
        rows = np.asarray(by_video.get(seg["video"], []), dtype=np.int64)
        out.append(rows[(mids[rows] >= seg["start"]) & (mids[rows] < seg["end"])] if len(rows) else rows)
    return out


def _probe(x_train: np.ndarray, y_train: list, x_test: np.ndarray, y_test: list) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_train, y_train)
    return float(np.mean(clf.predict(x_test) == np.asarray(y_test, dtype=object)))


def segment_token_report(work: str | os.PathLike) -> dict[str, Any]:
    """Clip-level NMI/purity and held-out segment probes (bag of words vs continuous features vs chance)
    for the verb and noun labels of WORK's annotated segments."""
    wd = WorkDir(work)
    tokens = read_parquet(wd.require(wd.tokens, "tokenize"))
    segments = load_segments(work)
    if segments.num_rows == 0:
        raise InputError(wd.segments, "no annotated segments; token quality needs verb/noun labels")
    store = FeatureStore(work)
    if tokens.num_rows != len(store) or tokens["video"].to_pylist() != store.clips["video"].to_pylist():
        raise InputError(wd.tokens, "does not match clips.parquet row for row; re-run `videobert tokenize`")
    words = tokens["token"].to_numpy()
    feats = store.load()
    report: dict[str, Any] = {}

    # (num_segments,) lists of clip rows; segments without a clip (shorter than one clip) are left out.
    members = segment_clip_index(tokens, segments)
    keep = [i for i, m in enumerate(members) if len(m)]
    n_words = int(words.max()) + 1
    bags = np.zeros((len(keep), n_words), np.float32)  # (segments, vocab) normalised word counts
    means = np.zeros((len(keep), feats.shape[1]), np.float32)  # (segments, D) mean clip feature
    for r, i in enumerate(keep):
        np.add.at(bags[r], words[members[i]], 1.0)
        bags[r] /= bags[r].sum()
        means[r] = feats[members[i]].mean(axis=0)
    split = np.asarray(segments["split"].to_pylist(), dtype=object)[keep]
    train, test = split == "train", (split == "val") | (split == "test")
    report["segments_train"], report["segments_heldout"] = int(train.sum()), int(test.sum())

    for column in ("verb", "noun"):
        clip_lab = clip_labels(tokens, segments, column)
        labelled = np.array([lab is not None for lab in clip_lab])
        if labelled.any():
            info = token_informativeness(words[labelled], np.asarray(clip_lab, dtype=object)[labelled])
            report.update({f"{column}_clip_{k}": round(v, 4) for k, v in info.items()})
        y = np.asarray(segments[column].to_pylist(), dtype=object)[keep]
        ok_train, ok_test = train & (y != None), test & (y != None)  # noqa: E711 (object array)
        if ok_train.sum() < 2 or ok_test.sum() < 1 or len(set(y[ok_train])) < 2:
            continue
        values, counts = np.unique(y[ok_train].astype(str), return_counts=True)
        majority = values[counts.argmax()]
        report[f"{column}_probe_chance"] = round(float(np.mean(y[ok_test].astype(str) == majority)), 4)
        report[f"{column}_probe_tokens"] = round(_probe(bags[ok_train], list(y[ok_train]), bags[ok_test], list(y[ok_test])), 4)
        report[f"{column}_probe_features"] = round(_probe(means[ok_train], list(y[ok_train]), means[ok_test], list(y[ok_test])), 4)
    return report
