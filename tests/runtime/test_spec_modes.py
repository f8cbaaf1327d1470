"""The mode registry: one spec entry per input/target mode, the same modes in every stage's table,
and the states and shapes every existing mode had before the registry (held here literally)."""

from __future__ import annotations

import pytest

from rnnstream.runtime import ConfigError, spec
from rnnstream.runtime.contract import ModelContract


def test_every_stage_has_exactly_the_spec_modes() -> None:
    from rnnstream.export.modes import EXPORT_INPUT_MODES, EXPORT_TARGET_MODES
    from rnnstream.train.modes import TORCH_INPUT_MODES, TORCH_TARGET_MODES

    assert set(TORCH_INPUT_MODES) == set(EXPORT_INPUT_MODES) == set(spec.INPUT_MODE_SPECS)
    assert set(TORCH_TARGET_MODES) == set(EXPORT_TARGET_MODES) == set(spec.TARGET_MODE_SPECS)
    assert spec.INPUT_MODES == ("level", "delta")
    assert spec.TARGET_MODES == ("level", "delta", "seasonal", "ets")
    assert spec.SEASON_MODES == ("seasonal", "ets")


@pytest.mark.parametrize(("inputs", "targets", "names"), [
    ("level", "level", ("h", "c")),
    ("delta", "delta", ("h", "c", "last")),
    ("level", "seasonal", ("h", "c", "cycle")),
    ("delta", "seasonal", ("h", "c", "last", "cycle")),
    ("delta", "ets", ("h", "c", "last", "ets")),
])
def test_states_and_shapes_are_what_they_were(inputs: str, targets: str, names) -> None:
    assert spec.state_names("lstm", inputs, targets) == names
    shapes = {s: spec.state_row_shape(s, layers=2, hidden=8, n_features=3, n_targets=2,
                                      season=5) for s in names}
    want = {"h": (2, 8), "c": (2, 8), "last": (4,), "cycle": (5, 3), "ets": (2 * 7,)}
    assert shapes == {s: want[s] for s in names}


def test_role_facts_are_plain_data() -> None:
    last = spec.mode_of_state("last")
    assert last is spec.INPUT_MODE_SPECS["delta"]
    assert (last.draw, last.nudge, last.nudge_inputs) == ("previous_point", False, False)
    assert last.describe((4,)) == "F+1=4: the last point and a seen flag"
    assert spec.mode_of_state("cycle").nudge is False
    assert spec.mode_of_state("ets").draw == "normal"
    assert spec.mode_of_state("h") is None
    assert {m.draw for t in (spec.INPUT_MODE_SPECS, spec.TARGET_MODE_SPECS)
            for m in t.values()} <= set(spec.STATE_DRAW_KINDS)
    assert spec.ets_slots(12) == 14


def test_an_unknown_mode_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="target mode 'ratio' is not one of"):
        spec.state_names("gru", "level", "ratio")


def test_required_schema_comes_from_the_modes() -> None:
    def contract(inputs: str, targets: str) -> ModelContract:
        return ModelContract(cell="gru", layers=1, hidden=4, features=["a"], targets=["a"],
                             input_mode=inputs, target_mode=targets,
                             season=4 if targets in spec.SEASON_MODES else 0)

    assert contract("level", "level").required_schema == 1
    assert contract("delta", "delta").required_schema == 2
    assert contract("level", "ets").required_schema == 4


def test_a_malformed_mode_entry_is_refused_where_it_is_written() -> None:
    with pytest.raises(ConfigError, match="draw 'gaussian' must be one of"):
        spec.ModeSpec("bad", draw="gaussian")
    with pytest.raises(ConfigError, match="needs both a name"):
        spec.ModeSpec("bad", state="s")
