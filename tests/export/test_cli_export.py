"""`rnnstream export` and `rnnstream inspect` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from export_helpers import make_model

from rnnstream.cli.main import main
from rnnstream.export import EXPORTERS, build_graph
from rnnstream.runtime.contract import ModelContract
from rnnstream.train.checkpoint import save_checkpoint

METRICS = {"val_mae": 0.0123, "val_rmse": 0.0456}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    ckpt = save_checkpoint(folder / "model.pt", make_model("gru", layers=2, ft=3), metrics=METRICS)
    return ckpt, folder / "model.onnx"


def test_export_prints_parity_line_and_paths(exported, capsys):
    ckpt, out = exported
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parity onnxruntime vs torch float64: max |diff| = " in text
    assert "torch float32 " in text
    assert "% of the bound)" in text
    assert "ok" in text
    assert str(out) in text
    assert f"{out}.json" in text
    contract = ModelContract.from_json(out.with_suffix(".onnx.json").read_text())
    assert contract.metrics == METRICS
    assert f"{contract.parity['max_abs_diff']:.3g}" in text


def test_inspect_prints_what_the_file_holds(exported, capsys):
    ckpt, out = exported
    if not out.exists():
        assert main(["export", str(ckpt), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    contract = ModelContract.from_json(out.with_suffix(".onnx.json").read_text())
    for expected in ("gru forecaster, 2 layer(s) x 16 hidden", "x        [batch, time, 3]",
                     "h_out    [batch, 2, 16]", "h_out -> h_in", "features:    f0, f1, f2",
                     "target mode: level", "val_mae: 0.0123", contract.fingerprint,
                     f"max |diff| {contract.parity['max_abs_diff']:.6g}", "stream1000_batch3",
                     "torch float32 ", "of the bound", "(torch ", ", bound ",
                     f"onnxruntime: {contract.versions['onnxruntime']}", "sidecar:     matches",
                     "step graph:  model.step.onnx",
                     "step graph vs torch: max |diff| "
                     f"{contract.parity['step_graph']['vs_torch']['max_abs_diff']:.6g}"):
        assert expected in text, expected
    assert main(["inspect", str(out), "--json"]) == 0
    assert ModelContract.from_dict(json.loads(capsys.readouterr().out)) == contract


def test_inspect_works_without_torch_and_onnx(exported):
    ckpt, out = exported
    if not out.exists():
        assert main(["export", str(ckpt), "--out", str(out)]) == 0
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from rnnstream.cli.main import main\n"
            f"sys.exit(main(['inspect', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "gru forecaster" in done.stdout


def test_inspect_refuses_a_non_model(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["inspect", str(bad)]) == 1
    assert "onnxruntime cannot load it" in capsys.readouterr().err


def test_export_parity_failure_exits_1_listing_every_output(tmp_path, monkeypatch, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", make_model("lstm", layers=1, ft=1))

    def wrong(model, opset):
        graph = build_graph(model, opset)
        for init in graph.graph.initializer:
            if init.name == "head_b":
                init.float_data[:] = []
                init.raw_data = (b"\x00\x00\x80\x3f")  # bias 1.0 instead of the real one
        return graph

    monkeypatch.setitem(EXPORTERS, "native", wrong)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "parity check failed" in err
    for case in ("batch1_time1", "batch7_time50", "stream1000_batch3"):
        assert f"{case}: y max |diff|" in err
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_export_quantize_refusal_exits_1(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", make_model("rnn"))
    assert main(["export", str(ckpt), "--quantize"]) == 1
    assert "cannot quantise a 'rnn' model" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_export_missing_checkpoint_exits_1(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.pt")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_help_has_examples(capsys):
    for command in ("export", "inspect"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out
