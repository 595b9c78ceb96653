"""One error path for the whole CLI (issue 11): user errors, click's own included, print one line
``error: ...`` and exit 2; an internal error exits 1 with a short line; control characters
never reach the terminal raw."""
import pytest
from click.testing import CliRunner

from srp_np.cli.main import _one_line, cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.mark.parametrize("args", [["run", "--tau", "abc"], ["run", "--threads", "0"], ["run", "--no-such-option"],
                                  ["sweep", "--T", "1.5"], ["no-such-command"], ["run", "--json"],
                                  ["explain", "neuron", "--T", "x"]])
def test_usage_errors_are_one_line(args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ") and "Usage:" not in out, out


def test_help_and_version_still_exit_0():
    assert run("--help").exit_code == 0
    assert run("run", "--help").exit_code == 0
    assert run("--version").exit_code == 0


def test_internal_error_is_one_line_exit_1(model_files, monkeypatch):
    import srp_np.evaluate

    def boom(*a, **k):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(srp_np.evaluate, "evaluate", boom)
    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1)
    assert r.exit_code == 1, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("internal error: ZeroDivisionError") and "report" in out


def test_control_characters_are_escaped():
    assert _one_line("op 'a\nb\x1b[31m'") == "op 'a b\\x1b[31m'"
