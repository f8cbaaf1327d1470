"""The rnnstream model contract: defined here once, written by the exporter, read by the runtime.

An rnnstream ONNX file has

* input  ``x``  float32 ``[batch, time, F]`` in raw units, and one input ``<s>_in`` per state;
* output ``y``  float32 ``[batch, time, T]`` in raw units, and one output ``<s>_out`` per state;
* states ``h`` (RNN, GRU) or ``h`` and ``c`` (LSTM), each float32 ``[batch, layers, hidden]``,
  plus ``last`` ``[batch, F + 1]`` when the model is fed differences (``input_mode="delta"``)
  and ``cycle`` ``[batch, season, T + 1]`` when it predicts the change from one season ago
  (``target_mode="seasonal"``, with the contract's ``season``) or ``ets`` ``[batch, T * (season
  + 2)]`` when it corrects an exponential smoothing forecast (``target_mode="ets"``);
  batch first so that one stream's state is one contiguous row; ``<s>_out`` after a call is the
  ``<s>_in`` of the next call, and the initial state is all zeros. Names, shapes and order come
  from :mod:`rnnstream.runtime.spec`, the one place they are defined;
* optionally (schema 5) more outputs, each ``[batch, time, size]`` with a role (a quantile
  head, an auxiliary target, a second horizon): the contract's ``outputs`` then lists every
  output by name and role (``prediction``, ``state``, then those); older files derive the roles
  (:attr:`ModelContract.outputs`), and the runtime hands the others out by name;
* one JSON document in ``metadata_props`` under :data:`METADATA_KEY` (the same document is
  written beside the model as ``<model>.onnx.json``, because onnxruntime's JavaScript API cannot
  read custom metadata).

``time = 1`` is a streaming step; ``time > 1`` primes the state through the same graph.

Two optional facts for the live scores (typed fields since 0.4, absent when unknown, so other
files keep their exact JSON): ``trained_season``, the season the model was trained with (the
default period of the seasonal-naive baseline), and ``calibration``, the validation half-widths
the intervals start from (:mod:`rnnstream.runtime.calibration`). Earlier releases kept them in
the free-form ``metrics``; :meth:`ModelContract.live_facts` reads either place.

Optionally (``step_model``, absent in older files) the model has a companion in the same folder,
``<stem>.step.onnx``: the same function for ``time = 1`` only, built from plain ops because that
is faster for streaming steps. The contract names it and holds the SHA-256 of its bytes, so a
stale or foreign companion is refused, never used silently.
Normalisation and its inverse live inside the graph: embedders feed raw values, read raw values.

This module is part of the small core: it imports only the standard library and the rest of
the core (:mod:`.spec`, :mod:`.errors`, :mod:`.calibration`), and the package's ``__init__``
is lazy, so importing it loads neither numpy nor onnxruntime
(``tests/packaging/test_import_edges.py`` holds that) and any program can read a contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import spec
from .calibration import Calibration
from .errors import ContractError
from .spec import DTYPE, INPUT_NAME, OUTPUT_NAME, state_input_name, state_output_name

__all__ = [
    "BATCH_AXIS",
    "CELL_STATES",
    "FORMAT",
    "INPUT_NAME",
    "LIVE_FACTS",
    "METADATA_KEY",
    "OUTPUT_NAME",
    "SCHEMA_VERSION",
    "SIDECAR_SUFFIX",
    "Calibration",
    "LiveFacts",
    "ModelContract",
    "StateSpec",
    "sidecar_path",
    "state_input_name",
    "state_output_name",
]

# 2 added input_mode "delta" (and its `last` state); 3 added cell "custom" (states declared in
# the contract, see spec.CUSTOM) and "step_only"; 4 added target modes "seasonal" and "ets"
# (their `season`, and the `cycle` or `ets` state); 5 added `outputs` (every output by name
# and role, written only by a model with outputs beyond the prediction and its states). A file
# declares the lowest version that describes it, so models that do not use a newer feature stay
# readable by older runtimes.
SCHEMA_VERSION = 5
FORMAT = "rnnstream"
METADATA_KEY = "rnnstream"  # the metadata_props key holding the contract JSON
SIDECAR_SUFFIX = ".json"  # model.onnx -> model.onnx.json
BATCH_AXIS = 0

# cell -> its recurrent state names, derived from the one spec (kept for existing importers)
CELL_STATES: dict[str, tuple[str, ...]] = {name: c.states for name, c in spec.CELLS.items()}

# Refuse absurd declared sizes before allocating anything for them.
MAX_FEATURES = 1 << 16
MAX_HIDDEN = 1 << 16
MAX_LAYERS = 64
MAX_STATES = 64
MAX_STATE_RANK = 8
MAX_SEASON = 1 << 20
MAX_OUTPUTS = 64
# roles an extra output may have: every role but the two the contract derives itself
EXTRA_ROLES = tuple(r for r in spec.OUTPUT_ROLES if r not in (spec.PREDICTION_ROLE,
                                                                 spec.STATE_ROLE))
# facts about the model the live scores read, typed contract fields since 0.4 (before: keys of
# the free-form `metrics`, still read from there when the field is absent; see live_facts)
LIVE_FACTS = ("trained_season", "calibration")


def sidecar_path(model_path: str) -> str:
    return f"{model_path}{SIDECAR_SUFFIX}"


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: fed as ``input``, read back as ``output``."""

    name: str
    input: str
    output: str
    shape: tuple[str | int, ...]  # ("batch", layers, hidden); ("batch", F + 1) for `last`
    dtype: str = DTYPE
    batch_axis: int = BATCH_AXIS
    initial: float = 0.0

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stream's state (the declared shape without its batch axis)."""
        return tuple(int(d) for i, d in enumerate(self.shape) if i != self.batch_axis)

    @classmethod
    def for_state(cls, name: str, row: tuple[int, ...]) -> StateSpec:
        return cls(name=name, input=state_input_name(name), output=state_output_name(name),
                   shape=(spec.BATCH, *row))


