"""``rnnstream inspect``: show what an exported model holds, for a person or as JSON.

Works on a base install (onnxruntime + the stdlib-only contract): no torch, no onnx, and no
import of :mod:`rnnstream.export`.

Output formats are entries in :data:`RENDERERS` (``name -> render(Inspection) -> str``); the
``--json`` flag picks ``"json"``, ``--code js|python|web`` a ready-to-paste streaming loop for this
model (its real names and shapes, from :mod:`rnnstream.cli.codegen`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rnnstream.runtime import spec
from rnnstream.runtime.contract import METADATA_KEY, ModelContract, sidecar_path
from rnnstream.runtime.errors import ContractError, ModelLoadError

from ._common import fail
from .codegen import LANGS, generate

DESCRIPTION = """\
Print the contract of an rnnstream ONNX model: graph inputs and outputs with shapes, the
state pairs to carry between calls, features, targets, horizon, target mode, normalisation,
training metrics, the parity figures measured at export, tool versions and the fingerprint.
"""

EPILOG = """\
examples:
  rnnstream inspect runs/sine/model.onnx
  rnnstream inspect runs/sine/model.onnx --json | jq .parity
  rnnstream inspect runs/sine/model.onnx --code js > stream.js      # Node.js loop
  rnnstream inspect runs/sine/model.onnx --code python > loop.py    # plain onnxruntime loop
  rnnstream inspect runs/sine/model.onnx --code web > index.html    # browser page (onnxruntime-web)
