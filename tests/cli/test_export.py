"""`rnnstream export` from the command line."""

from __future__ import annotations

import os
import re

import pytest
from export_helpers import make_model

from rnnstream.cli.main import main
from rnnstream.export import EXPORTERS, build_graph
from rnnstream.runtime.contract import ModelContract
from rnnstream.train.checkpoint import load_checkpoint, save_checkpoint


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
    assert contract.metrics == load_checkpoint(ckpt)[1]["metrics"] == {"val_mae": 0.0123,
                                                                       "val_rmse": 0.0456}
    assert f"{contract.parity['max_abs_diff']:.3g}" in text


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


def test_export_proves_parity_on_a_sample_of_the_series(exported, tmp_path, capsys):
    import numpy as np

    from rnnstream.train.checkpoint import load_checkpoint

    ckpt, _ = exported
    names = load_checkpoint(ckpt)[0].config.feature_names
    rows = 12 + np.random.default_rng(0).normal(0, 2, (80, len(names)))
    sample = tmp_path / "series.csv"
    sample.write_text(",".join(["date", *names]) + "\n" + "\n".join(
        ",".join([f"d{i}", *map(str, row)]) for i, row in enumerate(rows)) + "\n")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx"),
                 "--sample", str(sample)]) == 0
    assert "ok" in capsys.readouterr().out
    short = tmp_path / "short.csv"
    short.write_text(",".join(names) + "\n" + "1," * (len(names) - 1) + "1\n")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m2.onnx"),
                 "--sample", str(short)]) == 1
    assert "sample of shape (1," in capsys.readouterr().err
    assert not (tmp_path / "m2.onnx").exists()


class _Net(__import__("torch").nn.Module):
    """A user's own module, saved whole with torch.save(model)."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.lstm = torch.nn.LSTM(2, 4)


@pytest.mark.parametrize("saved", ["state_dict", "module"])
def test_export_of_a_state_dict_or_a_module_says_what_it_is_in_one_line(tmp_path, capsys, saved):
    import torch

    net = _Net()
    path = tmp_path / f"{saved}.pt"
    torch.save(net.state_dict() if saved == "state_dict" else net, path)
    assert main(["export", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "\x1b" not in err
    assert "Traceback" not in err
    assert 'rnnstream.export.export_module(model, "model.onnx", sample=...)' in err
    if saved == "state_dict":
        assert "a state_dict (4 tensors, e.g. 'lstm.weight_ih_l0')" in err
        assert "load_state_dict" in err
    else:
        assert re.search(r"a whole torch module \(\S*_Net\) saved with torch.save\(model\)", err)
    assert not (tmp_path / f"{saved}.onnx").exists()
