"""A self-contained ``report.html``: tables, curves drawn as inline SVG, images embedded as base64 PNG and galleries
of thumbnails with text beside them, in one file that opens anywhere without a network or a server. Plus the
helpers that gather what a report shows: TensorBoard scalars of a training run, example clips of the visual
words, a thumbnail of a video segment.

Usage (this is how ``videobert demo`` composes its report)::

    from videobert.report import Report, segment_thumbnail, tensorboard_scalars, token_examples

    report = Report("videobert demo")
    report.add_table("zero-shot, accuracy (%)", ["method", "verb top-5", "noun top-5"],
                     [["language prior", 31.2, 20.5], ["VideoBERT", 40.3, 28.9]], note="test split, 172 segments")
    scalars = tensorboard_scalars("model/logs")   # {"train/mlm_loss_text": [(step, value), ...], ...}
    report.add_curves("pretraining losses", {tag: points for tag, points in scalars.items() if "loss" in tag},
                      y_label="loss")
    report.add_images("fine-tuning", [("verb confusion (test)", "finetune/confusion-verb.png")])
    report.add_gallery("visual words", [(png, [caption]) for _, png, caption in token_examples("work", 8, 9)])
    report.add_gallery("captions", [(segment_thumbnail(path, 3.0, 7.5), ["gold: cut the tomato", "model: ..."])])
    report.write("demo_out/report.html")

Every ``add_*`` renders its section at once (text is HTML-escaped) and the sections appear in the order added;
:meth:`Report.write` writes the page atomically.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from videobert.tokenizer.hkmeans import token_path
from videobert.tokenizer.stages import (
    THUMB_SIZE,
    clip_labels,
    clip_thumbnail,
    load_tokens,
    manifest_paths,
    thumbnail_grid,
)
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import atomic_open, read_parquet
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Line colours of the curves, one per series in order (Tableau 10, distinguishable and colour-blind aware).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip
EXAMPLE_ORDERS = ("frequent", "pure")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
tr:nth-child(even) td { background: #fafafa; }
p.note { color: #666; font-size: .9em; margin: .3em 0; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .9em; color: #444; max-width: 480px; }
img { image-rendering: pixelated; border: 1px solid #ccc; }
div.item { display: flex; gap: 1em; align-items: flex-start; margin: .6em 0; }
div.item p { margin: .1em 0; }
svg text { font-family: inherit; font-size: 11px; fill: #333; }
"""


