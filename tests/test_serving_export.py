"""ONNX export of a tiny VideoBERT: parity with PyTorch on other inputs than the export's own (batch and sequence axes
dynamic), zero-shot agreement on the test split, int8, and `onnx-predict` running without torch."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from videobert.model import VideoBertForPreTraining
from videobert.serving.export import VideoBertHeads, export
from videobert.serving.runtime import OnnxVideoBert, read_export
from videobert.tasks.retrieval import alignment_similarity, likelihood_similarity
from videobert.tasks.template import LabelSet
from videobert.tasks.zeroshot import template_scores
from videobert.utils.errors import ConfigError, InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_records_parts_opset_and_parity(tiny_export):
    _, out, report = tiny_export
    meta = read_export(out)
    assert meta["opset"] == 18 and sorted(meta["parts"]) == ["caption_encoder", "videobert"]
    part = meta["parts"]["videobert"]
    assert part["files"] == {"fp32": "videobert.onnx", "int8": "videobert.int8.onnx"}
    assert part["outputs"] == ["mask_logits", "alignment_logits", "pooled_embedding"]
    assert 0 < part["bytes"]["int8"] < part["bytes"]["fp32"]
    fp32, int8 = meta["parity"]["videobert"]["fp32"], meta["parity"]["videobert"]["int8"]
    assert fp32["max_abs_diff"] < 1e-5 and int8["max_abs_diff"] < 0.1
    assert fp32["verb_top1_agreement"] == fp32["noun_top1_agreement"] == 1.0
    assert int8["verb_top1_agreement"] >= 0.98 and int8["noun_top1_agreement"] >= 0.98
    assert fp32["zero_shot_segments"] > 10
    assert report.stats["videobert.fp32.verb_top1_agreement"] == 1.0
    assert meta["labels"]["verb"] and meta["labels"]["noun"]
    caption = meta["parts"]["caption_encoder"]
    assert caption["encoder_mode"] == "pretrained+features" and caption["inputs"][-1] == "visual_features"
    assert meta["parity"]["caption_encoder"]["fp32"]["max_abs_diff"] < 1e-4
    assert meta["parity"]["caption_encoder"]["int8"]["max_abs_diff"] < 0.5


@pytest.mark.parametrize("batch_size,visual_lengths", [(1, [5]), (5, [1, 9, 3, 20, 2])])
def test_graph_equals_pytorch_for_other_batch_and_sequence_sizes(tiny_export, batch_size, visual_lengths):
    model_dir, out, _ = tiny_export
    network = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    rng = np.random.default_rng(1)
    visual = [rng.integers(0, network.config.visual_vocab_size, n).tolist() for n in visual_lengths]
    texts = ["cut the tomato", None, "peel", "now let me show you", None][:batch_size]
    batch = network.tokenizer.batch_encode(texts, visual)
    positions = torch.tensor([[1, 2, 0]] * batch_size)  # (batch, 3)
    with torch.no_grad():
        expected = VideoBertHeads(network)(**batch, mask_positions=positions)
    got = OnnxVideoBert(out).run({k: v.numpy() for k, v in batch.items()}, positions.numpy())
    for name, want in zip(("mask_logits", "alignment_logits", "pooled_embedding"), expected):
        np.testing.assert_allclose(getattr(got, name), want.numpy(), atol=1e-5, err_msg=name)
    assert got.mask_logits.shape == (batch_size, 3, network.config.vocab_size)


def test_onnx_template_scores_equal_pytorch(tiny_export, minicook_work):
    model_dir, out, _ = tiny_export
    network = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    runner = OnnxVideoBert(out)
    # "pot ato"-style multi-piece labels are not in this tiny vocabulary; an unknown word becomes [UNK], one piece.
    verbs = LabelSet.from_values(["cut", "peel", "stir"], network.tokenizer.text_tokenizer)
    nouns = LabelSet.from_values(["tomato", "egg", "apple"], network.tokenizer.text_tokenizer)
    assert LabelSet.from_values(["cut", "peel", "stir"], runner.text) == verbs  # same WordPieces without transformers
    visual = [[1, 2, 3], [7], None, list(range(30))]
    with torch.inference_mode():
        expected = template_scores(network, network.tokenizer, visual, verbs, nouns, batch_size=3)
    got = runner.template_scores(visual, verbs, nouns, batch_size=3)
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, atol=1e-5)


def test_onnx_alignment_and_likelihood_equal_pytorch(tiny_export):
    model_dir, out, _ = tiny_export
    network = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    runner = OnnxVideoBert(out)
    visual = [[1, 2, 3], [7], list(range(60))]  # the last is cut to fit the 64 positions beside the text
    text = "now let me show you how to cut the tomato"
    with torch.inference_mode():
        aligned = alignment_similarity(network, network.tokenizer, [text], visual)[0]
        likely = likelihood_similarity(network, network.tokenizer, [text], visual, batch_size=5)[0]
    np.testing.assert_allclose(runner.alignment([text] * 3, visual), aligned, atol=1e-5)
    np.testing.assert_allclose(runner.likelihood(text, visual, batch_size=5), likely, atol=1e-4)


def test_onnx_predict_runs_without_torch_and_matches_the_pipeline(tiny_export, minicook_work, tmp_path):
    _, out, _ = tiny_export
    manifest = pq.read_table(minicook_work / "manifest.parquet", columns=["video", "path"]).to_pylist()[0]
    target = tmp_path / "pred.json"
    # torch and transformers made unimportable: the deployment path must not need them.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from videobert.serving.onnx_predict import onnx_predict\n"
        f"r = onnx_predict({str(out)!r}, {manifest['path']!r}, window=3, precision='int8', out={str(target)!r})\n"
        "print('OK', r.stats['windows'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(target.read_text())
    tokens = pq.read_table(minicook_work / "tokens.parquet")
    mine = tokens.filter(pc.equal(tokens["video"], manifest["video"])).sort_by("clip")
    assert [c["token"] for c in result["clips"]] == mine["token"].to_pylist()
    assert len(result["windows"]) == -(-mine.num_rows // 3) and result["precision"] == "int8"
    for window in result["windows"]:
        probs = [row["prob"] for row in window["verb"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert {row["label"] for row in window["verb"]} <= set(result["labels"]["verb"])


def test_bad_export_requests(tiny_export, tmp_path):
    model_dir, out, _ = tiny_export
    with pytest.raises(InputError, match="model directory not found"):
        export(tmp_path / "missing", out=tmp_path / "x")
    with pytest.raises(ConfigError, match="quantize"):
        export(model_dir, out=tmp_path / "x", quantize="int4")
    with pytest.raises(ConfigError, match="format"):
        export(model_dir, out=tmp_path / "x", format="tflite")
    with pytest.raises(InputError, match="not an export directory"):
        OnnxVideoBert(model_dir)
    with pytest.raises(ConfigError, match="precision"):
        OnnxVideoBert(out, precision="fp16")
    assert not (tmp_path / "x").exists()
