"""The ``videobert`` command. Every subcommand is generated from the Python API function of the same name
(its signature gives the arguments and defaults, its docstring's ``Args:`` section the help), so the CLI and
the API cannot drift apart."""
from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import re
import sys
from typing import Any, Callable, Iterator

import typer

from videobert._version import __version__

# name -> "module:function". A stage is added here and nowhere else.
COMMANDS: dict[str, str] = {
    "synth": "videobert.data.synth:synth",
    "ingest": "videobert.data.ingest:ingest",
    "train_encoder": "videobert.training.encoder:train_encoder",
    "transcribe": "videobert.speech.transcribe:transcribe",
    "extract": "videobert.features.extract:extract",
    "vocab": "videobert.tokenizer.stages:vocab",
    "tokenize": "videobert.tokenizer.stages:tokenize",
    "inspect_vocab": "videobert.tokenizer.stages:inspect_vocab",
    "pretrain": "videobert.training.pretrain:pretrain",
    "evaluate": "videobert.tasks.evaluate:evaluate",
    "finetune": "videobert.tasks.finetune:finetune",
    "continual": "videobert.tasks.continual:continual",
    "predict": "videobert.tasks.predict:predict",
    "export": "videobert.serving.export:export",
    "onnx_predict": "videobert.serving.onnx_predict:onnx_predict",
    "index": "videobert.serving.index:index",
    "serve": "videobert.serving.app:serve",
    "run": "videobert.pipeline:run",
    "demo": "videobert.pipeline:demo",
}

def _docstring_args(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and an ``{arg: help}`` map."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"^Args:\s*$", doc, maxsplit=1, flags=re.M)
    # Join wrapped lines inside a paragraph; blank lines still separate paragraphs in --help.
    summary = re.sub(r"(?<!\n)\n(?!\n)", " ", parts[0].strip())
    helps: dict[str, str] = {}
    if len(parts) == 2:
        body = re.split(r"^(Returns|Raises|Yields|Example[s]?):\s*$", parts[1], maxsplit=1, flags=re.M)[0]
        current = None
        for line in body.splitlines():
            m = re.match(r"^\s{0,8}(\w+)(\s*\([^)]*\))?:\s*(.*)$", line)
            if m:
                current = m.group(1)
                helps[current] = m.group(3).strip()
            elif current and line.strip():
                helps[current] += " " + line.strip()
    return summary, helps


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"videobert {report.stage}", show_header=False)
    for k, v in report.rows():
        table.add_row(k, v)
    Console(stderr=False).print(table)


# Set by the root's --debug: errors show their traceback instead of one line.
_debug = False


@contextlib.contextmanager
def _error_contract() -> Iterator[None]:
    """Exit statuses every command shares: 2 with one line for a problem the user can fix (a bad input file, an
    option, a directory in use, a full disk: the message names the file), 3 with one line for anything else (a
    bug: --debug shows the traceback), 130 on Ctrl-C. Per-item failures (status 1) are the stage report's."""
    from videobert.utils.errors import VideoBertError

    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if _debug:
            raise
        if isinstance(exc, VideoBertError):
            message, code = str(exc), 2
        elif isinstance(exc, OSError) and exc.filename is not None:
            message, code = f"{exc.filename}: {exc.strerror or exc}", 2
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            message, code = f"{exc.strerror}; free some space and run the command again (it resumes)", 2
        else:
            message, code = f"internal error ({type(exc).__name__}: {exc}); run with --debug for the traceback", 3
        typer.secho(f"error: {message}", fg="red", err=True)
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        if _debug:
            raise
        typer.secho("interrupted; run the command again to resume", fg="yellow", err=True)
        raise typer.Exit(130) from None


def command_from_function(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Wrap an API function as a typer command: required positional parameters become arguments, every
    other parameter an option (a keyword-only one without default a required option, e.g. ``--out``);
    help comes from the docstring. Errors a user can fix print one line and exit 2."""
    summary, helps = _docstring_args(fn.__doc__ or "")
    sig = inspect.signature(fn, eval_str=True)
    params = []
    for p in sig.parameters.values():
        help_text = helps.get(p.name, "")
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.KEYWORD_ONLY:
            default = typer.Argument(..., help=help_text, show_default=False)
        elif p.default is inspect.Parameter.empty:
            default = typer.Option(..., help=help_text, show_default=False)
        else:
            default = typer.Option(p.default, help=help_text)
        params.append(p.replace(default=default, kind=inspect.Parameter.POSITIONAL_OR_KEYWORD))

    def run(**kwargs: Any) -> None:
        with _error_contract():
            result = fn(**kwargs)
        if result is not None and hasattr(result, "rows"):
            _print_report(result)
            if not result.ok:
                typer.secho(f"{result.failed} item(s) failed; see errors.jsonl", fg="yellow", err=True)
                raise typer.Exit(1)

    run.__signature__ = sig.replace(parameters=params, return_annotation=None)
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__doc__ = summary
    run.__name__ = name
    return run


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videobert {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error instead of one line."),
) -> None:
    """VideoBERT-style video-language learning."""
    global _debug
    _debug = debug


def _load(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def build_app(names: list[str] | None = None) -> typer.Typer:
    """The command group with the commands ``names`` (all when None). Registering a command imports its
    stage module (torch, transformers, ...), so `main` registers only the one being run."""
    group = typer.Typer(
        name="videobert",
        help="VideoBERT-style video-language learning: synth -> (transcribe) -> ingest -> extract -> vocab -> tokenize -> pretrain -> evaluate.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    group.callback()(_root)
    for name in COMMANDS if names is None else names:
        group.command(name=name.replace("_", "-"))(command_from_function(_load(COMMANDS[name]), name))
    return group


def __getattr__(name: str) -> Any:
    # `videobert.cli.app`, the full group (tests, embedding), is built on first use, not at import.
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    args = sys.argv[1:]
    first = next((a for a in args if not a.startswith("-")), None)
    wanted = first.replace("-", "_") if first else None
    if wanted in COMMANDS:
        build_app([wanted])(prog_name="videobert")
    elif first is None and "--version" in args:
        typer.echo(f"videobert {__version__}")
    else:  # `videobert`, `videobert --help`, or an unknown command: the full list (and click's own error)
        build_app()(prog_name="videobert")


if __name__ == "__main__":
    main()
