"""Parity: prove that an ONNX graph computes what the torch model computes, before writing it.

The reference is the torch model in ``eval()`` mode under ``torch.no_grad()``, in float32. Inputs
are seeded and at the model's own scale (``x = feature_mean + feature_std * randn``), so the
normalisation folded into the graph's weights is exercised with realistic values; the initial
state is random and non-zero (``h`` in (-0.9, 0.9) like a tanh output, ``c`` standard normal).

Checks (every output compared, final states included, maximum absolute difference):

* one call per case in :data:`DEFAULT_CASES` (batch 1 and 7, time 1 and 50);
* a stream of :data:`STREAM_STEPS` steps fed to onnxruntime one step at a time, carrying the
  state from ``<s>_out`` to ``<s>_in``, against one full-sequence torch forward -- the way the
  runtime will use the model.

Failures are collected over all cases and raised together as :class:`ParityError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from rnnstream.runtime.contract import (
    CELL_STATES,
    INPUT_NAME,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)

from .errors import ParityError, ParityFailure

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_CASES",
    "STEP_CASES",
    "STREAM_STEPS",
    "ULPS_Y",
    "InputSpec",
    "ParityCase",
    "ParityReport",
    "measure_parity",
    "ort_runner",
    "random_inputs",
    "stream_outputs",
    "torch_runner",
    "verify_parity",
    "verify_step_parity",
]

DEFAULT_ATOL = 1e-5
# y is in raw units: float32 cannot hold a price of 5,000 closer than ~5e-4, so an absolute
# 1e-5 would refuse every correct model of large-valued series. y is held to
# max(atol, ULPS_Y float32 rounding steps at `scale`), scale = the largest |mean| + 4 std of the
# model's raw inputs and targets; below |y| ~ 40 that is atol itself. States (normalised
# units) are always held to atol.
ULPS_Y = 4
STREAM_STEPS = 1000
STREAM_BATCH = 3  # > 1, so that carrying a batch of states between calls is proven too

# A runner maps (x [B,T,F], states in graph order, each [B,L,H]) -> {output name: array}.
Runner = Callable[[np.ndarray, tuple[np.ndarray, ...]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ParityCase:
    batch: int
    time: int

    @property
    def name(self) -> str:
        return f"batch{self.batch}_time{self.time}"


DEFAULT_CASES = tuple(ParityCase(b, t) for b in (1, 7) for t in (1, 50))


@dataclass(frozen=True)
class InputSpec:
    """What it takes to draw realistic inputs for a model."""

    cell: str
    layers: int
    hidden: int
    feature_mean: np.ndarray
    feature_std: np.ndarray
    raw_scale: float = 1.0  # largest |mean| + 4 std over raw features and targets

    @classmethod
    def from_model(cls, model) -> InputSpec:
        norm = model.normalization()
        scale = max(float(np.max(np.abs(np.asarray(norm[f"{k}_mean"])) +
                                 4 * np.abs(np.asarray(norm[f"{k}_std"]))))
                    for k in ("feature", "target"))
        return cls(
            cell=model.config.cell,
            layers=model.config.layers,
            hidden=model.config.hidden,
            feature_mean=np.asarray(norm["feature_mean"], dtype=np.float64),
            feature_std=np.asarray(norm["feature_std"], dtype=np.float64),
            raw_scale=scale,
        )

    @property
    def state_names(self) -> tuple[str, ...]:
        return CELL_STATES[self.cell]

    def tolerance(self, atol: float) -> dict[str, float]:
        """Per-output tolerance: states at ``atol``, y at max(atol, ULPS_Y ulps of raw scale)."""
        tol = dict.fromkeys(self.output_names, atol)
        ulp = float(np.spacing(np.float32(self.raw_scale)))
        tol[OUTPUT_NAME] = max(atol, ULPS_Y * ulp)
        return tol

    @property
    def output_names(self) -> list[str]:
        return [OUTPUT_NAME, *(state_output_name(s) for s in self.state_names)]


@dataclass
class ParityReport:
    """Maximum absolute differences per case and output, with the tolerance each was held to."""

    reference: str
    candidate: str
    tolerance: dict[str, float]  # output name -> atol
    cases: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> output -> diff
    seed: int = 0

    @property
    def max_abs_diff(self) -> float:
        return max((d for diffs in self.cases.values() for d in diffs.values()), default=0.0)

    def worst(self) -> dict[str, float]:
        """Worst difference per case (the figure a person wants to see)."""
        return {case: max(diffs.values()) for case, diffs in self.cases.items()}

    def failures(self) -> list[ParityFailure]:
        return [
            ParityFailure(case, out, diff, self.tolerance[out])
            for case, diffs in self.cases.items()
            for out, diff in diffs.items()
            if not diff <= self.tolerance[out]  # NaN fails too
        ]

    def summary(self) -> str:
        tol = ", ".join(f"{k} {v:.3g}" for k, v in self.tolerance.items())
        if len(set(self.tolerance.values())) == 1:
            tol = f"{next(iter(self.tolerance.values())):.3g}"
        return (f"parity {self.reference} vs {self.candidate}: max |diff| = "
                f"{self.max_abs_diff:.3g} (atol {tol}) over {len(self.cases)} checks, "
                f"{'ok' if not self.failures() else 'FAILED'}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "max_abs_diff": self.max_abs_diff,
            "atol": dict(self.tolerance),
            "seed": self.seed,
            "cases": {case: dict(diffs) for case, diffs in self.cases.items()},
        }


# -- inputs ---------------------------------------------------------------------------------
def random_inputs(
    spec: InputSpec, batch: int, time: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Seeded raw-unit inputs at the model's scale and a random non-zero initial state."""
    z = rng.standard_normal((batch, time, spec.feature_mean.size))
    x = (spec.feature_mean + spec.feature_std * z).astype(np.float32)
    shape = (batch, spec.layers, spec.hidden)
    states = []
    for name in spec.state_names:
        if name == "c":
            states.append(rng.standard_normal(shape).astype(np.float32))
        else:
            states.append(rng.uniform(-0.9, 0.9, shape).astype(np.float32))
    return x, tuple(states)


