"""Captioning metrics of the paper's Table 3 through pycocoevalcap: BLEU-3, BLEU-4, METEOR, ROUGE-L and CIDEr.

Scores are corpus-level, exactly as the COCO caption evaluation computes them: BLEU over the whole corpus with the
closest reference length, METEOR 1.5 from its jar, ROUGE-L (beta 1.2) and CIDEr-D averaged over the segments, with
CIDEr's document frequencies taken from the references being scored. Captions are tokenized first: with Java by the
Stanford PTB tokenizer that pycocoevalcap ships (lower case, punctuation removed), without Java by
`simple_tokenize`, which reproduces it on plain sentences.

METEOR and the PTB tokenizer run in Java. Without a `java` on PATH, `CaptionScorer` warns once and reports the
Java-free subset: BLEU, ROUGE-L and CIDEr on `simple_tokenize`d text, METEOR as None.

Values are fractions (BLEU-4 of identical captions is 1.0; CIDEr of a perfect caption whose n-grams are rare in the
references can exceed 1). `format_table3` prints them in the paper's convention: BLEU, METEOR and ROUGE-L as
percentages, CIDEr as it is (the paper's VideoBERT + S3D row reads 4.33, 11.94, 28.80, 0.55).
"""
from __future__ import annotations

import logging
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Hashable

logger = logging.getLogger(__name__)

METRICS = ("bleu3", "bleu4", "meteor", "rouge_l", "cider")
METRIC_NAMES = {"bleu3": "BLEU-3", "bleu4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr"}
# The paper prints these as percentages; CIDEr stays a plain number.
PERCENT_METRICS = ("bleu3", "bleu4", "meteor", "rouge_l")
# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS: the tokens the PTB path drops after tokenizing.
_PUNCTUATION_TOKENS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                       "--", "...", ";"}  # fmt: skip
_CLITICS = re.compile(r"(\w)(n't|'s|'re|'ll|'d|'ve|'m)\b")
_TOKEN = re.compile(r"n't|'\w+|\w+(?:-\w+)*")


def find_java() -> str | None:
    """Path of the `java` executable pycocoevalcap would run, or None."""
    return shutil.which("java")


def simple_tokenize(text: str) -> str:
    """Lower-case `text` and split it into words the way the PTB path does for plain sentences: clitics split off
    (`isn't` -> `is n't`, `it's` -> `it 's`), hyphenated words kept whole, punctuation dropped."""
    return " ".join(_TOKEN.findall(_CLITICS.sub(r"\1 \2", text.lower())))


class CaptionScorer:
    """Scores caption sets; holds one METEOR process for all of them.

    METEOR's jar spends several seconds loading its paraphrase table. The process starts when the scorer is made
    and loads while the caller works (e.g. trains), and serves every `score` call until `close` (or the end of a
    `with` block).
    """

    def __init__(self) -> None:
        self.java = find_java() is not None
        self._meteor = None
        if self.java:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        else:
            message = (
                "no `java` on PATH: METEOR is not computed (reported as None) and captions are tokenized by "
                "simple_tokenize instead of the PTB tokenizer; install a Java runtime for the full Table 3"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)

    def __enter__(self) -> "CaptionScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR process (pycocoevalcap's Meteor stops it when it is garbage collected)."""
        self._meteor = None

    @property
    def tokenizer(self) -> str:
        """Which tokenizer the scores use: `ptb` (Java) or `simple`."""
        return "ptb" if self.java else "simple"

    def score(
        self, references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
    ) -> dict[str, float | None]:
        """`{bleu3, bleu4, meteor, rouge_l, cider}` of `candidates` (id -> caption) against `references` (id -> its
        reference captions); both must have the same ids. METEOR is None without Java."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        if not candidates:
            raise ValueError("no captions to score")
        if set(references) != set(candidates):
            missing, extra = set(references) - set(candidates), set(candidates) - set(references)
            raise ValueError(f"references and candidates differ in ids: {len(missing)} without a candidate, "
                             f"{len(extra)} without references")  # fmt: skip
        if any(len(refs) == 0 for refs in references.values()):
            raise ValueError("every id needs at least one reference caption")
        # pycocoevalcap's scorers need tokenized, space-separated text: {id: [caption, ...]}. One tokenizer call for
        # references and candidates together: with Java each call starts a JVM.
        tokenized = self._tokenize({**{("ref", key): list(refs) for key, refs in references.items()},
                                    **{("cand", key): [caption] for key, caption in candidates.items()}})  # fmt: skip
        gts = {key: tokenized[("ref", key)] for key in references}
        res = {key: tokenized[("cand", key)] for key in references}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor = None
        if self._meteor is not None:
            meteor, _ = self._meteor.compute_score(gts, res)
        return {
            "bleu3": float(bleu[2]),
            "bleu4": float(bleu[3]),
            "meteor": None if meteor is None else float(meteor),
            "rouge_l": float(rouge),
            "cider": float(cider),
        }

    def _tokenize(self, captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
        if not self.java:
            return {key: [simple_tokenize(c) for c in texts] for key, texts in captions.items()}
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # The PTB tokenizer reads one caption a line: line breaks inside a caption would shift every later caption.
        flat = {key: [{"caption": " ".join(c.split())} for c in texts] for key, texts in captions.items()}
        tokenized = PTBTokenizer().tokenize(flat)
        # A trailing empty caption yields no output line, so its id can be missing: it is the empty caption.
        return {key: tokenized.get(key, [""] * len(texts)) for key, texts in captions.items()}


def caption_scores(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> dict[str, float | None]:
    """BLEU-3, BLEU-4, METEOR, ROUGE-L and CIDEr of `candidates` against `references` (module docstring); one-shot
    `CaptionScorer().score`."""
    with CaptionScorer() as scorer:
        return scorer.score(references, candidates)


def table3_cells(rows: Mapping[str, Mapping[str, float | None]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the paper's Table 3 for `rows` (method -> scores): percentages with two decimals
    for BLEU, METEOR and ROUGE-L, CIDEr with two decimals, `-` for a missing score."""
    header = ["method", *(METRIC_NAMES[m] for m in METRICS)]
    body = []
    for method, scores in rows.items():
        cells = [method]
        for metric in METRICS:
            value = scores.get(metric)
            if value is None:
                cells.append("-")
            else:
                cells.append(f"{100 * value:.2f}" if metric in PERCENT_METRICS else f"{value:.2f}")
        body.append(cells)
    return header, body


def format_table3(rows: Mapping[str, Mapping[str, float | None]]) -> str:
    """The paper's Table 3 for `rows` (method -> scores) as a Markdown table (cells as in `table3_cells`)."""
    header, body = table3_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def print_table3(rows: Mapping[str, Mapping[str, float | None]], title: str) -> None:
    """Print the paper's Table 3 for `rows` as a rich table."""
    from rich.console import Console
    from rich.table import Table

    header, body = table3_cells(rows)
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for cells in body:
        table.add_row(*cells)
    Console().print(table)
