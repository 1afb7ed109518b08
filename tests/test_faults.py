"""Fault injection: collisions, kills, damaged artifacts and hostile corpora. Each test checks that nothing is lost or
doubled and what the user is told: a problem they can fix is exit 2 with one line naming the file, a bad item is
exit 1 with one errors.jsonl line, and no traceback is printed without --debug."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from videobert.cli import app
from videobert.data.ingest import ingest
from videobert.data.transcripts import MAX_SENTENCE_CHARS, load_transcript
from videobert.features.extract import extract
from videobert.model import VideoBertForPreTraining
from videobert.tokenizer.stages import tokenize, vocab
from videobert.training.checkpoints import last_complete_checkpoint
from videobert.training.data import PretrainDataConfig
from videobert.training.pretrain import PretrainConfig, _plan, pretrain
from videobert.utils.errors import read_errors
from videobert.utils.lock import LOCK_FILE, DirectoryLock, LockedError

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEOS = 8
EXTRACT = dict(backbone="pixels", clip_frames=15, workers=0)
PRETRAIN = dict(init="scratch:1x32", max_steps=20, batch_size=8, save_steps=10, eval_steps=10, logging_steps=5,
                device="cpu", seed=0)  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """An 8-video corpus at 32x32, its work directory and a 20-step model with checkpoints at 10 and 20 (~8 s)."""
    from videobert.data.synth import synth

    root = tmp_path_factory.mktemp("faults")
    corpus, work, model = root / "corpus", root / "work", root / "model"
    synth(corpus, videos=VIDEOS, seed=0, width=32, height=32)
    for report in (ingest(corpus, work, jobs=1), extract(work, **EXTRACT), vocab(work, k=4, depth=2, seed=0),
                   tokenize(work), pretrain(work, out=model, **PRETRAIN)):  # fmt: skip
        assert report.ok, report
    return {"corpus": corpus, "work": work, "model": model}


def cli(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_user_error(result, *names: str) -> str:
    """Exit 2 with one `error:` line that names every one of ``names``, no traceback."""
    # A progress bar left open leaves its line unfinished: the message can follow it on the same line.
    lines = [line[line.index("error:"):] for line in result.output.splitlines() if "error:" in line]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------- collisions


_HOLDER = textwrap.dedent("""
    import sys, time
    from videobert.utils.lock import DirectoryLock
    with DirectoryLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def holder():
    """Start a process that holds the lock of a directory (as a run writing it would); yields the starter."""
    procs = []

    def start(directory: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], stdout=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_held_lock_refuses_with_the_holder_and_a_dead_holder_is_recovered(tmp_path, holder):
    proc = holder(tmp_path)
    with pytest.raises(LockedError, match=rf"{tmp_path} is in use by pid {proc.pid} on \S+ \(-c {tmp_path}\)"):
        with DirectoryLock(tmp_path):
            pass
    proc.send_signal(signal.SIGKILL)  # a run killed -9 leaves its lock file behind, but not its lock
    proc.wait()
    assert (tmp_path / LOCK_FILE).is_file()
    with DirectoryLock(tmp_path), DirectoryLock(tmp_path):  # re-entrant within a process
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()  # a finished run leaves the directory as it found it
    with DirectoryLock(tmp_path):  # released when the outer block ended
        pass


def test_extract_into_a_work_dir_in_use_is_refused_and_nothing_is_doubled(built, tmp_path, holder):
    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    before = pq.read_table(work / "clips.parquet")
    proc = holder(work)
    result = cli("extract", work, "--overwrite", "--shard-clips", "7", "--workers", "0", "--clip-frames", "15")
    assert_user_error(result, str(work), f"in use by pid {proc.pid}")
    assert pq.read_table(work / "clips.parquet").equals(before)
    proc.kill()
    proc.wait()
    # Another extract with other shard sizes on the same work dir, once the first is gone: resumes, adds nothing.
    report = extract(work, **EXTRACT, shard_clips=7)
    assert report.ok and report.done == 0 and report.skipped == VIDEOS
    clips = pq.read_table(work / "clips.parquet").select(["video", "clip"]).to_pylist()
    assert len(clips) == len({(c["video"], c["clip"]) for c in clips}) == before.num_rows