# -- runners --------------------------------------------------------------------------------
def torch_runner(model) -> Runner:
    """The torch model as a runner (float32, eval mode, no autograd)."""
    import torch

    spec = InputSpec.from_model(model)

    def run(x: np.ndarray, states: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            y, next_state = model(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in states))
        arrays = [y, *next_state]
        return {name: a.numpy() for name, a in zip(spec.output_names, arrays, strict=True)}

    return run


def session(graph: onnx.ModelProto | bytes) -> ort.InferenceSession:
    """A single-threaded CPU session (deterministic, and cheap on small machines)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    data = graph if isinstance(graph, bytes) else graph.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_runner(sess: ort.InferenceSession, cell: str) -> Runner:
    """An onnxruntime session as a runner."""
    state_names = CELL_STATES[cell]
    outputs = [OUTPUT_NAME, *(state_output_name(s) for s in state_names)]

    def run(x: np.ndarray, states: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        feeds = {INPUT_NAME: x}
        feeds.update({state_input_name(s): v for s, v in zip(state_names, states, strict=True)})
        return dict(zip(outputs, sess.run(outputs, feeds), strict=True))

    return run


def stream_outputs(
    runner: Runner, x: np.ndarray, states: tuple[np.ndarray, ...], state_names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Feed ``x`` one time step per call, carrying each ``<s>_out`` into the next ``<s>_in``."""
    ys = []
    for t in range(x.shape[1]):
        out = runner(np.ascontiguousarray(x[:, t:t + 1]), states)
        ys.append(out[OUTPUT_NAME])
        states = tuple(out[state_output_name(s)] for s in state_names)
    result = {OUTPUT_NAME: np.concatenate(ys, axis=1)}
    result.update({state_output_name(s): v for s, v in zip(state_names, states, strict=True)})
    return result


