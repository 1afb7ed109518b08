"""The CLI mirrors the API: every registered command has help text for every argument, and --version works."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import videobert
from videobert.cli import COMMANDS, _docstring_args, app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"videobert {videobert.__version__}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_for_every_argument(name):
    fn = getattr(videobert, name)
    summary, helps = _docstring_args(fn.__doc__)
    assert summary, f"{name} has no docstring summary"
    missing = [p for p in inspect.signature(fn).parameters if p not in helps]
    assert not missing, f"{name}: undocumented arguments {missing}"
    result = runner.invoke(app, [name.replace("_", "-"), "--help"])
    assert result.exit_code == 0, result.output


def test_docstring_parser():
    def f(a, b=1):
        """Do a thing.

        Args:
            a: first
               continued.
            b (int): second.

        Returns:
            nothing
        """

    summary, helps = _docstring_args(f.__doc__)
    assert summary == "Do a thing."
    assert helps == {"a": "first continued.", "b": "second."}


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        videobert.does_not_exist


def test_running_one_command_imports_only_its_stage():
    """`videobert synth ...` must not pay for torch and transformers (a 9 s import) it does not use."""
    code = (
        "import sys; from videobert import cli; sys.argv = ['videobert', 'synth', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED False False" in out
    version = subprocess.run([sys.executable, "-m", "videobert.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"videobert {videobert.__version__}"