@dataclass(frozen=True)
class LiveFacts:
    """What a model's contract tells its live scores (:meth:`ModelContract.live_facts`)."""

    season: int | None  # the season the model was trained with (None: none known)
    calibration: Calibration | None  # its validation half-widths (None: none stored)


@dataclass
class ModelContract:
    """Everything a program needs to feed an rnnstream model and carry its state."""

    cell: str
    layers: int
    hidden: int
    features: list[str]
    targets: list[str]
    horizon: int = 1
    target_mode: str = "level"  # "level": predict the value; "delta": predict the change
    input_mode: str = "level"  # "level": fed raw values; "delta": fed changes (a `last` state)
    # target_mode "seasonal" (the `cycle` state holds the last S targets) or "ets" (S seasonal
    # slots in the `ets` state, 0 for none) only: the season S
    season: int = 0
    normalization: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    quantized: bool = False
    # {"file": "model.step.onnx", "sha256": "<hex of its bytes>"}; empty when there is none
    step_model: dict[str, str] = field(default_factory=dict)
    # cell "custom" only: (name, one stream's shape) of each state, in graph order; stored as
    # the contract's `states`, which for the other cells is derived from the spec instead
    declared_states: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # the graph's time axis is fixed to 1 (a foreign model that takes one step per call): the
    # runtime primes and forecasts it one step at a time
    step_only: bool = False
    # the season the model was trained with, given or detected (0: none known): the default
    # period of the live scores' seasonal-naive baseline. Not `season`, the seasonal target's.
    trained_season: int = 0
    # the validation half-widths the live intervals start from (None: none stored)
    calibration: Calibration | None = None
    # outputs beyond the prediction and the states, in graph order: (name, role, values per
    # time step), each [batch, time, values]; stored in the contract's `outputs` (schema 5)
    extra_outputs: tuple[tuple[str, str, int], ...] = ()
    schema_version: int = 0  # 0: the lowest version that describes this model (required_schema)
    format: str = FORMAT

    def __post_init__(self) -> None:
        if not self.schema_version:
            self.schema_version = self.required_schema

    # -- facts for the live scores -----------------------------------------------------------
    def live_facts(self, source: str = "model") -> LiveFacts:
        """The trained season and the calibration: the one place they are read. From the
        typed fields, or, for a model exported before they existed, from ``metrics`` (a
        malformed ``metrics["calibration"]`` raises ContractError here, when it is needed; an
        unusable ``metrics["season"]`` counts as none, as it always did)."""
        season = self.trained_season or _metrics_season(self.metrics)
        calibration = self.calibration
        if calibration is None and isinstance(self.metrics, Mapping) \
                and self.metrics.get("calibration") is not None:
            calibration = Calibration.from_json(self.metrics["calibration"], self.targets,
                                                f"{source}: metrics 'calibration'")
        return LiveFacts(season or None, calibration)

    def adopt_metrics_facts(self, source: str = "model") -> None:
        """Move ``metrics["season"]`` and ``metrics["calibration"]`` (where a trainer or an
        older caller put them) into their typed fields, checked: what an exporter does before
        writing, so that every file this release writes has them in their fields."""
        metrics = dict(self.metrics)
        facts = self.live_facts(source)
        if "season" in metrics and not self.trained_season:
            self.trained_season = facts.season or 0
        if "calibration" in metrics and self.calibration is None:
            self.calibration = facts.calibration
        for key in ("season", "calibration"):
            metrics.pop(key, None)
        self.metrics = metrics

    # -- derived, never stored separately -------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def graph_io(self, time: str | int = spec.TIME) -> tuple[list[spec.TensorSpec],
                                                            list[spec.TensorSpec]]:
        """(inputs, outputs) of this model's graph in order (``time=1``: the step graph)."""
        return spec.graph_io(self.cell, layers=self.layers, hidden=self.hidden,
                             n_features=self.n_features, n_targets=self.n_targets,
                             input_mode=self.input_mode, target_mode=self.target_mode,
                             season=self.season, time=1 if self.step_only else time,
                             declared=self.declared_states, extra_outputs=self.extra_outputs)

    @property
    def _has_season(self) -> bool:
        return spec.TARGET_MODE_SPECS[self.target_mode].season != "none"

    @property
    def is_custom(self) -> bool:
        """True for a model rnnstream did not build from one of its cells (see spec.CUSTOM)."""
        return self.cell == spec.CUSTOM

    @property
    def states(self) -> list[StateSpec]:
        if self.is_custom:
            return [StateSpec.for_state(name, row) for name, row in self.declared_states]
        return [StateSpec.for_state(s, spec.state_row_shape(
                    s, layers=self.layers, hidden=self.hidden, n_features=self.n_features,
                    n_targets=self.n_targets, season=self.season))
                for s in spec.state_names(self.cell, self.input_mode, self.target_mode)]

    @property
    def input(self) -> dict[str, Any]:
        x = self.graph_io()[0][0]
        return {"name": x.name, "shape": list(x.shape), "dtype": x.dtype}

    @property
    def output(self) -> dict[str, Any]:
        y = self.graph_io()[1][0]
        return {"name": y.name, "shape": list(y.shape), "dtype": y.dtype}

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Every output of the graph by name and role, in order: the prediction, the states,
        then the extra outputs (derived from the other fields for files before schema 5)."""
        return [{"name": t.name, "role": t.role, "shape": list(t.shape), "dtype": t.dtype}
                for t in self.graph_io()[1]]

    def output_names(self, role: str) -> list[str]:
        """The names of the outputs with ``role``, in graph order."""
        return [t.name for t in self.graph_io()[1] if t.role == role]

    @property
    def required_schema(self) -> int:
        """The lowest schema version that describes this model (see SCHEMA_VERSION)."""
        if self.extra_outputs:
            return 5
        modes = max(m.schema for m in spec.model_modes(self.input_mode, self.target_mode))
        return max(modes, 3 if self.is_custom or self.step_only else 1)

    @property
    def targets_are_features(self) -> bool:
        """True when the prediction can be fed back as the next input (needed by forecast)."""
        return self.targets == self.features and self.horizon == 1

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["declared_states"]
        del d["extra_outputs"]
        d["calibration"] = None if self.calibration is None else self.calibration.to_json()
        if not self._has_season:  # absent: other modes keep their old JSON
            del d["season"]
        d["input"] = self.input
        d["output"] = self.output
        if self.extra_outputs:  # only then: other files keep their exact old JSON
            d["outputs"] = self.outputs
        d["states"] = [
            {**asdict(s), "shape": list(s.shape)} for s in self.states
        ]
        order = ["format", "schema_version", "cell", "layers", "hidden", "input", "output",
                 *(("outputs",) if "outputs" in d else ()), "states", "features", "targets",
                 "horizon", "target_mode", "input_mode",
                 *(("season",) if "season" in d else ()), "quantized",
                 "normalization", "metrics", "parity", "versions", "fingerprint"]
        if self.step_model:  # optional: files without a step graph keep their exact old JSON
            order.append("step_model")
        if self.step_only:
            order.append("step_only")
        # optional, new in 0.4: files without them keep their exact old JSON
        order += [k for k in LIVE_FACTS if d[k]]
        return {k: d[k] for k in order}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model") -> ModelContract:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError(
                f"{source}: the rnnstream metadata is not valid JSON ({exc})"
            ) from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "model") -> ModelContract:
        """Validate and build a contract; every problem raises :class:`ContractError`."""
        if not isinstance(data, Mapping):
            raise ContractError(f"{source}: the rnnstream metadata must be a JSON object")
        if data.get("format") != FORMAT:
            raise ContractError(
                f"{source}: metadata format is {data.get('format')!r}, expected {FORMAT!r}"
            )
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ContractError(f"{source}: schema_version {version!r} is not a positive integer")
        if version > SCHEMA_VERSION:
            raise ContractError(
                f"{source}: contract schema version {version} is newer than this runtime "
                f"understands ({SCHEMA_VERSION}); upgrade rnnstream (pip install -U rnnstream)"
            )
        cell = data.get("cell")
        custom = cell == spec.CUSTOM and version >= 3
        if not isinstance(cell, str) or (cell not in spec.CELLS and not custom):
            raise ContractError(
                f"{source}: unknown cell {cell!r}; expected one of {sorted(spec.CELLS)}"
                + (f" or {spec.CUSTOM!r} (schema_version 3)" if cell == spec.CUSTOM else "")
            )
        # a custom model may not say how many layers or hidden units it has: 0 means unknown
        low = 0 if custom else 1
        layers = _positive_int(data, "layers", MAX_LAYERS, source, low)
        hidden = _positive_int(data, "hidden", MAX_HIDDEN, source, low)
        step_only = data.get("step_only", False)
        if not isinstance(step_only, bool) or (step_only and version < 3):
            raise ContractError(f"{source}: step_only {step_only!r} is not true or false "
                                "(and true needs schema_version 3)")
        features = _names(data, "features", source)
        targets = _names(data, "targets", source)
        horizon = _positive_int(data, "horizon", 1 << 20, source)
        target_mode = _mode(data, "target_mode", spec.TARGET_MODE_SPECS, version, source)
        # an ETS without a season has season 0 ("optional"); a seasonal target needs one
        season_kind = spec.TARGET_MODE_SPECS[target_mode].season
        season = (_positive_int(data, "season", 1 << 20, source,
                                0 if season_kind == "optional" else 1)
                  if season_kind != "none" else 0)
        # absent in schema 1 files: level
        input_mode = _mode(data, "input_mode", spec.INPUT_MODE_SPECS, version, source)
        contract = cls(
            cell=cell,
            layers=layers,
            hidden=hidden,
            features=features,
            targets=targets,
            horizon=horizon,
            target_mode=target_mode,
            input_mode=input_mode,
            season=season,
            normalization=_dict(data, "normalization", source),
            metrics=_dict(data, "metrics", source),
            parity=_dict(data, "parity", source),
            versions=_dict(data, "versions", source),
            fingerprint=str(data.get("fingerprint", "")),
            quantized=bool(data.get("quantized", False)),
            step_model=_step_model(data, source),
            declared_states=_declared_states(data, source) if custom else (),
            step_only=step_only,
            trained_season=_positive_int(data, "trained_season", MAX_SEASON, source)
            if data.get("trained_season") is not None else 0,
            calibration=None if data.get("calibration") is None else Calibration.from_json(
                data["calibration"], targets, f"{source}: metadata 'calibration'"),
            extra_outputs=_extra_outputs(data, version, source),
            schema_version=version,
        )
        contract._check_declared(data, source)
        return contract

    def _check_declared(self, data: Mapping[str, Any], source: str) -> None:
        """The stored input/output/states must be exactly what the cell and sizes imply."""
        expected = {**self.to_dict(), "outputs": self.outputs}
        names = [o["name"] for o in expected["outputs"]]
        if len(set(names)) != len(names):
            raise ContractError(f"{source}: output names {names} repeat; every output of the "
                                "graph needs its own name")
        for key in ("input", "output", "outputs", "states"):
            if key in data and data[key] != expected[key]:
                raise ContractError(
                    f"{source}: metadata field {key!r} is {data[key]!r}, but cell={self.cell}, "
                    f"layers={self.layers}, hidden={self.hidden} imply {expected[key]!r}"
                )


def _mode(data: Mapping[str, Any], key: str, table: Mapping[str, spec.ModeSpec], version: int,
          source: str) -> str:
    """An input or target mode of the spec (``"level"`` when absent) that ``version`` has."""
    value = data.get(key, "level")
    if not isinstance(value, str) or value not in table or table[value].schema > version:
        groups: dict[int, list[str]] = {}
        for m in table.values():
            if m.schema > 1:
                groups.setdefault(m.schema, []).append(repr(m.name))
        newer = "; ".join(f"{names[0]} needs schema_version {v}" if len(names) == 1 else
                          f"{' or '.join(names)}, which need schema_version {v}"
                          for v, names in sorted(groups.items()))
        raise ContractError(f"{source}: {key} {value!r} is not "
                            f"{' or '.join(repr(n) for n in table)}"
                            + (f" ({newer})" if newer else ""))
    return value


def _positive_int(data: Mapping[str, Any], key: str, limit: int, source: str,
                  low: int = 1) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= limit:
        raise ContractError(
            f"{source}: metadata {key!r} is {value!r}; expected an integer {low}..{limit}"
        )
    return value


def _declared_states(data: Mapping[str, Any], source: str
                     ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A custom model's states: names and row shapes, checked (names by the spec's rule)."""
    value = data.get("states")
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not 1 <= len(value) <= MAX_STATES):
        raise ContractError(f"{source}: a custom model must declare 1..{MAX_STATES} states in "
                            f"'states', got {value!r}")
    out: list[tuple[str, tuple[int, ...]]] = []
    for item in value:
        name = item.get("name") if isinstance(item, Mapping) else None
        shape = item.get("shape") if isinstance(item, Mapping) else None
        if (not isinstance(name, str) or not spec.is_state_name(name)
                or not isinstance(shape, list) or not 2 <= len(shape) <= MAX_STATE_RANK
                or shape[0] != spec.BATCH
                or not all(isinstance(d, int) and not isinstance(d, bool)
                           and 1 <= d <= MAX_HIDDEN for d in shape[1:])):
            raise ContractError(
                f"{source}: state {item!r} is not a state rnnstream can carry; expected "
                "{'name': '<letters, digits, _>', 'shape': ['batch', <sizes 1..65536>], ...}"
            )
        out.append((name, tuple(shape[1:])))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ContractError(f"{source}: state names {names} repeat")
    return tuple(out)