# -- comparison -----------------------------------------------------------------------------
def max_abs_diffs(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Max |expected - actual| per output (NaN when shapes differ or values are not finite)."""
    diffs = {}
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            diffs[name] = float("nan")
            continue
        diff = np.abs(want.astype(np.float64) - got.astype(np.float64))
        diffs[name] = float(diff.max()) if diff.size else 0.0
    return diffs


def measure_parity(
    spec: InputSpec,
    reference: Runner,
    candidate: Runner,
    *,
    tolerance: Mapping[str, float],
    seed: int = 0,
    cases: tuple[ParityCase, ...] = DEFAULT_CASES,
    stream_steps: int = STREAM_STEPS,
    names: tuple[str, str] = ("torch", "onnxruntime"),
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on every case and on a step-by-step stream."""
    rng = np.random.default_rng(seed)
    report = ParityReport(names[0], names[1], dict(tolerance), seed=seed)
    for case in cases:
        x, states = random_inputs(spec, case.batch, case.time, rng)
        report.cases[case.name] = max_abs_diffs(reference(x, states), candidate(x, states))
    if stream_steps:
        x, states = random_inputs(spec, STREAM_BATCH, stream_steps, rng)
        streamed = stream_outputs(candidate, x, states, spec.state_names)
        report.cases[f"stream{stream_steps}_batch{STREAM_BATCH}"] = max_abs_diffs(
            reference(x, states), streamed
        )
    return report


def verify_parity(
    model,
    graph: onnx.ModelProto,
    *,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    cases: tuple[ParityCase, ...] = DEFAULT_CASES,
    stream_steps: int = STREAM_STEPS,
) -> ParityReport:
    """torch vs onnxruntime on ``graph``; raises :class:`ParityError` listing every failure."""
    spec = InputSpec.from_model(model)
    report = measure_parity(
        spec,
        torch_runner(model),
        ort_runner(session(graph), spec.cell),
        tolerance=spec.tolerance(atol),
        seed=seed,
        cases=cases,
        stream_steps=stream_steps,
    )
    failures = report.failures()
    if failures:
        raise ParityError(failures)
    return report


# -- the single-step companion graph --------------------------------------------------------
STEP_CASES = tuple(ParityCase(b, 1) for b in (1, 7))  # time is fixed to 1 in the step graph


def verify_step_parity(
    model,
    sequence_graph: onnx.ModelProto,
    step_graph: onnx.ModelProto,
    *,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    stream_steps: int = STREAM_STEPS,
) -> dict[str, ParityReport]:
    """The step graph against the sequence graph (onnxruntime both) and against torch.

    Cases: batch 1 and 7 at time 1 with a non-zero state, and a ``stream_steps`` stream fed to
    the step graph one step at a time against one full-sequence call of the reference. Raises
    :class:`ParityError` listing every failure of both comparisons.
    """
    spec = InputSpec.from_model(model)
    tolerance = spec.tolerance(atol)
    step = ort_runner(session(step_graph), spec.cell)
    references = {
        "vs_sequence": (ort_runner(session(sequence_graph), spec.cell),
                        ("onnxruntime sequence graph", "onnxruntime step graph")),
        "vs_torch": (torch_runner(model), ("torch", "onnxruntime step graph")),
    }
    reports = {
        key: measure_parity(spec, ref, step, tolerance=tolerance, seed=seed, cases=STEP_CASES,
                            stream_steps=stream_steps, names=names)
        for key, (ref, names) in references.items()
    }
    failures = [ParityFailure(f"step graph {key} {f.case}", f.output, f.max_abs_diff, f.atol)
                for key, report in reports.items() for f in report.failures()]
    if failures:
        raise ParityError(failures, "step graph vs sequence graph and torch")
    return reports
