"""Parity: prove that an ONNX graph computes what the torch model computes, before writing it.

Who is right? Both torch and onnxruntime compute in float32 and both round; neither is the truth.
The truth, to float32's eyes, is the same torch model run in float64 (a deep copy, ``.double()``,
CPU, the very same float32 inputs). So every check measures, per case and per output (``y`` and
every state output)::

    err_ort   = max |onnxruntime - torch float64|
    err_torch = max |torch float32 - torch float64|      (what float32 itself costs here)
    bound     = FACTOR * err_torch + FLOOR_ULPS * ulp32(max |torch float64|)

and refuses the graph when ``err_ort > bound``: onnxruntime must be no worse than a few times
torch's own float32 error on the same case, with a floor of a few float32 rounding steps at the
output's own scale (for cases where torch happens to round almost exactly). The bound follows
the model: an LSTM whose cell state reaches 47, or whose random initial state drives it into a
regime that amplifies rounding, has a larger torch error and so a larger bound; a small model
near 1 is held to ~1e-7. Why :data:`FACTOR` and :data:`FLOOR_ULPS` are 8: see their comments
(measured, tests/export/test_parity_space.py prints the figures of 45 trained models).

Passing an explicit ``atol`` restores the absolute criterion: ``max |onnxruntime - torch
float32| <= atol`` per output (``y`` relaxed to :data:`ULPS_Y` float32 steps of the raw scale).

Inputs are seeded and at the model's own scale (``x = feature_mean + feature_std * randn``), or
windows of a sample of the real series when one is given; the initial state is random and
non-zero per state name (:data:`STATE_DRAWS`; any other state, such as ``last``, starts at
zeros as it does in the runtime). Cases:

* one call per case in :data:`DEFAULT_CASES` (batch 1 and 7, time 1 and 50);
* a stream of :data:`STREAM_STEPS` steps fed to onnxruntime one step at a time, carrying the
  state from ``<s>_out`` to ``<s>_in``, against one full-sequence torch forward -- the way the
  runtime will use the model.

Failures are collected over all cases and raised together as :class:`ParityError`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from rnnstream.runtime import spec as _spec
from rnnstream.runtime.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)
from rnnstream.runtime.spec import CELLS

from .errors import ExportError, ParityError, ParityFailure

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_CASES",
    "DRAWS",
    "FACTOR",
    "FLOOR_ULPS",
    "INPUT_DRAWS",
    "STATE_DRAWS",
    "STEP_CASES",
    "STREAM_STEPS",
    "ULPS_Y",
    "BoundRule",
    "InputSpec",
    "ParityCase",
    "ParityReport",
    "float64_model",
    "measure_parity",
    "ort_runner",
    "random_inputs",
    "stream_outputs",
    "torch_runner",
    "verify_parity",
    "verify_step_parity",
]

# None: the bound is derived from float64 (module docstring); a number: the old absolute bound.
DEFAULT_ATOL: float | None = None
# onnxruntime's error may be FACTOR times the float32 baseline's (see _baseline_errors) on the
# same case. Measured on 45 briefly trained models (every cell x hidden 8..512 x 1..3 layers,
# level/delta inputs and targets, raw scales 1 to 1e6, tests/export/test_parity_space.py):
# onnxruntime's error reached 5x torch's (its kernels sum in another order and approximate
# tanh/sigmoid); 8 leaves a margin over that without hiding a real fault, which is orders of
# magnitude larger (a swapped gate, a weight off by 0.5: >1,000x the bound; tests/export).
FACTOR = 8.0
# ...plus FLOOR_ULPS float32 rounding steps at the largest |float64 output| of the case: when
# torch rounds almost exactly by luck (err_torch ~ 0), a correct graph still rounds a few times
# per output (the folded affine head alone rounds 2-3 times).
FLOOR_ULPS = 8
# Float32 runs of the baseline on nudged copies of each case's inputs (see _baseline_errors),
# every value moved by up to NUDGE_ULPS float32 steps: onnxruntime's kernels round differently
# from torch's (vectorised tanh/sigmoid approximations, another summation order), and where a
# case amplifies rounding (a long stream, a random state driving an untrained net) that
# difference grows with it; measured on `rnnstream train --data sine --cell lstm --hidden 512
# --epochs 2 --seed 1`: onnxruntime 7.9x the worst of four 1-ulp torch runs at batch7_time50.
NUDGED_RUNS = 3
NUDGE_ULPS = 2
# The explicit-atol criterion only: y is in raw units, so float32 cannot hold a price of 5,000
# closer than ~5e-4; y is held to max(atol, ULPS_Y float32 steps at the model's raw scale).
ULPS_Y = 4
STREAM_STEPS = 1000
PAIR = "pair"  # measure_candidates' key of the candidate-vs-candidate report
STREAM_BATCH = 3  # > 1, so that carrying a batch of states between calls is proven too

# A runner maps (x [B,T,F], states in graph order) -> {output name: array}.
Runner = Callable[[np.ndarray, tuple[np.ndarray, ...]], dict[str, np.ndarray]]

# How a random initial state is drawn, per kind (spec.STATE_DRAW_KINDS) that needs no inputs.
DRAWS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "uniform": lambda rng, shape: rng.uniform(-0.9, 0.9, shape),  # like a tanh output
    "normal": lambda rng, shape: rng.standard_normal(shape),
}
# ... per state name: a cell's state not named here is drawn like h (a cell's states are O(1)
# values of its layers); a mode's state as its spec says (ModeSpec.draw), any other name starts
# at zeros.
STATE_DRAWS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "h": DRAWS["uniform"],
    "c": DRAWS["normal"],  # a trained LSTM's c is O(1)
    **{m.state: DRAWS[m.draw] for table in (_spec.INPUT_MODE_SPECS, _spec.TARGET_MODE_SPECS)
       for m in table.values() if m.state is not None and m.draw in DRAWS},
}


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

    state_names: tuple[str, ...]
    state_shapes: tuple[tuple[int, ...], ...]  # per state, its shape without the batch axis
    feature_mean: np.ndarray
    feature_std: np.ndarray
    raw_scale: float = 1.0  # largest |mean| + 4 std over raw features and targets
    sample: np.ndarray | None = None  # [time, F] raw inputs of the real series, or None
    # delta-input models: the raw level's statistics (feature_mean/std are the changes'); raw
    # inputs are then drawn as random walks, so that the changes the graph computes are at
    # their trained scale while x sits at the level's (a price of 5,000 moving by 10s)
    level_mean: np.ndarray | None = None
    level_std: np.ndarray | None = None

    @classmethod
    def from_model(cls, model, sample: np.ndarray | None = None) -> InputSpec:
        norm = model.normalization()
        kinds = ("feature", "target", *(("feature_level",) if "feature_level_mean" in norm
                                        else ()))
        scale = max(float(np.max(np.abs(np.asarray(norm[f"{k}_mean"])) +
                                 4 * np.abs(np.asarray(norm[f"{k}_std"]))))
                    for k in kinds)
        level = {k: np.asarray(norm[f"feature_level_{k}"], dtype=np.float64)
                 for k in ("mean", "std") if f"feature_level_{k}" in norm}
        names = tuple(model.config.state_names)
        shapes = tuple(tuple(s.shape[1:]) for s in model.initial_state(1))
        return cls(
            state_names=names,
            state_shapes=shapes,
            feature_mean=np.asarray(norm["feature_mean"], dtype=np.float64),
            feature_std=np.asarray(norm["feature_std"], dtype=np.float64),
            raw_scale=scale,
            sample=None if sample is None else check_sample(sample, len(norm["feature_mean"])),
            level_mean=level.get("mean"),
            level_std=level.get("std"),
        )

    def tolerance(self, atol: float) -> dict[str, float]:
        """Explicit-atol criterion: states at ``atol``, y at max(atol, ULPS_Y ulps of scale)."""
        tol = dict.fromkeys(self.output_names, atol)
        ulp = float(np.spacing(np.float32(self.raw_scale)))
        tol[OUTPUT_NAME] = max(atol, ULPS_Y * ulp)
        return tol

    @property
    def output_names(self) -> list[str]:
        return [OUTPUT_NAME, *(state_output_name(s) for s in self.state_names)]


def check_sample(sample, n_features: int) -> np.ndarray:
    """A sample of the series as float32 [time, F]; ExportError when it cannot be one."""
    arr = np.asarray(sample, dtype=np.float64)
    if arr.ndim == 1 and n_features == 1:
        arr = arr[:, None]
    longest = max(c.time for c in DEFAULT_CASES)
    if arr.ndim != 2 or arr.shape[1] != n_features or arr.shape[0] < longest:
        raise ExportError(
            f"sample of shape {arr.shape}: expected [time, {n_features}] raw inputs of the "
            f"series with time >= {longest} (the longest parity case), e.g. series.x"
        )
    if not np.all(np.isfinite(arr)) or np.max(np.abs(arr)) > np.finfo(np.float32).max:
        raise ExportError("sample holds NaN, infinite or beyond-float32 values; pass the "
                          "cleaned training inputs")
    return arr.astype(np.float32)


@dataclass(frozen=True)
class BoundRule:
    """``bound = factor * err_baseline + floor_ulps * ulp32(max |reference|)``."""

    factor: float = FACTOR
    floor_ulps: float = FLOOR_ULPS

    def bound(self, baseline_error: float, reference: np.ndarray) -> float:
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        floor = self.floor_ulps * float(np.spacing(np.float32(min(scale, 3e38))))
        return self.factor * baseline_error + floor

    def describe(self) -> str:
        return f"{self.factor:g} x {{baseline}} error + {self.floor_ulps:g} float32 ulps"


@dataclass
class ParityReport:
    """Per case and output: the candidate's max |difference| from the reference, and its bound.

    Derived criterion (``baseline`` set): ``baseline_error`` holds the baseline's own distance
    from the same reference (torch float32 vs torch float64) and ``bounds`` what it allows.
    Absolute criterion: ``tolerance`` holds the atol per output and ``bounds`` repeats it.
    """

    reference: str
    candidate: str
    tolerance: dict[str, float] = field(default_factory=dict)  # atol criterion: output -> atol
    cases: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> output -> diff
    inputs: str = "random"  # "random" (at the model's scale) or "sample" (of the series)
    seed: int = 0
    bounds: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> output -> bound
    baseline: str | None = None  # e.g. "torch float32"
    baseline_error: dict[str, dict[str, float]] = field(default_factory=dict)
    rule: BoundRule | None = None

    @property
    def max_abs_diff(self) -> float:
        return max((d for diffs in self.cases.values() for d in diffs.values()), default=0.0)

    @property
    def max_baseline_error(self) -> float:
        return max((d for e in self.baseline_error.values() for d in e.values()), default=0.0)

    @property
    def bound_used(self) -> float:
        """The largest diff / bound over every case and output (1.0 = at the bound)."""
        ratios = [self.cases[c][o] / b if b > 0 else float("inf") * self.cases[c][o]
                  for c, bs in self.bounds.items() for o, b in bs.items()]
        return max(ratios, default=0.0)

    def worst(self) -> dict[str, float]:
        """Worst difference per case (the figure a person wants to see)."""
        return {case: max(diffs.values()) for case, diffs in self.cases.items()}

    def failures(self) -> list[ParityFailure]:
        return [
            ParityFailure(case, out, diff, self.bounds[case][out],
                          self.baseline_error.get(case, {}).get(out), self.reference,
                          self.baseline)
            for case, diffs in self.cases.items()
            for out, diff in diffs.items()
            if not diff <= self.bounds[case][out]  # NaN fails too
        ]

    def summary(self) -> str:
        verdict = "ok" if not self.failures() else "FAILED"
        head = (f"parity {self.candidate} vs {self.reference}: max |diff| = "
                f"{self.max_abs_diff:.3g}")
        checks = f"over {len(self.cases)} checks, {verdict}"
        if self.tolerance:
            tol = ", ".join(f"{k} {v:.3g}" for k, v in self.tolerance.items())
            if len(set(self.tolerance.values())) == 1:
                tol = f"{next(iter(self.tolerance.values())):.3g}"
            return f"{head} (atol {tol}) {checks}"
        base = f"{self.baseline} {self.max_baseline_error:.3g}; " if self.baseline else ""
        return f"{head} ({base}{self.bound_used:.0%} of the bound) {checks}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference,
            "candidate": self.candidate,
            "criterion": "atol" if self.tolerance else "derived",
            "max_abs_diff": self.max_abs_diff,
            "seed": self.seed,
            "inputs": self.inputs,
            "cases": {case: dict(diffs) for case, diffs in self.cases.items()},
            "bound": {case: dict(b) for case, b in self.bounds.items()},
            "bound_used": self.bound_used,
        }
        if self.tolerance:
            out["atol"] = dict(self.tolerance)
        if self.baseline is not None:
            out["baseline"] = self.baseline
            out["baseline_error"] = {c: dict(e) for c, e in self.baseline_error.items()}
            out["max_baseline_error"] = self.max_baseline_error
            if self.rule is not None:
                out["rule"] = {"factor": self.rule.factor, "floor_ulps": self.rule.floor_ulps}
        return out


# -- inputs ---------------------------------------------------------------------------------
def _draw(name: str) -> Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] | None:
    """How state ``name`` is drawn without the inputs: its mode's kind, :data:`STATE_DRAWS`, or
    like h for a cell's state; None: zeros (or drawn from x, see random_inputs)."""
    mode = _spec.mode_of_state(name)
    if mode is not None:
        return DRAWS.get(mode.draw)
    cell_states = {s for cell in CELLS.values() for s in cell.states}
    return STATE_DRAWS.get(name, STATE_DRAWS["h"] if name in cell_states else None)


