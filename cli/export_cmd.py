"""``rnnstream export``: checkpoint -> ONNX model + sidecar, refused unless parity holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import fail, require_train_extra

DESCRIPTION = """\
Export a training checkpoint to one self-contained ONNX file with explicit state
(x, h_in[, c_in][, last_in] -> y, h_out[, c_out][, last_out]) and the rnnstream contract
embedded in its metadata and written beside it as MODEL.onnx.json.

Before anything is written the graph is checked (onnx checker, strict shape inference,
native recurrent op) and run through onnxruntime on windows of the training inputs the
checkpoint keeps (or of --sample, or random inputs at the model's scale): batch 1 and 7, time
1 and 50, a random non-zero initial state, and a 1,000-step stream fed one step at a time.
The reference is the same torch model run in float64; every output (final states included)
of onnxruntime must be within 8x float32's own error on the same case (torch float32, also on
copies of the inputs moved by up to 2 rounding steps, which shows how much the case amplifies
rounding), plus 8 float32 rounding steps at the output's scale. --atol A instead holds
onnxruntime to |onnxruntime - torch float32| <= A. If a check fails, nothing is written, every
failing output is listed with its figures, and the exit status is 1.

Float exports also get MODEL.step.onnx: the same model for one time step, built from
plain ops (faster for streaming), proven equal to MODEL.onnx and to torch, and named with its
SHA-256 in the contract. --no-step-graph skips it; quantized exports never have one.
"""

EPILOG = """\
examples:
  rnnstream export runs/sine/model.pt --out runs/sine/model.onnx
  rnnstream export runs/sine/model.pt                  # writes runs/sine/model.onnx
  rnnstream export runs/x/model.pt --quantize          # int8 (lstm only), own parity figure
  rnnstream export runs/x/model.pt --sample prices.csv # prove parity on this series
  rnnstream export runs/x/model.pt --opset 18 --atol 1e-6

exit status: 0 written; 1 refused (parity, quantisation, invalid graph, bad checkpoint);
2 usage error or missing 'train' extra.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, proven equal to torch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint written by rnnstream train")
    p.add_argument("--out", metavar="MODEL.onnx",
                   help="where to write the model (default: CHECKPOINT with suffix .onnx)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--quantize", action="store_true",
                   help="dynamic int8 weights (lstm only; other cells are refused)")
    p.add_argument("--atol", type=float, default=None, metavar="A",
                   help="hold onnxruntime to max |torch float32 - onnxruntime| <= A per output "
                        "instead of the default bound derived from a float64 run")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity inputs (default 0)")
    p.add_argument("--sample", metavar="SERIES.csv",
                   help="prove parity on windows of this CSV (the model's feature columns, by "
                        "name) instead of the latest training inputs the checkpoint keeps "
                        "(checkpoints written before 0.2 keep none: random inputs at the "
                        "model's scale are used)")
    p.add_argument("--no-step-graph", action="store_true",
                   help="do not write MODEL.step.onnx (the runtime then uses MODEL.onnx for "
                        "every call)")
    p.add_argument("--exporter", default="native", metavar="NAME",
                   help="graph builder: native (default) or torchscript (torch's legacy "
                        "exporter, kept as a cross-check)")


def run(args: argparse.Namespace) -> int:
    require_train_extra("export")
    from rnnstream.export import ExportError, export_checkpoint
    from rnnstream.train import DataError, load_checkpoint, load_csv
    from rnnstream.train.errors import CheckpointError

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    try:
        sample = None
        if args.sample:
            features = load_checkpoint(args.checkpoint)[0].config.feature_names
            sample = load_csv(args.sample, features).features
        report = export_checkpoint(
            args.checkpoint, out, opset=args.opset, quantize=args.quantize,
            exporter=args.exporter, atol=args.atol, seed=args.seed,
            step_graph=not args.no_step_graph, sample=sample,
        )
    except CheckpointError as exc:
        return fail(not_a_checkpoint(args.checkpoint) or one_line(str(exc)))
    except (ExportError, DataError) as exc:
        return fail(str(exc))
    print(report.summary())
    print(f"wrote {report.path} ({report.path.stat().st_size:,} bytes, "
          f"fingerprint {report.contract.fingerprint[:19]}...)")
    if report.step_path is not None:
        print(f"wrote {report.step_path}")
    print(f"wrote {report.sidecar}")
    print(f"took {report.seconds:.2f} s; see it with: rnnstream inspect {report.path}")
    return 0


EXPORT_MODULE_HINT = ('from Python: rnnstream.export.export_module(model, "model.onnx", '
                      "sample=...)")


def not_a_checkpoint(path: str) -> str | None:
    """What a torch file that is not an rnnstream checkpoint holds, and how to export it; None
    when it is neither a state_dict nor a pickled module.

    Nothing is unpickled beyond what the checkpoint loader itself does (``weights_only=True``):
    a pickled module is recognised by the class names its pickle refers to, read by torch
    without running it (``get_unsafe_globals_in_checkpoint``).
    """
    import pickle
    import zipfile

    import torch

    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile,
            pickle.UnpicklingError):
        return None
    modules = [g for g in found if g.startswith("torch.nn.modules.")]
    if modules:
        own = [g for g in found if not g.startswith("torch.")]
        what = own[0] if own else modules[0]
        return (f"{path}: a whole torch module ({what}) saved with torch.save(model), not an "
                "rnnstream checkpoint; rnnstream will not unpickle it (that runs code from the "
                f"file). Load the module yourself and export it {EXPORT_MODULE_HINT}")
    if found:
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile,
            pickle.UnpicklingError):
        return None
    if (isinstance(payload, dict) and payload
            and all(isinstance(v, torch.Tensor) for v in payload.values())):
        first = next(iter(payload))
        return (f"{path}: a state_dict ({len(payload)} tensors, e.g. {first!r}), not an "
                "rnnstream checkpoint; it holds weights but not the module that uses them. "
                "Build the module, call model.load_state_dict(torch.load(FILE, "
                f"weights_only=True)), then export it {EXPORT_MODULE_HINT}")
    return None


def one_line(message: str) -> str:
    """``message`` without terminal escape codes, on one line (torch's messages carry both)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", message)
    return " ".join(text.split())