"""


@dataclass
class Inspection:
    """What was read from one model file."""

    path: Path
    contract: ModelContract
    inputs: list[tuple[str, list]] = field(default_factory=list)  # graph (name, shape)
    outputs: list[tuple[str, list]] = field(default_factory=list)
    sidecar: str = "absent"  # "absent" | "matches" | "differs"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show the contract of an exported model",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL.onnx", help="model written by rnnstream export")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the contract as JSON")
    out.add_argument("--code", choices=sorted(LANGS), metavar="{" + ",".join(sorted(LANGS)) + "}",
                     help="print a ready-to-paste streaming loop for this model in that language "
                     "(python: onnxruntime and numpy only; js: onnxruntime-node and rnnstream's "
                     "JavaScript core, examples/core/rnnstream-core.mjs, copied beside it; web: "
                     "onnxruntime-web)")


def run(args: argparse.Namespace) -> int:
    try:
        found = read_model(Path(args.model))
    except ModelLoadError as exc:
        return fail(str(exc))
    print(RENDERERS[_renderer_name(args)](found))
    if found.sidecar == "differs":
        return fail(f"{sidecar_path(args.model)} differs from the metadata embedded in "
                    f"{args.model}; re-export the model, or delete the stale sidecar")
    return 0


def _renderer_name(args: argparse.Namespace) -> str:
    if getattr(args, "code", None):
        return f"code:{args.code}"
    return "json" if args.json else "text"


# -- reading --------------------------------------------------------------------------------
def read_model(path: Path) -> Inspection:
    """Contract and graph I/O of ``path``, loaded by the runtime's own loader (so a damaged
    file -- weights that fail the contract's fingerprint included -- is refused here as
    everywhere); ModelLoadError/ContractError."""
    from rnnstream.runtime.session import contract_missing, load_model, wrap_hint

    try:
        model = load_model(path)
    except ContractError as exc:
        if not contract_missing(path):
            raise
        raise ContractError(_no_contract(path, wrap_hint(str(path)))) from exc
    if model.contract is None:
        pairs = ", ".join(f"{s.input}->{s.output}" for s in model.io.states)
        raise ContractError(_no_contract(path, wrap_hint(str(path)), pairs))
    session = model.session
    found = Inspection(path, model.contract)
    found.inputs = [(i.name, list(i.shape)) for i in session.get_inputs()]
    found.outputs = [(o.name, list(o.shape)) for o in session.get_outputs()]
    found.sidecar = _sidecar_state(path, found.contract)
    return found


def _no_contract(path: Path, hint: str, pairs: str = "") -> str:
    found = (f" (the runtime can still stream it as a foreign model, state pairs {pairs})"
             if pairs else "")
    return (f"{path}: no rnnstream contract (no {METADATA_KEY!r} metadata): not exported by "
            f"rnnstream{found}. {hint}")


def _sidecar_state(path: Path, contract: ModelContract) -> str:
    side = Path(sidecar_path(str(path)))
    if not side.is_file():
        return "absent"
    try:
        other = ModelContract.from_json(side.read_bytes(), source=str(side))
    except ContractError:
        return "differs"
    return "matches" if other == contract else "differs"


# -- rendering ------------------------------------------------------------------------------
def render_json(found: Inspection) -> str:
    return found.contract.to_json()


def render_text(found: Inspection) -> str:
    c = found.contract
    sections = [
        _header(found),
        _io_lines(found),
        _state_lines(c),
        _data_lines(c),
        _mapping_lines("normalisation", c.normalization),
        _mapping_lines("metrics", c.metrics),
        _live_lines(c),
        _parity_lines(c.parity),
        _step_lines(c),
        _mapping_lines("versions", c.versions),
        [f"fingerprint: {c.fingerprint or '(none)'}", f"sidecar:     {found.sidecar}"],
    ]
    return "\n".join(line for section in sections for line in section)


def _header(found: Inspection) -> list[str]:
    c = found.contract
    if c.is_custom:  # states declared one by one; layers/hidden may be unknown (0)
        found_at = c.parity.get("source")
        source = found_at.get("file") if isinstance(found_at, dict) else None
        how = f", wrapped from {source}" if source and c.parity.get("exporter") == "wrap" else ""
        step = ", one time step per call" if c.step_only else ""
        return [f"{found.path}: rnnstream custom model, {len(c.states)} declared state(s)"
                f"{step}{how} (schema {c.schema_version})"]
    kind = ", int8-quantised" if c.quantized else ""
    return [f"{found.path}: rnnstream {c.cell} forecaster, {c.layers} layer(s) x {c.hidden} "
            f"hidden{kind} (schema {c.schema_version})"]


def _live_lines(c: ModelContract) -> list[str]:
    """The facts the live scores start from: the trained season and the validation widths
    (the calibration document as stored: levels, half-widths per target, where they came from)."""
    try:
        facts = c.live_facts()
    except ContractError as exc:  # an older file's malformed metrics["calibration"]
        return ["live:", f"  calibration: unreadable ({exc})"]
    return _mapping_lines("live", {
        "season": facts.season or "none",
        "calibration": ("none (intervals are infinite until a stream has scored a few "
                        "residuals; live_options initial_quantiles sets a start)"
                        if facts.calibration is None else facts.calibration.to_json())})


def _io_lines(found: Inspection) -> list[str]:
    lines = ["inputs:"]
    lines += [f"  {name:<8} {_shape(shape)} float32" for name, shape in found.inputs]
    lines.append("outputs:")
    lines += [f"  {name:<8} {_shape(shape)} float32" for name, shape in found.outputs]
    return lines


def _shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _state_lines(c: ModelContract) -> list[str]:
    lines = ["state (feed each output back as its input on the next call; start from zeros):"]
    for s in c.states:
        lines.append(f"  {s.output} -> {s.input}  {_shape(list(s.shape))} {s.dtype}, "
                     f"batch axis {s.batch_axis}, initial {s.initial}")
    return lines


def _data_lines(c: ModelContract) -> list[str]:
    return [
        f"features:    {', '.join(c.features)}",
        f"targets:     {', '.join(c.targets)}",
        f"horizon:     {c.horizon} step(s) ahead",
        f"target mode: {c.target_mode}{_mode_note(spec.TARGET_MODE_SPECS.get(c.target_mode))}",
        f"input mode:  {c.input_mode}{_mode_note(spec.INPUT_MODE_SPECS.get(c.input_mode))}",
    ]


def _mode_note(mode: spec.ModeSpec | None) -> str:
    """What a mode's state carries, from the spec: `` (fed changes: the last point and a seen
    flag, in the 'last' state)``; empty for a mode without a state."""
    if mode is None or mode.state is None:
        return ""
    return f" ({mode.summary}: {mode.meaning}, in the {mode.state!r} state)"


def _mapping_lines(title: str, mapping: dict) -> list[str]:
    if not mapping:
        return [f"{title}: (none)"]
    return [f"{title}:"] + [f"  {k}: {_value(v)}" for k, v in mapping.items()]


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return str(v)


def _criterion(report: dict) -> str:
    """How a parity report was judged: the derived bound's figures, or its atol (old files)."""
    if isinstance(report.get("rule"), str):  # a fixed rule in words (wrap: a few float32 ulps)
        return f"bound {report['rule']}, {_value(report.get('bound_used'))} of the bound"
    if report.get("criterion") == "derived" or "baseline_error" in report:
        text = f"{report.get('baseline', 'baseline')} {_value(report.get('max_baseline_error'))}"
        return f"{text}, {_value(report.get('bound_used'))} of the bound"
    return f"atol {_value(report.get('atol'))}"