def random_states(spec: InputSpec, batch: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A random non-zero initial state per state's draw (:func:`_draw`; zeros for other names
    and for the states drawn from the inputs, which :func:`random_inputs` fills in)."""
    states = []
    for name, row in zip(spec.state_names, spec.state_shapes, strict=True):
        shape = (batch, *row)
        draw = _draw(name)
        states.append((draw(rng, shape) if draw else np.zeros(shape)).astype(np.float32))
    return tuple(states)


def random_inputs(
    spec: InputSpec, batch: int, time: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Seeded raw-unit inputs (sample windows, or random at the model's scale) and a state."""
    if spec.sample is not None:
        time = min(time, spec.sample.shape[0])
        starts = rng.integers(0, spec.sample.shape[0] - time + 1, batch)
        x = np.stack([spec.sample[s:s + time] for s in starts])
    elif spec.level_mean is not None and spec.level_std is not None:  # delta inputs: random
        size = spec.level_mean.size  # walks at the level's scale
        start = spec.level_mean + spec.level_std * rng.standard_normal((batch, 1, size))
        steps = spec.feature_mean + spec.feature_std * rng.standard_normal(
            (batch, time, spec.feature_mean.size))
        x = (start + np.cumsum(steps, axis=1)).astype(np.float32)
    else:
        z = rng.standard_normal((batch, time, spec.feature_mean.size))
        x = (spec.feature_mean + spec.feature_std * z).astype(np.float32)
    states = random_states(spec, batch, rng)
    for i, name in enumerate(spec.state_names):  # then the states drawn from x, in order
        mode = _spec.mode_of_state(name)
        if mode is not None and mode.draw in INPUT_DRAWS:
            drawn = INPUT_DRAWS[mode.draw](spec, x, spec.state_shapes[i], rng)
            states = (*states[:i], drawn, *states[i + 1:])
    return x, states


