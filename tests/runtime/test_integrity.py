"""The runtime recomputes the contract's fingerprint from the file's own bytes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime._integrity import Tensor, fingerprint, initializers
from rnnstream.runtime.contract import StateSpec


def _model(*tensors: onnx.TensorProto) -> bytes:
    graph = helper.make_graph([], "g", [], [], list(tensors))
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int8, np.uint8, np.float16,
                                   np.float64, np.int32])
def test_typed_and_raw_storage_give_the_bytes_numpy_gives(dtype) -> None:
    values = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    raw = numpy_helper.from_array(values, "raw")
    typed = helper.make_tensor("typed", helper.np_dtype_to_tensor_dtype(values.dtype),
                               values.shape, values.flatten().tolist())
    found = {t.name: t for t in initializers(_model(raw, typed))}
    for name in ("raw", "typed"):
        assert found[name].dims == [3, 4]
        assert found[name].data == values.tobytes(), name


def test_fingerprint_depends_on_every_byte_name_shape_and_layout() -> None:
    base = [Tensor("W", TensorProto.FLOAT, [2], np.array([1, 2], np.float32).tobytes())]
    states = [StateSpec.for_state("h", (1, 4))]
    ref = fingerprint(base, states)
    assert ref.startswith("sha256:")
    assert fingerprint(list(reversed(base)), states) == ref  # order of storage is irrelevant
    changed = [
        [Tensor("W", TensorProto.FLOAT, [2], np.array([1, 2.0000002], np.float32).tobytes())],
        [Tensor("V", TensorProto.FLOAT, [2], base[0].data)],
        [Tensor("W", TensorProto.FLOAT, [1, 2], base[0].data)],
    ]
    for tensors in changed:
        assert fingerprint(tensors, states) != ref
    assert fingerprint(base, [StateSpec.for_state("h", (2, 4))]) != ref


def test_negative_dims_and_malformed_bytes() -> None:
    t = helper.make_tensor("e", TensorProto.FLOAT, [0, 3], [])
    (found,) = initializers(_model(t))
    assert found.dims == [0, 3]
    from rnnstream.runtime._integrity import WireError

    with pytest.raises(WireError):
        initializers(b"\x3a\xff\xff\xff\xff\x0f")  # graph field claiming 4 GB


def test_fingerprint_covers_an_explicit_field_list_not_the_class_dict() -> None:
    """A field added to StateSpec must not change the fingerprint of models already exported."""
    import dataclasses

    base = [Tensor("W", TensorProto.FLOAT, [2], np.array([1, 2], np.float32).tobytes())]
    state = StateSpec.for_state("h", (1, 4))

    @dataclasses.dataclass(frozen=True)
    class Wider(StateSpec):
        extra: str = "a new field"

    wider = Wider(**dataclasses.asdict(state))
    assert fingerprint(base, [wider]) == fingerprint(base, [state])