def _extra_outputs(data: Mapping[str, Any], version: int, source: str
                   ) -> tuple[tuple[str, str, int], ...]:
    """The outputs after the prediction and the states in ``outputs`` (schema 5), checked;
    that the rest of ``outputs`` is what the cell implies is checked with the other derived
    fields (:meth:`ModelContract._check_declared`)."""
    value = data.get("outputs")
    if value is None:
        return ()
    if (version < 5 or not isinstance(value, Sequence) or isinstance(value, str)
            or not 1 <= len(value) <= MAX_OUTPUTS):
        raise ContractError(f"{source}: metadata 'outputs' is {value!r}; expected a list of "
                            f"1..{MAX_OUTPUTS} outputs (and schema_version 5)")
    out: list[tuple[str, str, int]] = []
    for item in value:
        role = item.get("role") if isinstance(item, Mapping) else None
        if role in (spec.PREDICTION_ROLE, spec.STATE_ROLE):
            continue  # derived: compared with the cell's own in _check_declared
        name = item.get("name") if isinstance(item, Mapping) else None
        shape = item.get("shape") if isinstance(item, Mapping) else None
        if (role not in EXTRA_ROLES or not isinstance(name, str) or not spec.is_state_name(name)
                or not isinstance(shape, list) or len(shape) != 3
                or shape[:2] not in ([spec.BATCH, spec.TIME], [spec.BATCH, 1])
                or not isinstance(shape[2], int) or isinstance(shape[2], bool)
                or not 1 <= shape[2] <= MAX_FEATURES):
            raise ContractError(
                f"{source}: output {item!r} is not an output rnnstream can hand out; expected "
                f"{{'name': '<letters, digits, _>', 'role': one of {list(EXTRA_ROLES)}, "
                "'shape': ['batch', 'time', <values 1..65536>], 'dtype': 'float32'}")
        out.append((name, role, shape[2]))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ContractError(f"{source}: output names {names} repeat")
    return tuple(out)


