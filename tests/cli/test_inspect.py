"""`rnnstream inspect` from the command line: what it prints, and what it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rnnstream.cli.main import main
from rnnstream.runtime.contract import ModelContract


def test_inspect_prints_what_the_file_holds(exported, capsys):
    _, out = exported
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
    facts = contract.live_facts()  # the season and calibration, from their typed fields
    assert f"live:\n  season: {facts.season or 'none'}\n  calibration: " in text
    assert ("calibration: levels [" in text) == (facts.calibration is not None)
    assert main(["inspect", str(out), "--json"]) == 0
    assert ModelContract.from_dict(json.loads(capsys.readouterr().out)) == contract


def test_inspect_works_without_torch_and_onnx(exported):
    _, out = exported
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
    assert "x.onnx: not a valid ONNX file" in capsys.readouterr().err


def test_inspect_refuses_damaged_weights(exported, tmp_path, capsys):
    """inspect loads through the runtime's loader, so it checks the weights' fingerprint."""
    import onnx

    _, out = exported
    graph = onnx.load(str(out))
    weight = graph.graph.initializer[0]
    data = bytearray(weight.raw_data)
    data[0] ^= 0x01  # one flipped bit, as on a bad disk or in transit
    weight.raw_data = bytes(data)
    damaged = tmp_path / "damaged.onnx"
    onnx.save(graph, str(damaged))
    capsys.readouterr()
    assert main(["inspect", str(damaged)]) == 1
    assert "do not match the fingerprint in its contract" in capsys.readouterr().err


def test_inspect_into_a_closed_pipe_exits_quietly(exported):
    """`rnnstream inspect M | head -1`: the reader leaving early is not an error."""
    import subprocess
    import sys

    _, out = exported
    cmd = [sys.executable, "-c", "import sys; from rnnstream.cli.main import main; "
           "sys.exit(main(['inspect', sys.argv[1]]))", str(out)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        done = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