def _parity_lines(parity: dict) -> list[str]:
    if not parity:
        return ["parity: (none recorded)"]
    lines = [f"parity ({parity.get('candidate')} vs {parity.get('reference')}, "
             f"exporter {parity.get('exporter', '?')}): max |diff| "
             f"{_value(parity.get('max_abs_diff'))}, {_criterion(parity)}"]
    errors, bounds = parity.get("baseline_error", {}), parity.get("bound", {})
    for case, diffs in parity.get("cases", {}).items():
        figures = []
        for k, v in diffs.items():
            extra = ""
            if k in errors.get(case, {}) and k in bounds.get(case, {}):
                extra = f" (torch {_value(errors[case][k])}, bound {_value(bounds[case][k])})"
            figures.append(f"{k} {_value(v)}{extra}")
        lines.append(f"  {case}: " + ", ".join(figures))
    quant = parity.get("quantized")
    if quant:
        lines.append(f"  int8 vs float: max |diff| {_value(quant.get('max_abs_diff'))}, "
                     f"{_criterion(quant)}")
    for key, label in (("streaming", "stepped vs one call"),
                       ("predictor", "Predictor on the sample vs the foreign graph")):
        report = parity.get(key)
        if isinstance(report, dict) and "cases" in report:
            lines.append(f"  {label}: max |diff| {_value(report.get('max_abs_diff'))}, "
                         f"{_criterion(report)}")
        elif isinstance(report, dict):
            lines.append(f"  {label}: not checked ({report.get('why', 'no reason recorded')})")
    for key, report in (parity.get("step_graph") or {}).items():
        lines.append(f"  step graph {key.replace('_', ' ')}: max |diff| "
                     f"{_value(report.get('max_abs_diff'))} over {len(report.get('cases', {}))} "
                     "checks")
    return lines


def _step_lines(c: ModelContract) -> list[str]:
    if not c.step_model:
        return ["step graph:  (none; every call runs the sequence graph)"]
    return [f"step graph:  {c.step_model.get('file')} (single-step companion used by the "
            f"runtime; sha256 {str(c.step_model.get('sha256', ''))[:16]}...)"]


# name -> renderer; a `--code js|python` option adds its entries here (see module docstring)
def _code_renderer(lang: str) -> Callable[[Inspection], str]:
    def render(found: Inspection) -> str:
        return generate(found.contract, lang, str(found.path))

    return render


RENDERERS: dict[str, Callable[[Inspection], str]] = {
    "text": render_text,
    "json": render_json,
    **{f"code:{lang}": _code_renderer(lang) for lang in LANGS},
}
