"""Output paths are checked before any work: no input file is ever overwritten, no output is
lost to another, no device, FIFO, symbolic link or folder is replaced (issue 11, item 2), and
plots are written atomically (item 9)."""
import hashlib
import os

import pytest
from click.testing import CliRunner

from srp_np.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def assert_refused(result, fragment):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("error: ") and fragment in out, out


@pytest.mark.parametrize("cmd", [["run"], ["report"], ["analyze", "--tau", "1"], ["sweep", "--tau", "0"]])
@pytest.mark.parametrize("target,option", [("model.npz", "--json"), ("data.npz", "--json"),
                                           ("model.npz", "--save-outputs"), ("data.npz", "--plot")])
def test_an_output_that_is_an_input_is_refused(model_files, cmd, target, option):
    if option == "--save-outputs" and cmd[0] != "run" or option == "--plot" and cmd[0] not in ("analyze", "sweep"):
        pytest.skip("option not on this command")
    d = model_files
    before = {f: digest(d / f) for f in ("model.npz", "data.npz")}
    r = run(*cmd, "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--limit", 2, option, d / target)
    assert_refused(r, "input file")
    assert {f: digest(d / f) for f in before} == before


def test_same_file_through_another_name_is_refused(model_files, tmp_path):
    d = model_files
    link = tmp_path / "alias.npz"
    os.link(d / "data.npz", link)          # a hard link: another name, the same file
    before = digest(d / "data.npz")
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--json", link)
    assert_refused(r, "input file")
    assert digest(d / "data.npz") == before


def test_two_outputs_on_one_file_are_refused(model_files, tmp_path):
    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--json", tmp_path / "x",
            "--save-outputs", tmp_path / "x")
    assert_refused(r, "same file")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dir", "device"])
def test_special_files_are_never_replaced(model_files, tmp_path, kind):
    d = model_files
    p = tmp_path / "out.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        (tmp_path / "real.json").write_text("keep")
        os.symlink(tmp_path / "real.json", p)
    elif kind == "dir":
        p.mkdir()
    else:
        p = "/dev/null"
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--json", p)
    assert r.exit_code == 2 and r.output.startswith("error: "), r.output
    if kind == "fifo":
        assert os.path.exists(p) and not os.path.isfile(p)
    elif kind == "symlink":
        assert os.path.islink(p) and (tmp_path / "real.json").read_text() == "keep"
    elif kind == "device":
        assert not os.path.isfile("/dev/null")


def test_plot_is_written_atomically(tmp_path, monkeypatch):
    """A plot write that fails half-way leaves the earlier picture untouched and no temporary file."""
    pytest.importorskip("matplotlib")
    from srp_np import plots
    from srp_np.errors import SrpError

    out = tmp_path / "fig.png"
    out.write_bytes(b"old picture")
    import matplotlib.figure

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    plt = plots._plt()
    fig = plt.figure()
    with pytest.raises(SrpError):
        plots._save(fig, out)
    assert out.read_bytes() == b"old picture"
    assert sorted(os.listdir(tmp_path)) == ["fig.png"]
