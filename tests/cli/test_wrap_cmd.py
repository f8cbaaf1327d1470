"""`rnnstream wrap` end to end: wrap a torch-exported LSTM, inspect it, stream it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rnnstream.cli.main import main
from rnnstream.runtime import Predictor, StreamPool

FEATURES = ["load", "temp", "hour"]


class TorchLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, 2, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x, h0, c0):
        out, (hn, cn) = self.rnn(x, (h0, c0))
        return self.head(out), hn, cn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(lstm.onnx exported by torch with h0/c0 -> hn/cn, history.csv with a header)."""
    folder = tmp_path_factory.mktemp("wrapcli")
    torch.manual_seed(0)
    src = folder / "lstm.onnx"
    axes = {"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"},
            **{n: {1: "batch"} for n in ("h0", "c0", "hn", "cn")}}
    with warnings.catch_warnings():  # the legacy exporter warns that it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(TorchLSTM().eval(), (torch.randn(2, 4, 3), torch.zeros(2, 2, 8),
                                               torch.zeros(2, 2, 8)), str(src),
                          input_names=["input", "h0", "c0"], output_names=["output", "hn", "cn"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    t = np.arange(300)
    rng = np.random.default_rng(0)
    rows = np.stack([np.sin(t / 9) + 0.05 * rng.standard_normal(300), np.cos(t / 7),
                     (t % 24) / 24], axis=1)
    csv = folder / "history.csv"
    csv.write_text("date,load,temp,hour\n" + "".join(
        f"d{i},{a:.6f},{b:.6f},{c:.6f}\n" for i, (a, b, c) in enumerate(rows)))
    return src, csv, rows


@pytest.fixture(scope="module")
def wrapped(files, tmp_path_factory):
    src, csv, _ = files
    out = tmp_path_factory.mktemp("wrapped") / "model.onnx"
    code = main(["wrap", str(src), "--state", "h0=hn", "--state", "c0=cn", "--features",
                 ",".join(FEATURES), "--targets", "load", "--sample", str(csv), "--out",
                 str(out)])
    assert code == 0
    return out


def test_wrap_prints_pairs_axes_and_proofs(files, tmp_path, capsys):
    src, csv, _ = files
    out = tmp_path / "m.onnx"
    assert main(["wrap", str(src), "--state", "h0=hn:hid", "--state", "c0=cn:cell",
                 "--sample", str(csv), "--targets", "load", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "state hid  'h0' -> 'hn' [2, batch, 8] as hid_in/hid_out [batch, 2, 8]" in text
    assert "found by running the graph" in text
    for proof in ("(a) wrapped graph vs foreign graph, sample inputs: max |diff| ",
                  "(b) stepped one point a call vs one call over the sequence, sample inputs",
                  "(c) rnnstream Predictor on the file vs the foreign graph stepped"):
        assert proof in text
        assert "ok" in text.split(proof)[1].splitlines()[0]
    assert f"wrote {out}.json" in text
    assert Predictor(out).features == FEATURES  # from the sample's numeric columns


def test_inspect_shows_the_custom_contract(wrapped, capsys):
    assert main(["inspect", str(wrapped)]) == 0
    text = capsys.readouterr().out
    assert "custom model" in text
    assert "0 layer(s)" not in text
    assert "h_out -> h_in  [batch, 2, 8]" in text
    assert "features:    load, temp, hour" in text
    assert "stepped vs one call" in text
    assert main(["inspect", str(wrapped), "--code", "python"]) == 0
    assert "layers=0" not in capsys.readouterr().out


def test_stream_with_coverage_from_a_csv_with_a_header(files, wrapped, tmp_path, capsys):
    _, csv, rows = files
    assert main(["stream", str(wrapped), "--input", str(csv), "--coverage", "0.9"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == len(rows)
    y, lower, upper = (np.array(v) for v in zip(*(map(float, ln.split(",")) for ln in lines),
                                                strict=True))
    assert np.all(np.isfinite(lower[:1]))
    assert np.all(lower < y)
    assert np.all(y < upper)
    p = Predictor(wrapped)
    np.testing.assert_allclose(y, [p.step(r.astype(np.float32)) for r in rows], rtol=1e-6)


def test_stream_json_lines_with_a_key(files, wrapped, tmp_path, capsys):
    rows = files[2][:6]
    lines = [json.dumps({"k": "ab"[i % 2], **dict(zip(FEATURES, map(float, r), strict=True))})
             for i, r in enumerate(rows)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert main(["stream", str(wrapped), "--input", str(src), "--key", "k"]) == 0
    out = capsys.readouterr().out.split()
    pool = StreamPool(wrapped, auto_add=True)
    want = [f"{'ab'[i % 2]},{format(float(pool.step({'ab'[i % 2]: r})['ab'[i % 2]]), '.9g')}"
            for i, r in enumerate(rows.astype(np.float32))]
    assert [ln.split(",")[0] for ln in out] == [w.split(",")[0] for w in want]
    np.testing.assert_allclose([float(ln.split(",")[1]) for ln in out],
                               [float(w.split(",")[1]) for w in want], rtol=1e-6)


def test_a_wrong_map_is_one_clean_line(files, tmp_path, capsys):
    src = files[0]
    out = tmp_path / "m.onnx"
    assert main(["wrap", str(src), "--state", "h0=cn", "--state", "c0=hn",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: wrap refused")
    assert "h0->cn as h, c0->hn as c" in err
    assert "check --state" in err
    assert not out.exists()
    assert main(["wrap", str(src), "--state", "h0", "--out", str(out)]) == 1
    assert "expected IN=OUT" in capsys.readouterr().err


def test_help_teaches_with_a_torch_lstm(capsys):
    with pytest.raises(SystemExit):
        main(["wrap", "--help"])
    text = capsys.readouterr().out
    assert "--state h0=hn --state c0=cn" in text
    assert "cannot be checked this way" in text