class Report:
    """An HTML report built section by section (module docstring)."""

    def __init__(self, title: str):
        self.title = title
        self.sections: list[str] = []

    def add_table(
        self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str | None = None
    ) -> None:
        """A table with a header row; floats are shown with 4 significant digits and right-aligned like ints."""
        for row in rows:
            if len(row) != len(columns):
                raise ConfigError(f"table {title!r}: a row has {len(row)} cells for {len(columns)} columns")
        head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self._section(title, f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", note)

    def add_curves(
        self,
        title: str,
        series: Mapping[str, Sequence[tuple[float, float]]],
        y_label: str,
        x_label: str = "step",
        note: str | None = None,
    ) -> None:
        """Line plot of each named series of (x, y) points as one SVG path, with axes, ticks and a legend. Points
        are drawn in x order; non-finite values break the line."""
        if not series or not any(len(points) for points in series.values()):
            raise ConfigError(f"curves {title!r}: no points to draw")
        self._section(title, svg_curves(series, y_label, x_label), note)

    def add_images(
        self, title: str, images: Sequence[tuple[str, bytes | str | os.PathLike]], note: str | None = None
    ) -> None:
        """Images side by side, each with its caption below; an image is PNG bytes or the path of a PNG file."""
        figures = "".join(
            f"<figure>{_img(png, caption)}<figcaption>{_esc(caption)}</figcaption></figure>" for caption, png in images
        )
        self._section(title, figures, note)

    def add_gallery(
        self, title: str, items: Sequence[tuple[bytes | str | os.PathLike, Sequence[str]]], note: str | None = None
    ) -> None:
        """One row per item: the image (PNG bytes or path) on the left, its lines of text beside it (e.g. a segment's
        thumbnail with its reference and generated captions)."""
        rows = "".join(
            f'<div class="item">{_img(png, lines[0] if lines else "")}'
            f'<div>{"".join(f"<p>{_esc(line)}</p>" for line in lines)}</div></div>'
            for png, lines in items
        )
        self._section(title, rows, note)

    def html(self) -> str:
        """The whole page."""
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(self.title)}</h1>\n" + "\n".join(self.sections) + "\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` atomically; returns the path."""
        path = Path(path)
        with atomic_open(path, "w", encoding="utf-8") as fh:
            fh.write(self.html())
        return path

    def _section(self, title: str, body: str, note: str | None) -> None:
        note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
        self.sections.append(f"<section>\n<h2>{_esc(title)}</h2>\n{note_html}\n{body}\n</section>")


# ---------------------------------------------------------------------------------------------------- SVG curves


def svg_curves(
    series: Mapping[str, Sequence[tuple[float, float]]],
    y_label: str,
    x_label: str = "step",
    width: int = 720,
    height: int = 320,
) -> str:
    """An inline SVG line plot: one ``<path>`` per non-empty series (nothing else in it is a path), x and y axes
    with about 6 round-numbered ticks each, axis labels, and a legend on the right."""
    named = [(name, np.asarray(sorted(points), dtype=float).reshape(-1, 2)) for name, points in series.items()]
    named = [(name, xy) for name, xy in named if len(xy)]  # (points, 2): x, y
    everything = np.concatenate([xy for _, xy in named])  # (all points, 2)
    finite = everything[np.isfinite(everything).all(axis=1)]
    if not len(finite):
        raise ConfigError("curves: every point is NaN or infinite")
    legend_width = 16 + 7 * max(len(name) for name, _ in named)  # about 7 px a character at 11 px
    height = max(height, 72 + 16 * len(named))  # room for every legend row
    left, right, top, bottom = 64, 24 + legend_width, 12, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    x_ticks = nice_ticks(finite[:, 0].min(), finite[:, 0].max())
    y_ticks = nice_ticks(finite[:, 1].min(), finite[:, 1].max())
    (x0, x1), (y0, y1) = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for x in x_ticks:
        parts.append(f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_tick(x)}</text>')
    for y in y_ticks:
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + plot_w}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_tick(y)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{_esc(x_label)}</text>')
    rotated = f"translate(14 {top + plot_h / 2:.1f}) rotate(-90)"
    parts.append(f'<text transform="{rotated}" text-anchor="middle">{_esc(y_label)}</text>')
    for i, (name, xy) in enumerate(named):
        colour = PALETTE[i % len(PALETTE)]
        commands, pen_down = [], False
        for x, y in xy:
            if not (math.isfinite(x) and math.isfinite(y)):
                pen_down = False  # a gap: the next finite point starts a new stroke
                continue
            commands.append(f"{'L' if pen_down else 'M'}{sx(x):.1f} {sy(y):.1f}")
            pen_down = True
        # round caps draw a lone point (a series with one step) as a dot
        parts.append(f'<path d="{" ".join(commands)}" fill="none" stroke="{colour}" stroke-width="1.8" '
                     f'stroke-linecap="round" stroke-linejoin="round"><title>{_esc(name)}</title></path>')  # fmt: skip
        ly = top + 8 + 16 * i
        lx = left + plot_w + 12
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{colour}" stroke-width="3"/>')
        parts.append(f'<text x="{lx + 24}" y="{ly + 4}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """About `target` evenly spaced round numbers (steps of 1, 2, 2.5 or 5 times a power of ten) from at or below
    `lo` to at or above `hi`; a range of one value is widened around it."""
    if hi < lo:
        raise ConfigError(f"nice_ticks: hi ({hi}) < lo ({lo})")
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    # Multiples of the step, rounded so that 0.1 * 3 prints as 0.3.
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(k * step, digits) for k in range(first, last + 1)]


def _tick(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------------- data helpers


def tensorboard_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged under `logdir`: tag -> [(step, value)] in the order written. Event files in a
    subfolder (a TensorBoard run) prefix their tags with the subfolder's path, e.g. ``eval/…`` in ``logdir/eval``.
    Read with TensorBoard's `EventAccumulator`, keeping every point (no reservoir sampling); a run that was resumed
    keeps the points of the run that continued, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    logdir = Path(logdir)
    if not logdir.is_dir():
        raise InputError(logdir, "not a folder of TensorBoard logs")
    runs = sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")})
    if not runs:
        raise InputError(logdir, "holds no TensorBoard event file (events.out.tfevents.*)")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        accumulator = EventAccumulator(str(run), size_guidance={SCALARS: 0})  # 0: keep every point
        accumulator.Reload()
        prefix = "" if run == logdir else run.relative_to(logdir).as_posix() + "/"
        for tag in accumulator.Tags()["scalars"]:
            scalars[prefix + tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return scalars


def token_examples(
    work: str | os.PathLike, n_words: int = 8, clips_per_word: int = 9, by: str = "frequent"
) -> list[tuple[int, bytes, str]]:
    """Example clips of visual words: (token, PNG thumbnail grid of up to `clips_per_word` of its clips, caption),
    for `n_words` words of the work directory's tokens.parquet.

    ``by="frequent"``: the words with the most clips. ``by="pure"``: the words whose clips most often share one
    annotated step (verb and noun of the segment holding the clip, segments.parquet), among the words with at least
    `clips_per_word` annotated clips; ties go to the more frequent word. The caption gives the word's tree path, its
    clip count and share, and with segments its most common step and that step's share of its annotated clips.
    Clips are a seeded sample (the same every time); one that cannot be decoded is a grey cell and a warning."""
    if by not in EXAMPLE_ORDERS:
        raise ConfigError(f"by must be one of {', '.join(EXAMPLE_ORDERS)}, got {by!r}")
    if n_words < 1 or clips_per_word < 1:
        raise ConfigError(f"n_words and clips_per_word must be at least 1, got {n_words} and {clips_per_word}")
    wd = WorkDir(work)
    meta, tokens_table = load_tokens(work)
    k, depth = meta["config"]["k"], meta["config"]["depth"]
    tokens = tokens_table["token"].to_numpy()
    counts = np.bincount(tokens, minlength=meta["vocab_size"])
    if by == "pure" and not wd.segments.exists():
        raise InputError(wd.segments, "not found; by='pure' ranks words by the annotated steps of their clips")
    majority = _majority_steps(wd, tokens_table, meta["vocab_size"]) if wd.segments.exists() else {}

    if by == "frequent":
        chosen = [int(t) for t in np.argsort(-counts, kind="stable") if counts[t]][:n_words]
    else:
        eligible = [t for t, (_, _, labelled) in majority.items() if labelled >= clips_per_word]
        chosen = sorted(eligible, key=lambda t: (-majority[t][1], -counts[t], t))[:n_words]
    paths = manifest_paths(work)
    rng = np.random.default_rng(0)
    examples = []
    for t in chosen:
        picked = np.flatnonzero(tokens == t)
        if len(picked) > clips_per_word:
            picked = np.sort(rng.choice(picked, clips_per_word, replace=False))
        word_path = ".".join(map(str, token_path(t, k, depth)))
        grid, failures = thumbnail_grid(tokens_table.take(picked), paths, f"token {t} ({word_path})")
        for item, exc in failures:
            logger.warning("token %d: clip %s not shown: %s", t, item, exc)
        caption = f"token {t} ({word_path}): {counts[t]} clips ({counts[t] / len(tokens):.1%})"
        if t in majority:
            step, share, labelled = majority[t]
            caption += f"; most often '{step}' ({share:.0%} of {labelled} annotated clips)"
        examples.append((t, png_bytes(grid), caption))
    return examples


def segment_thumbnail(
    video_path: str | os.PathLike, start: float, end: float, size: tuple[int, int] = THUMB_SIZE
) -> bytes:
    """PNG bytes of the frame at the middle of ``[start, end)`` seconds of a video, scaled to fit ``size`` =
    (width, height) with its aspect ratio kept. A file that cannot be decoded raises `InputError` naming it."""
    return png_bytes(clip_thumbnail(video_path, start, end, size))


def png_bytes(image: Any) -> bytes:
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _majority_steps(wd: WorkDir, tokens_table: Any, vocab_size: int) -> dict[int, tuple[str, float, int]]:
    """Word -> (its most common annotated step, that step's share of the word's annotated clips, their number), for
    every word with an annotated clip. A clip's step is "verb noun" of the segment holding its midpoint."""
    from scipy.sparse import coo_matrix

    segments = read_parquet(wd.segments)
    verbs, nouns = clip_labels(tokens_table, segments, "verb"), clip_labels(tokens_table, segments, "noun")
    steps = [" ".join(x for x in (v, n) if x) if v is not None or n is not None else None for v, n in zip(verbs, nouns)]
    labelled = np.array([s is not None for s in steps], dtype=bool)
    if not labelled.any():
        return {}
    names, step_ids = np.unique(np.asarray([s for s in steps if s is not None], dtype=str), return_inverse=True)
    words = tokens_table["token"].to_numpy()[labelled]
    ones = np.ones(len(words), dtype=np.int64)
    table = coo_matrix((ones, (words, step_ids)), shape=(vocab_size, len(names))).tocsr()  # (words, steps) counts
    totals = np.asarray(table.sum(axis=1)).ravel()  # (words,)
    best = np.asarray(table.argmax(axis=1)).ravel()  # (words,)
    top = np.asarray(table.max(axis=1).todense()).ravel()  # (words,)
    return {int(t): (str(names[best[t]]), float(top[t] / totals[t]), int(totals[t])) for t in np.flatnonzero(totals)}


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{_esc('' if value is None else value)}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td class="num">{value}</td>'
    if isinstance(value, (float, np.floating)):
        return f'<td class="num">{value:.4g}</td>'
    return f"<td>{_esc(value)}</td>"


def _img(png: bytes | str | os.PathLike, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a data URI."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        if isinstance(png, bytes):
            raise ConfigError("image bytes are not a PNG (no PNG signature)")
        raise InputError(png, "not a PNG image")
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{_esc(alt)}">'