def _metrics_season(metrics: Any) -> int:
    """``metrics["season"]`` as releases before 0.4 stored it; 0 unless a positive integer."""
    stored = metrics.get("season") if isinstance(metrics, Mapping) else None
    if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1:
        return stored
    return 0


def _names(data: Mapping[str, Any], key: str, source: str) -> list[str]:
    value = data.get(key)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not 1 <= len(value) <= MAX_FEATURES
        or not all(isinstance(v, str) and v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ContractError(
            f"{source}: metadata {key!r} must be a non-empty list of distinct names, got {value!r}"
        )
    return list(value)


def _dict(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ContractError(
            f"{source}: metadata {key!r} must be an object, got {type(value).__name__}"
        )
    return dict(value)


def _step_model(data: Mapping[str, Any], source: str) -> dict[str, str]:
    """The optional step-graph companion: a plain file name in the model's folder + its hash."""
    value = _dict(data, "step_model", source)
    if not value:
        return {}
    name, digest = value.get("file"), value.get("sha256")
    if (set(value) != {"file", "sha256"} or not isinstance(name, str)
            or not name.endswith(".onnx") or "/" in name or "\\" in name
            or name.startswith(".") or not isinstance(digest, str) or len(digest) != 64
            or any(ch not in "0123456789abcdef" for ch in digest)):
        raise ContractError(
            f"{source}: metadata 'step_model' is {value!r}; expected {{'file': "
            "'<name>.step.onnx' (a file name in the model's folder), 'sha256': '<64 lowercase "
            "hex digits>'}, or no step_model at all"
        )
    return {"file": name, "sha256": digest}