def test_pretrain_into_an_out_dir_in_use_is_refused(built, tmp_path, holder):
    out = tmp_path / "model"
    proc = holder(out)
    assert_user_error(cli("pretrain", built["work"], "--out", out, "--init", "scratch:1x32", "--device", "cpu"),
                      str(out), f"in use by pid {proc.pid}")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing trained, nothing written


# --------------------------------------------------------------------------------------------- checkpoints


def _interrupted_copy(model: Path, into: Path) -> Path:
    """The model directory as a run killed after its last checkpoint leaves it: run.json and checkpoints only."""
    shutil.copytree(model, into)
    for entry in into.iterdir():
        if entry.name not in ("run.json", "checkpoints"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return into


class _Planted:
    """Pickles to a call of ``os.mkdir(path)``: loading it would run code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes(built, tmp_path, caplog, damage):
    """Killed after step 10, a damaged checkpoint-50 beside it: the run resumes from step 10 and, single-threaded,
    ends with exactly the weights of the uninterrupted run (the guarantee the README states)."""
    out = _interrupted_copy(built["model"], tmp_path / "model")
    shutil.rmtree(out / "checkpoints" / "checkpoint-20")  # killed between steps 10 and 20
    newest = out / "checkpoints" / "checkpoint-50"
    marker = tmp_path / "code-ran"
    if damage == "truncated":  # a crash while saving: config.json written, the weights cut at 100 kB
        newest.mkdir()
        shutil.copy(out / "checkpoints" / "checkpoint-10" / "config.json", newest)
        data = (out / "checkpoints" / "checkpoint-10" / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: 100_000])
        expected = "model.safetensors: SafetensorError"
    else:  # a complete checkpoint whose rng_state.pth is a pickle that would run code
        shutil.copytree(out / "checkpoints" / "checkpoint-10", newest)
        (newest / "rng_state.pth").write_bytes(pickle.dumps(_Planted(str(marker))))
        expected = "rng_state.pth: UnpicklingError: holds Python objects other than tensors"
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(out / "checkpoints") == str(out / "checkpoints" / "checkpoint-10")
    assert f"skipping damaged checkpoint {newest} ({expected}" in caplog.text
    assert not marker.exists()
    if damage == "pickle":
        return  # the resume itself is the same as for a truncated checkpoint
    report = pretrain(built["work"], out=out, **PRETRAIN)
    assert report.ok and report.done == 1 and report.stats["steps"] == 20
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-10", "checkpoint-20", "damaged-checkpoint-50"]
    final, reference = load_file(out / "model.safetensors"), load_file(built["model"] / "model.safetensors")
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_only_damaged_checkpoints_start_over(built, tmp_path):
    out = _interrupted_copy(built["model"], tmp_path / "model")
    for checkpoint in (out / "checkpoints").iterdir():
        (checkpoint / "trainer_state.json").write_text("{")
    assert last_complete_checkpoint(out / "checkpoints") is None
    identity = json.loads((out / "run.json").read_text())
    config = PretrainConfig(**{**identity["config"], "data": PretrainDataConfig(**identity["config"]["data"])})
    assert _plan(out, identity, config, resume=True, overwrite=False) == "fresh"


def test_model_files_get_the_permissions_of_other_artifacts(built):
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(built["model"] / "model.safetensors") == mode(built["model"] / "metrics.json")


def test_alignment_accuracy_is_left_out_without_negatives(built):
    """8 videos leave one val video, with no other video to draw negatives from: only the loss is reported."""
    metrics = json.loads((built["model"] / "metrics.json").read_text())
    assert "alignment_loss" in metrics["eval"] and "alignment_accuracy" not in metrics["eval"]


def test_alignment_accuracy_is_balanced():
    from types import SimpleNamespace

    from videobert.model.configuration import ALIGNED, NOT_ALIGNED
    from videobert.training.objectives import Alignment, ObjectiveMeter

    objective = Alignment()
    meter = ObjectiveMeter([objective], torch.device("cpu"))
    labels = torch.tensor([ALIGNED, ALIGNED, ALIGNED, NOT_ALIGNED])
    logits = torch.zeros(4, 2)
    logits[:, ALIGNED] = 1.0  # always "aligned": 3 of 4 right, but half of the negatives-and-positives balance
    batch = {"labels": torch.full((4, 3), -100), "alignment_labels": labels, "attention_mask": torch.ones(4, 3)}
    outputs = SimpleNamespace(alignment_logits=logits, alignment_loss=torch.tensor(0.0))
    _, sums = objective.step(outputs, batch, torch.zeros(4, dtype=torch.long), train=False)
    meter.add(sums, batch["attention_mask"])
    metrics = meter.collect()
    assert metrics["alignment_accuracy"] == 0.5 and metrics["alignment_accuracy_aligned"] == 1.0
    # Without a mismatched pair the balanced accuracy is left out, not reported as 1.0.
    _, sums = objective.step(SimpleNamespace(alignment_logits=logits[:3], alignment_loss=torch.tensor(0.0)),
                             {**batch, "alignment_labels": labels[:3]}, torch.zeros(3, dtype=torch.long), train=False)
    meter.add(sums, batch["attention_mask"][:3])
    assert "alignment_accuracy" not in meter.collect()


# --------------------------------------------------------------------------------------------- damaged artifacts


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not what this file should be\xff" * 8)


# (artifact under WORK, the command that reads it). Each is truncated, then replaced by garbage.
WORK_ARTIFACTS = [
    ("manifest.parquet", "extract"),
    ("features/shard-00000.parquet", "vocab"),
    ("features/shard-00000.npy", "vocab"),
    ("features/meta.json", "vocab"),
    ("vocab/config.json", "tokenize"),
    ("vocab/centroids.safetensors", "tokenize"),
    ("tokens.parquet", "pretrain"),
    ("sentences.parquet", "pretrain"),
]


@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize("artifact,command", WORK_ARTIFACTS, ids=[a for a, _ in WORK_ARTIFACTS])
def test_a_damaged_work_artifact_is_one_line_naming_it(built, tmp_path, artifact, command, damage):
    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    damage(work / artifact)
    args = {"extract": ["--overwrite", "--workers", "0", "--clip-frames", "15"],
            "vocab": ["--k", "4", "--depth", "2", "--overwrite"],
            "tokenize": [],
            "pretrain": ["--out", tmp_path / "model", "--init", "scratch:1x32", "--device", "cpu"]}  # fmt: skip
    assert_user_error(cli(command, work, *args[command]), str(work / artifact))


MODEL_DAMAGE = {
    "truncated weights": ("model.safetensors", _truncate),
    "garbage weights": ("model.safetensors", _garbage),
    "config field of the wrong type": ("config.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "hidden_size": "banana"}))),
    "config not JSON": ("config.json", _truncate),
    "truncated visual vocabulary": ("visual_vocab/centroids.safetensors", _truncate),
}


@pytest.mark.parametrize("case", sorted(MODEL_DAMAGE))
def test_a_damaged_model_is_one_line_naming_it(built, tmp_path, case):
    model = tmp_path / "model"
    shutil.copytree(built["model"], model, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    name, damage = MODEL_DAMAGE[case]
    damage(model / name)
    video = next(built["corpus"].rglob("*.mp4"))
    assert_user_error(cli("evaluate", model, built["work"], "--task", "zeroshot"), str(model / name))
    assert_user_error(cli("predict", model, video, "--out", tmp_path / "p.json"), str(model / name))


def test_debug_shows_the_traceback(built, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(built["model"], model, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    _truncate(model / "model.safetensors")
    result = runner.invoke(app, ["--debug", "evaluate", str(model), str(built["work"])])
    assert result.exit_code != 0 and "SafetensorError" in repr(result.exception.__cause__)


# --------------------------------------------------------------------------------------------- hostile corpora


def test_link_loops_and_dangling_links_are_one_error_each(built, tmp_path):
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    shutil.copytree(built["corpus"], corpus)
    (corpus / "a.mp4").symlink_to("b.mp4")
    (corpus / "b.mp4").symlink_to("a.mp4")
    (corpus / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    elsewhere = tmp_path / "elsewhere.mp4"  # links are followed outside the corpus too (README, "Failure modes")
    shutil.copy(next(built["corpus"].rglob("*.mp4")), elsewhere)
    (corpus / "linked.mp4").symlink_to(elsewhere)
    first = sorted(corpus.rglob("*.srt"))[0]
    first.rename(first.with_suffix(".srt.orig"))
    first.symlink_to(first.name)  # the transcript links to itself
    result = cli("ingest", corpus, work, "--jobs", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = {e.item: e.error for e in read_errors(work / "errors.jsonl")}
    transcript = first.relative_to(corpus).as_posix()
    assert set(errors) == {"a.mp4", "b.mp4", "gone.mp4", transcript}
    assert "Too many levels of symbolic links" in errors["a.mp4"] and "No such file" in errors["gone.mp4"]
    manifest = pq.read_table(work / "manifest.parquet").to_pylist()
    assert len(manifest) == VIDEOS + 1  # every real video kept, none doubled
    assert [r["path"] for r in manifest if r["video"] == "linked.mp4"] == [str(elsewhere)]


def test_oversized_transcripts_are_refused_and_long_sentences_cut(built, tmp_path):
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    shutil.copytree(built["corpus"], corpus)
    srts = sorted(corpus.rglob("*.srt"))
    with open(srts[0], "r+b") as fh:  # 20 MiB, sparse: refused from its size, never read
        fh.truncate(20 << 20)
    words = " ".join(f"word{k}" for k in range(2000))  # one cue of 16,889 characters, no sentence end
    srts[1].write_text(f"1\n00:00:00,000 --> 00:00:02,000\n{words}\n", encoding="utf-8")
    report = ingest(corpus, work, jobs=1)
    errors = read_errors(work / "errors.jsonl")
    assert [(e.item, e.error) for e in errors] == [(srts[0].relative_to(corpus).as_posix(),
                                                    "20 MiB is too large for a transcript (at most 16 MiB)")]
    assert report.failed == 1 and report.stats["videos"] == VIDEOS and report.stats["sentences_cut"] == 1
    sentences = load_transcript(srts[1]).sentences
    assert all(len(s.text) <= MAX_SENTENCE_CHARS for s in sentences) and len(sentences) == 17
    assert " ".join(s.text for s in sentences) == words
    assert (sentences[0].start, sentences[-1].end) == (0.0, 2.0)
    assert all(a.end == b.start for a, b in zip(sentences, sentences[1:]))


def test_cues_are_put_in_time_order(tmp_path):
    srt = tmp_path / "v.srt"
    srt.write_text("1\n00:00:04,000 --> 00:00:05,000\nlater.\n\n2\n00:00:01,000 --> 00:00:02,000\nearlier.\n")
    assert [s.text for s in load_transcript(srt).sentences] == ["earlier.", "later."]


def test_a_full_disk_keeps_the_previous_artifacts_whole(built, tmp_path, monkeypatch):
    """Writes go through a temp file and a rename: a write that fails (here: no space left) leaves the previous
    artifact as it was and no temp file behind, and the command says what happened in one line."""
    import errno

    import videobert.utils.io as io_module

    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file() and p.name != LOCK_FILE}

    def no_space(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a table")  # what a full disk leaves: part of the file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io_module.pq, "write_table", no_space)
    result = cli("ingest", built["corpus"], work, "--jobs", "1")
    assert_user_error(result, "No space left on device")
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file() and p.name != LOCK_FILE} == before


def test_an_unexpected_error_is_one_line_with_exit_3():
    import typer

    from videobert.cli import command_from_function

    def broken(work: Path) -> None:
        """A stage with a bug.

        Args:
            work: Work directory.
        """
        raise RuntimeError("boom")

    group = typer.Typer()
    group.command()(command_from_function(broken, "broken"))
    result = runner.invoke(group, ["w"])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert result.output.strip() == "error: internal error (RuntimeError: boom); run with --debug for the traceback"


def test_an_errors_log_cut_short_keeps_its_whole_lines(built, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    whole = '{"stage": "extract", "item": "v.mp4", "error": "bad", "kind": "InputError", "time": 1.0}\n'
    (work / "errors.jsonl").write_text(whole + whole[:30], encoding="utf-8")  # killed while writing line 2
    assert [e.item for e in read_errors(work / "errors.jsonl")] == ["v.mp4"]
    assert ingest(built["corpus"], work, jobs=1).ok
    assert (work / "errors.jsonl").read_text(encoding="utf-8") == whole  # ingest's own records cleared, others kept


# Every command, given something a user can fix: (arguments, what the one line says). {w}: an empty work directory,
# {m}: the built model, {work}: the built work directory, {x}: a path that does not exist.
USER_ERRORS = {
    "synth": (["synth", "{x}", "--videos", "0"], "videos must be at least 1, got 0"),
    "ingest": (["ingest", "{x}", "{w}"], "{x}: corpus folder does not exist"),
    "extract": (["extract", "{w}"], "{w}/manifest.parquet: not found; run `videobert ingest ...` first"),
    "vocab": (["vocab", "{w}"], "{w}/features/meta.json: not found; run `videobert extract ...` first"),
    "tokenize": (["tokenize", "{w}"], "{w}/vocab: not found; run `videobert vocab ...` first"),
    "inspect_vocab": (["inspect-vocab", "{w}"], "{w}/vocab: not found; run `videobert vocab ...` first"),
    "pretrain": (["pretrain", "{w}", "--out", "{x}"], "{w}/tokens.parquet: not found; run `videobert tokenize"),
    "evaluate": (["evaluate", "{m}", "{w}"], "{w}/segments.parquet: not found; run `videobert ingest ...` first"),
    "finetune": (["finetune", "{m}", "{work}", "{x}", "--method", "bogus"], "unknown method 'bogus'"),
    "predict": (["predict", "{x}", "{x}.mp4"], "{x}: model directory not found"),
    "demo": (["demo", "--out", "{x}", "--size", "huge"], "unknown demo size 'huge'"),
    "train_encoder": (["train-encoder", "{w}", "--out", "{x}"], "{w}/manifest.parquet: not found; run `videobert ingest"),
    "transcribe": (["transcribe", "{x}", "{w}"], "{x}: corpus folder does not exist"),
    "run": (["run", "{x}", "--out", "{w}"], "{x}: corpus folder does not exist"),
    "export": (["export", "{x}", "--out", "{w}"], "{x}: model directory not found"),
    "onnx_predict": (["onnx-predict", "{x}", "{x}.mp4"], "{x}: no export.json; not an export directory"),
    "index": (["index", "{x}", "{work}", "--out", "{w}"], "{x}: no export.json; not an export directory"),
    "serve": (["serve", "{x}"], "{x}: no index.json; not an index written by `videobert index`"),
    "continual": (["continual", "{m}", "{x}.json", "{w}"], "{x}.json: not a readable JSON file"),
}


def test_every_command_is_covered_by_the_error_contract_test():
    from videobert.cli import COMMANDS

    assert set(USER_ERRORS) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(USER_ERRORS))
def test_every_command_says_what_to_fix_in_one_line(built, tmp_path, command):
    (tmp_path / "w").mkdir()
    names = {"w": tmp_path / "w", "x": tmp_path / "missing", "m": built["model"], "work": built["work"]}
    args, message = USER_ERRORS[command]
    assert_user_error(cli(*(a.format(**names) for a in args)), message.format(**names))