def _previous_point(spec: InputSpec, x: np.ndarray, row: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
    """A ``last``-like state [B, F + 1]: the point before x, one change back, seen or not."""
    batch = x.shape[0]
    back = spec.feature_mean + spec.feature_std * rng.standard_normal(x[:, 0].shape)
    seen = (rng.random((batch, 1)) < 0.5).astype(np.float64)
    return np.concatenate([x[:, 0] - back, seen], axis=1).astype(np.float32)


def _past_targets(spec: InputSpec, x: np.ndarray, row: tuple[int, ...],
                  rng: np.random.Generator) -> np.ndarray:
    """A ``cycle``-like state [B, S, Tg + 1] for inputs x: values at the inputs' scale (each
    slot a value of x, so the seasonal reference is a realistic raw value), flags 0 or 1 with
    the unseen slots first, as a stream that started less than a season ago has them."""
    batch, season, width = int(x.shape[0]), int(row[0]), int(row[1])
    flat = x.reshape(-1, x.shape[-1])
    picks = flat[rng.integers(0, flat.shape[0], (batch, season))]  # [B, S, F]
    values = picks[..., :width - 1] if picks.shape[-1] >= width - 1 else np.resize(
        picks, (batch, season, width - 1))
    unseen = rng.integers(0, season + 1, batch)  # how many of the oldest slots were never seen
    flags = (np.arange(season)[None, :] >= unseen[:, None]).astype(np.float32)[..., None]
    return np.concatenate([values * flags, flags], axis=-1).astype(np.float32)


# -- runners --------------------------------------------------------------------------------
def float64_model(model):
    """A float64 CPU copy of ``model`` (integer buffers such as ``target_index`` stay integer)."""
    return copy.deepcopy(model).cpu().double().eval()


def folded_model(model):
    """A float32 copy of ``model`` that computes the way the graphs do: input normalisation
    folded into the first layer (``W' = W / s``, ``b' = b - W m / s``, in float64 then rounded,
    as :func:`rnnstream.export.graph.onnx_weights` does).

    Folding is exact in real arithmetic but not in float32: the folded layer's terms are as large
    as the raw inputs over their std (a price of 5,000 with std 40: 125), where torch's own
    ``(x - m) / s`` works at the scale of the normalised input (~1). This copy's float32 error is
    therefore the baseline a correct graph is compared with.
    """
    import torch

    from rnnstream.train.cells import weight_names

    folded = copy.deepcopy(model).cpu().eval()
    m64 = folded.x_mean.double()
    s64 = folded.x_std.double()
    names = weight_names(0)
    w_ih, b_ih = folded.get_parameter(names.w_ih), folded.get_parameter(names.b_ih)
    w = w_ih.detach().double()
    b = b_ih.detach().double()
    with torch.no_grad():
        w_ih.copy_((w / s64[None, :]).float())
        b_ih.copy_((b - w @ (m64 / s64)).float())
        folded.x_mean.zero_()
        folded.x_std.fill_(1.0)
    return folded


def torch_runner(model, state_names: tuple[str, ...] | None = None) -> Runner:
    """The torch model as a runner (its own dtype, eval mode, no autograd).

    Inputs arrive as float32 and are converted exactly to the model's dtype, so a float64 copy
    sees the very same numbers as the float32 model. ``state_names``: the model's states when
    it has no ``config`` (a module with the Forecaster's calling convention).
    """
    import torch

    names = model.config.state_names if state_names is None else state_names
    outputs = [OUTPUT_NAME, *(state_output_name(s) for s in names)]
    dtype = next(model.parameters()).dtype

    def run(x: np.ndarray, states: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        def tensor(a):
            return torch.from_numpy(np.asarray(a)).to(dtype)

        with torch.no_grad():
            y, next_state = model(tensor(x), tuple(tensor(s) for s in states))
        arrays = [y, *next_state]
        return {name: a.numpy() for name, a in zip(outputs, arrays, strict=True)}

    return run


def session(graph: onnx.ModelProto | bytes) -> ort.InferenceSession:
    """A single-threaded CPU session (deterministic, and cheap on small machines)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    data = graph if isinstance(graph, bytes) else graph.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_runner(sess: ort.InferenceSession, state_names: tuple[str, ...]) -> Runner:
    """An onnxruntime session as a runner (``state_names``: ``model.config.state_names``)."""
    state_names = tuple(state_names)
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


def _parity_inputs(spec: InputSpec, cases: tuple[ParityCase, ...], stream_steps: int,
                   seed: int):
    """(case name, x, states, streamed?) for every case, then the stream; seeded."""
    rng = np.random.default_rng(seed)
    for case in cases:
        yield (case.name, *random_inputs(spec, case.batch, case.time, rng), False)
    if stream_steps:
        x, states = random_inputs(spec, STREAM_BATCH, stream_steps, rng)
        yield f"stream{x.shape[1]}_batch{STREAM_BATCH}", x, states, True


def measure_parity(
    spec: InputSpec,
    reference: Runner,
    candidate: Runner,
    *,
    tolerance: Mapping[str, float] | None = None,
    baseline: Runner | None = None,
    rule: BoundRule | None = None,
    seed: int = 0,
    cases: tuple[ParityCase, ...] = DEFAULT_CASES,
    stream_steps: int = STREAM_STEPS,
    names: tuple[str, str] | tuple[str, str, str] = ("torch", "onnxruntime"),
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on every case and on a step-by-step stream.

    With ``baseline`` (and ``names`` = (reference, candidate, baseline)), each bound is derived
    by ``rule`` from the baseline's own distance to the reference on the same inputs; otherwise
    ``tolerance`` gives a fixed bound per output.
    """
    reports = measure_candidates(spec, reference, {"c": candidate}, tolerance=tolerance,
                                 baseline=baseline, rule=rule, seed=seed, cases=cases,
                                 stream_steps=stream_steps, names=names)
    return reports["c"]


def measure_candidates(
    spec: InputSpec,
    reference: Runner,
    candidates: Mapping[str, Runner],
    *,
    tolerance: Mapping[str, float] | None = None,
    baseline: Runner | None = None,
    rule: BoundRule | None = None,
    seed: int = 0,
    cases: tuple[ParityCase, ...] = DEFAULT_CASES,
    stream_steps: int = STREAM_STEPS,
    names: tuple[str, ...] = ("torch", "onnxruntime"),
    candidate_names: Mapping[str, str] | None = None,
    consistency: tuple[str, str] | None = None,
) -> dict[str, ParityReport]:
    """:func:`measure_parity` for several candidates on the same inputs (one report each).

    ``consistency=(a, b)`` adds a report under :data:`PAIR`: candidate ``b`` against candidate
    ``a`` on the same inputs, bound by twice the derived bound (or by ``tolerance``).
    """
    if (baseline is None) == (tolerance is None):
        raise ValueError("give either a baseline (derived bound) or a tolerance (atol)")
    rule = rule or BoundRule()
    label = candidate_names or {}
    reports = {
        key: ParityReport(names[0], label.get(key, names[1]),
                          dict(tolerance) if tolerance is not None else {}, seed=seed,
                          baseline=names[2] if baseline is not None else None,
                          rule=rule if baseline is not None else None)
        for key in candidates
    }
    pair = None
    if consistency is not None:
        a, b = consistency
        pair = ParityReport(label.get(a, a), label.get(b, b),
                            dict(tolerance) if tolerance is not None else {}, seed=seed)
    nudges = np.random.default_rng([seed, 1])
    for case, x, states, streamed in _parity_inputs(spec, cases, stream_steps, seed):
        want = reference(x, states)
        base = None
        if baseline is not None:
            base = _baseline_errors(want, baseline, x, states, spec.state_names, nudges)
        if base is not None:
            bounds = {o: rule.bound(base[o], want[o]) for o in want}
        elif tolerance is not None:
            bounds = {o: tolerance[o] for o in want}
        got = {key: stream_outputs(run, x, states, spec.state_names) if streamed
               else run(x, states) for key, run in candidates.items()}
        for key, report in reports.items():
            report.cases[case] = max_abs_diffs(want, got[key])
            report.bounds[case] = dict(bounds)
            if base is not None:
                report.baseline_error[case] = dict(base)
        if pair is not None and consistency is not None:
            pair.cases[case] = max_abs_diffs(got[consistency[0]], got[consistency[1]])
            # derived: both are within the bound of the reference, so within twice of each other
            pair.bounds[case] = {o: b * (2 if base is not None else 1) for o, b in bounds.items()}
    if pair is not None:
        reports[PAIR] = pair
    return reports


# the draws (spec.STATE_DRAW_KINDS) that take the case's inputs: (spec, x, row, rng) -> state
INPUT_DRAWS: dict[str, Callable[[InputSpec, np.ndarray, tuple[int, ...], np.random.Generator],
                                np.ndarray]] = {
    "previous_point": _previous_point,
    "past_targets": _past_targets,
}
if set(DRAWS) | set(INPUT_DRAWS) | {"zeros"} != set(_spec.STATE_DRAW_KINDS):  # pragma: no cover
    raise ImportError(f"export.verify's draws != runtime.spec.STATE_DRAW_KINDS "
                      f"{_spec.STATE_DRAW_KINDS}")


def _baseline_errors(want: Mapping[str, np.ndarray], baseline: Runner, x: np.ndarray,
                     states: tuple[np.ndarray, ...], names: tuple[str, ...],
                     rng: np.random.Generator) -> dict[str, float]:
    """How far float32 itself lands from the reference on this case, per output.

    One float32 run is one draw: where the model amplifies rounding (an untrained net driven by
    a random state, a long stream) two correct float32 implementations can land 10x apart by
    luck of the rounding order. So the baseline also runs :data:`NUDGED_RUNS` copies of the
    inputs and states whose every value is moved by up to :data:`NUDGE_ULPS` float32 steps: data
    as valid as the original, which shows how much this case amplifies a rounding difference. The
    baseline error is the largest of these distances. A mode's state whose spec says
    ``nudge=False`` is not moved (``last`` and ``cycle`` hold exact copies of inputs and flags
    that must stay exactly 0 or 1); for a model fed changes (``nudge_inputs=False``) neither is
    ``x``: the graph subtracts neighbouring points exactly (Sterbenz), so a level's rounding
    step (5e-4 at a price of 5,000) is no error the graph makes, and moving it would hide real
    faults in the small changes the network sees.
    """
    errors = max_abs_diffs(want, baseline(x, states))
    modes = [_spec.mode_of_state(name) for name in names]
    exact_x = any(m is not None and not m.nudge_inputs for m in modes)
    for _ in range(NUDGED_RUNS):
        moved = tuple(s if m is not None and not m.nudge else _nudge(s, rng)
                      for m, s in zip(modes, states, strict=True))
        moved_x = x if exact_x else _nudge(x, rng)
        for out, err in max_abs_diffs(want, baseline(moved_x, moved)).items():
            errors[out] = max(errors[out], err)
    return errors


def _nudge(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each value moved by a random whole number of float32 steps in [-NUDGE_ULPS, NUDGE_ULPS]."""
    out = np.asarray(a, np.float32).copy()
    steps = rng.integers(-NUDGE_ULPS, NUDGE_ULPS + 1, out.shape)
    for k in range(NUDGE_ULPS):  # one float32 step per round, toward the drawn side
        up, down = steps > k, steps < -k
        out[up] = np.nextafter(out[up], np.float32(np.inf))
        out[down] = np.nextafter(out[down], np.float32(-np.inf))
    return out


def _criterion(model, atol: float | None, reference=None):
    """(reference runner, baseline runner or None, tolerance or None, names) for ``atol``.

    ``reference``: the module the graph must equal when it is not ``model`` itself (a user's
    module that ``model`` was rebuilt from, see :func:`rnnstream.export.export_module`); same
    calling convention as a Forecaster. It is the truth (in float64); the float32 baseline
    stays ``model`` folded, which computes what the graph computes.
    """
    spec = InputSpec.from_model(model)
    truth = model if reference is None else reference
    if atol is None:
        return (torch_runner(float64_model(truth), model.config.state_names),
                torch_runner(folded_model(model)), None,
                ("torch float64", "onnxruntime", "torch float32"))
    return (torch_runner(truth, model.config.state_names), None, spec.tolerance(atol),
            ("torch", "onnxruntime"))


def verify_parity(
    model,
    graph: onnx.ModelProto,
    *,
    atol: float | None = DEFAULT_ATOL,
    seed: int = 0,
    cases: tuple[ParityCase, ...] = DEFAULT_CASES,
    stream_steps: int = STREAM_STEPS,
    sample: np.ndarray | None = None,
    reference=None,
) -> ParityReport:
    """onnxruntime on ``graph`` vs torch; raises :class:`ParityError` listing every failure.

    ``atol=None`` (default): the derived bound against torch float64 (module docstring);
    a number: ``max |onnxruntime - torch float32| <= atol`` per output.
    """
    spec = InputSpec.from_model(model, sample)
    truth, baseline, tolerance, names = _criterion(model, atol, reference)
    report = measure_parity(
        spec,
        truth,
        ort_runner(session(graph), spec.state_names),
        tolerance=tolerance,
        baseline=baseline,
        seed=seed,
        cases=cases,
        stream_steps=stream_steps,
        names=names,
    )
    report.inputs = "random" if spec.sample is None else f"sample of {len(spec.sample)} points"
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
    atol: float | None = DEFAULT_ATOL,
    seed: int = 0,
    stream_steps: int = STREAM_STEPS,
    sample: np.ndarray | None = None,
    reference=None,
) -> dict[str, ParityReport]:
    """The step graph against torch (float64, or float32 with ``atol``), and the sequence graph.

    Cases: batch 1 and 7 at time 1 with a non-zero state, and a ``stream_steps`` stream fed to
    both graphs one step at a time against one full-sequence call of torch. Reports:

    * ``vs_torch``: the step graph held to the same criterion as the sequence graph;
    * ``vs_sequence``: step graph vs sequence graph on the same inputs. Under the derived
      criterion its bound is twice the derived bound: both graphs are held to the bound from
      float64 on these very inputs (the sequence graph too, below), so by the triangle
      inequality they can differ by at most twice that; the figure is recorded for people,
      the check then adds nothing. With ``atol`` it is the old ``atol`` check.

    Raises :class:`ParityError` listing every failure.
    """
    spec = InputSpec.from_model(model, sample)
    truth, baseline, tolerance, names = _criterion(model, atol, reference)
    reports = measure_candidates(
        spec, truth,
        {"step": ort_runner(session(step_graph), spec.state_names),
         "sequence": ort_runner(session(sequence_graph), spec.state_names)},
        tolerance=tolerance, baseline=baseline, seed=seed, cases=STEP_CASES,
        stream_steps=stream_steps, names=names, consistency=("sequence", "step"),
        candidate_names={"step": "onnxruntime step graph",
                         "sequence": "onnxruntime sequence graph"})
    result = {"vs_sequence": reports[PAIR], "vs_torch": reports["step"]}
    failures = [ParityFailure(f"{key} {f.case}", f.output, f.max_abs_diff, f.atol,
                              f.baseline_error, f.reference, f.baseline)
                for key, report in (("step graph vs sequence graph", result["vs_sequence"]),
                                    ("step graph", result["vs_torch"]),
                                    ("sequence graph", reports["sequence"]))
                for f in report.failures()]
    if failures:
        raise ParityError(failures, "step graph vs sequence graph and torch")
    return result
