"""`rnnstream inspect --code`: what the generated programs say about each state."""

from __future__ import annotations

import pytest

from rnnstream.cli.codegen import LANGS, generate
from rnnstream.runtime import spec
from rnnstream.runtime.contract import ModelContract

MODES = [(kind, mode) for kind, table in (("input", spec.INPUT_MODE_SPECS),
                                          ("target", spec.TARGET_MODE_SPECS))
         for mode in table.values() if mode.state is not None]


@pytest.mark.parametrize(("kind", "mode"), MODES, ids=[m.name for _, m in MODES])
def test_a_model_level_state_is_described_by_its_mode(kind: str, mode: spec.ModeSpec) -> None:
    """Each state an input or target mode carries (last, cycle, ets) is described by the mode's
    plain data in spec (what it holds, its axes), never by a special case per name; the cell's
    states keep their layers and hidden size."""
    modes = {"input_mode": mode.name} if kind == "input" else {"target_mode": mode.name}
    season = 3 if mode.season != "none" else 0
    contract = ModelContract(cell="gru", layers=2, hidden=4, features=["a", "b"], targets=["a"],
                             season=season, **modes)
    state = next(s for s in contract.states if s.name == mode.state)
    words = mode.describe(state.row_shape)
    assert mode.meaning in words
    for lang in sorted(LANGS):
        if lang == "web":
            continue  # the page lists shapes, not words
        code = generate(contract, lang, "m.onnx")
        assert f"[batch=1, {words}]" in code, lang
        assert "[batch=1, layers=2, hidden=4]" in code, lang  # the cell's h
