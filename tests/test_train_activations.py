"""Source activations other than QCFS (issue 14, Fig. 7): TCL, OPI-style ReLU; training, export, simulation."""
import numpy as np
import pytest

from test_train import write_fmnist_dir

torch = pytest.importorskip("torch")


def test_tcl_forward_and_gradient():
    from srp_np.train.activations import TCL

    act = TCL()
    with torch.no_grad():
        act.up.fill_(1.5)
    y = torch.linspace(-2, 4, 61, dtype=torch.float64, requires_grad=True)
    out = act(y)
    yy = y.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), np.clip(yy, 0, 1.5), atol=1e-12)
    out.sum().backward()
    g = y.grad.numpy()
    assert np.all(g[(yy > 0) & (yy < 1.5)] == 1) and np.all(g[(yy < 0) | (yy > 1.5)] == 0)
    # d/dλ Σ min(ReLU(y), λ) = number of inputs above λ
    assert float(act.up.grad) == np.count_nonzero(yy > 1.5)


def test_relu_source_calibration_is_the_percentile_of_positive_activations():
    from srp_np.train.activations import ReLUSource, calibrate_thresholds

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), ReLUSource(), torch.nn.Linear(7, 3), ReLUSource())
    x = torch.randn(300, 5)
    ths = calibrate_thresholds(net, x, percentile=99.0, batch_size=64)
    with torch.no_grad():
        h1 = torch.relu(net[0](x))
        h2 = torch.relu(net[2](h1))
    for th, h in zip(ths, (h1, h2)):
        v = h[h > 0].numpy()
        assert th == pytest.approx(float(np.percentile(v, 99.0)), rel=1e-6)
    assert [float(net[1].up), float(net[3].up)] == pytest.approx(ths)
    assert not net[1].up.requires_grad
    # ReLU source: the forward pass is the plain ReLU whatever the threshold
    np.testing.assert_array_equal(net[1](torch.tensor([-1.0, 0.5, 1e6])).numpy(), [0.0, 0.5, 1e6])


@pytest.mark.parametrize("activation", ["tcl", "relu"])
def test_training_and_export_of_other_sources(tmp_path, activation):
    from click.testing import CliRunner

    from srp_np.cli.train_cmds import export_cmd, train_cmd
    from srp_np.model import load_model
    from srp_np.simulator import Simulator
    from srp_np.train.activations import SOURCE_L, ReLUSource, TCL
    from srp_np.train.export import load_state_dict_into
    from srp_np.train.models import build_model

    data = write_fmnist_dir(tmp_path / "fm", n_train=64, n_test=16)
    out, ck = tmp_path / "m.npz", tmp_path / "ck.pth"
    r = CliRunner().invoke(train_cmd, [
        "--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir", data, "--activation", activation,
        "--epochs", "1", "--batch-size", "16", "--width", "0.25", "--threads", "1", "--limit-batches", "2",
        "--out", str(out), "--checkpoint", str(ck), "--no-progress"])
    assert r.exit_code == 0, r.output
    m = load_model(out)
    assert m.graph["source_activation"] == activation and m.L == SOURCE_L
    ckd = torch.load(ck, weights_only=True)
    model = build_model("resnet20", 1, 10, SOURCE_L, 0.25, 28, activation=activation)
    load_state_dict_into(model, "resnet20", ckd["model"])
    kind = TCL if activation == "tcl" else ReLUSource
    acts = [mod for _, mod in model.named_modules() if isinstance(mod, kind)]
    assert len(acts) == len(m.qcfs_nodes) == 19
    # every IF threshold is the source's λ (TCL: trained clip; ReLU: calibrated percentile)
    np.testing.assert_allclose([q["threshold"] for q in m.qcfs_nodes], [a.threshold for a in acts], rtol=1e-6)
    if activation == "relu":
        assert ckd["config"]["calibrated"] is True
        assert "99.9th percentile" in r.output
    # the export path reads the checkpoint of either source and writes the same file
    r = CliRunner().invoke(export_cmd, ["--checkpoint", str(ck), "--arch", "resnet20", "--out", str(tmp_path / "e.npz")])
    assert r.exit_code == 0, r.output
    m2 = load_model(tmp_path / "e.npz")
    assert m2.graph["source_activation"] == activation
    for k, a in m.arrays.items():
        np.testing.assert_array_equal(a, m2.arrays[k])
    # and SRP runs on it
    x = np.random.default_rng(0).random((2,) + tuple(m.input_shape))
    res = Simulator(m, np.float32).run(m.preprocess(x), 2, 3)
    assert res.outputs.shape == (3, 2, 10)


def test_uncalibrated_relu_checkpoint_is_refused(tmp_path):
    from srp_np.errors import SrpError
    from srp_np.train.export import export_checkpoint
    from srp_np.train.train import train

    data = write_fmnist_dir(tmp_path / "fm", n_train=32, n_test=16)
    ck = str(tmp_path / "ck.pth")
    assert train(arch="resnet20", dataset="fashion-mnist", out=str(tmp_path / "m.npz"), data_dir=data, epochs=2,
                 batch_size=16, width=0.25, threads=1, limit_batches=1, progress=False, log=lambda s: None,
                 checkpoint=ck, activation="relu", _stop_after=1) is None
    with pytest.raises(SrpError, match="before its thresholds were calibrated"):
        export_checkpoint(ck, "resnet20", str(tmp_path / "e.npz"))
