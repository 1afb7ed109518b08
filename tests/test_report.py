"""The self-contained report.html builder and its data helpers: tables, SVG curves and embedded images in the page,
TensorBoard scalars read back exactly, visual-word examples and segment thumbnails from a MiniCook work dir."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from videobert.data.video import decode_frames
from videobert.report import Report, nice_ticks, segment_thumbnail, svg_curves, tensorboard_scalars, token_examples
from videobert.tokenizer.stages import THUMB_SIZE
from videobert.utils.errors import ConfigError, InputError


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_page_holds_tables_curves_and_images(tmp_path):
    red, blue = png(4, 3, (255, 0, 0)), png(2, 2, (0, 0, 255))
    (tmp_path / "blue.png").write_bytes(blue)
    report = Report("demo <run>")
    report.add_table("scores", ["method", "top-5", "n"], [["prior & co", 0.123456, 7], ["VideoBERT", 0.5, 12]],
                     note="test split")  # fmt: skip
    series = {"train/loss": [(0, 3.0), (10, 2.0), (20, 1.5)], "eval/loss": [(10, 2.5), (20, 2.2)], "one": [(5, 1.0)]}
    report.add_curves("losses", series, y_label="loss")
    report.add_images("figures", [("red one", red), ("blue one", tmp_path / "blue.png")])
    report.add_gallery("captions", [(red, ["gold: cut the tomato", "model: cut the <onion>"])])
    out = report.write(tmp_path / "out" / "report.html")
    page = out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert "<title>demo &lt;run&gt;</title>" in page
    for cell in ("<td>prior &amp; co</td>", '<td class="num">0.1235</td>', '<td class="num">12</td>', "test split"):
        assert cell in page
    assert "model: cut the &lt;onion&gt;" in page and "<onion>" not in page
    assert embedded_pngs(page) == [red, blue, red]
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<path") == 3 and all(name in svg for name in series)
    assert page.index("scores") < page.index("losses") < page.index("figures") < page.index("captions")


def test_curves_map_points_onto_the_axes():
    svg = svg_curves({"a": [(10, 1.0), (0, 0.0)], "gap": [(0, 1.0), (5, float("nan")), (10, 0.0)]}, y_label="y")
    paths = re.findall(r'<path d="([^"]*)"', svg)
    # Ticks 0..10 span the plot's width (x from 64 to 720 - 64 - legend 61 = 659 px), ticks 0..1 its height (y from
    # 276 at the bottom up to 12); points are drawn in x order.
    assert re.findall(r"([ML])([\d.]+) ([\d.]+)", paths[0]) == [("M", "64.0", "276.0"), ("L", "659.0", "12.0")]
    assert paths[1].count("M") == 2 and "L" not in paths[1]  # the NaN breaks the line into two lone points
    assert re.findall(r">([\d.]+)</text>", svg)[:2] == ["0", "2"]  # x ticks 0, 2, ..., 10
    with pytest.raises(ConfigError, match="no points"):
        Report("r").add_curves("empty", {"a": []}, y_label="y")


def test_nice_ticks():
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.37, 9.2) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(1, 40) == [0, 10, 20, 30, 40]
    assert nice_ticks(-0.7, 0.65) == [-1, -0.5, 0, 0.5, 1]
    assert nice_ticks(0.61, 0.69) == [0.6, 0.62, 0.64, 0.66, 0.68, 0.7]
    assert nice_ticks(3, 3)[0] < 3 < nice_ticks(3, 3)[-1]


def test_bad_report_inputs_fail_clearly(tmp_path):
    report = Report("r")
    with pytest.raises(ConfigError, match="2 cells for 3 columns"):
        report.add_table("t", ["a", "b", "c"], [[1, 2]])
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff not a png")
    with pytest.raises(InputError, match="not a PNG"):
        report.add_images("i", [("x", tmp_path / "x.jpg")])
    with pytest.raises(ConfigError, match="not a PNG"):
        report.add_gallery("g", [(b"GIF89a", ["x"])])


def test_tensorboard_scalars_reads_back_what_summary_writer_wrote(tmp_path):
    values = {"train/loss": [(0, 2.5), (10, 1.25), (20, 0.1)], "train/alignment_accuracy": [(10, 0.3)]}
    with SummaryWriter(tmp_path / "logs") as writer:
        for tag, points in values.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
    with SummaryWriter(tmp_path / "logs" / "eval") as writer:
        writer.add_scalar("loss", 3.0, 5)
    scalars = tensorboard_scalars(tmp_path / "logs")
    expected = {tag: [(step, float(np.float32(v))) for step, v in points] for tag, points in values.items()}
    assert scalars == {**expected, "eval/loss": [(5, 3.0)]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no TensorBoard event file"):
        tensorboard_scalars(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        tensorboard_scalars(tmp_path / "missing")


def test_token_examples_show_the_most_frequent_words(minicook_work):
    tokens = pq.read_table(minicook_work / "tokens.parquet")["token"].to_numpy()
    counts = np.bincount(tokens)
    examples = token_examples(minicook_work, n_words=3, clips_per_word=4)
    assert [t for t, _, _ in examples] == np.argsort(-counts, kind="stable")[:3].tolist()
    width, height = THUMB_SIZE
    for token, data, caption in examples:
        assert caption.startswith(f"token {token} (") and f"{counts[token]} clips" in caption
        assert "most often '" in caption  # MiniCook clips lie in annotated steps
        grid = Image.open(io.BytesIO(data))
        assert grid.format == "PNG" and grid.size == (2 * width, 2 * height)  # 4 clips -> 2 x 2 cells
    pure = token_examples(minicook_work, n_words=2, clips_per_word=2, by="pure")
    shares = [float(re.search(r"\((\d+)% of", caption).group(1)) for _, _, caption in pure]
    assert len(pure) == 2 and shares == sorted(shares, reverse=True)
    with pytest.raises(ConfigError, match="by must be"):
        token_examples(minicook_work, by="random")


def test_segment_thumbnail_is_the_middle_frame(minicook_work):
    path = pq.read_table(minicook_work / "manifest.parquet", columns=["path"])["path"][0].as_py()
    frames = decode_frames(path, start=2.25, end=3.0)
    middle = next(frames).array  # (H, W, 3)
    frames.close()
    height, width = middle.shape[:2]
    same_size = Image.open(io.BytesIO(segment_thumbnail(path, 1.5, 3.0, size=(width, height))))
    np.testing.assert_array_equal(np.asarray(same_size.convert("RGB")), middle)
    scaled = Image.open(io.BytesIO(segment_thumbnail(path, 1.5, 3.0)))
    assert scaled.size == (THUMB_SIZE[1] * width // height, THUMB_SIZE[1])  # fits 160 x 120, aspect kept
    with pytest.raises(InputError, match="no frame"):
        segment_thumbnail(path, 1e6, 1e6 + 1)
