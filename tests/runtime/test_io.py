"""ModelIO (runtime/_io.py): the outputs by name and role, computed once per instance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rnnstream.runtime._io import ModelIO, OutputBinding, StateBinding, model_outputs


def _io(extras: tuple[OutputBinding, ...] = (OutputBinding("y_aux", "aux", 1),)) -> ModelIO:
    states = tuple(StateBinding(n, f"{n}_in", f"{n}_out", (None, 2, 8), np.dtype(np.float32), 0)
                   for n in ("h", "c"))
    return ModelIO("x", (None, None, 1), np.dtype(np.float32), model_outputs("y", extras),
                   states)


def test_the_outputs_by_role_and_the_fetch_order() -> None:
    io = _io()
    assert io.output == "y"
    assert io.extras == (OutputBinding("y_aux", "aux", 1),)
    assert io.fetch == ["y", "h_out", "c_out", "y_aux"]
    arrays = [np.full((1, 1, 1), float(i), np.float32) for i in range(4)]
    out = io.split(arrays)
    assert out.prediction is arrays[0]
    assert out.states == arrays[1:3]
    assert out.extra == {"y_aux": arrays[3]}


def test_output_extras_and_fetch_are_computed_once_per_instance() -> None:
    """The engines read them on every call: the same objects each time, no recomputation; a
    replace() (a new instance) computes its own."""
    io = _io()
    assert io.fetch is io.fetch
    assert io.extras is io.extras
    other = dataclasses.replace(io, outputs=model_outputs("y"))
    assert other.fetch == ["y", "h_out", "c_out"]
    assert other.extras == ()
    assert io.fetch == ["y", "h_out", "c_out", "y_aux"]  # the first instance's stays its own
    fresh = _io()
    assert io == fresh  # equality reads the fields only: a computed value does not count
    assert "fetch" not in vars(fresh)
    with pytest.raises(dataclasses.FrozenInstanceError):
        io.input = "z"  # type: ignore[misc]


def test_the_dead_roles_map_is_gone() -> None:
    assert not hasattr(ModelIO, "roles")
