"""What embedders rely on in an exported file, beyond the rnnstream runtime's own checks."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from rnnstream.export.step_graph import step_path
from rnnstream.runtime.contract import METADATA_KEY, sidecar_path
from rnnstream.train.model import CELLS

from ._support import CASES, Case


def lowest_ir_version(opset: int) -> int:
    """The lowest ONNX IR version that can carry ``opset`` (onnx's own release table)."""
    return min(ir for _, ir, ai_onnx, *_ in onnx.helper.VERSION_TABLE if ai_onnx >= opset)


@pytest.mark.parametrize("graph", ["sequence", "step"])
def test_ir_version_is_the_lowest_the_opset_allows(exported: tuple[Case, Path], graph: str) -> None:
    """onnx >= 1.23 stamps IR 14 by default, which onnxruntime-node and -web 1.30 (IR <= 13) and
    older C++/C#/Java runtimes refuse to load; the exporter must write the lowest IR for its
    opset, for both graphs (one rule: whatever loads model.onnx loads model.step.onnx)."""
    _, model = exported
    path = model if graph == "sequence" else Path(step_path(str(model)))
    onnx_model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    assert onnx_model.ir_version == lowest_ir_version(opset), (
        f"{path.name}: IR version {onnx_model.ir_version} for opset {opset}; "
        f"pin it with rnnstream.export.graph.pin_ir_version in the exporter")


def test_sidecar_is_the_embedded_metadata(exported: tuple[Case, Path]) -> None:
    """JavaScript reads the sidecar, C++/C#/Java the metadata map: they must be the same text."""
    _, model = exported
    graph = onnx.load(str(model), load_external_data=False)
    embedded = {p.key: p.value for p in graph.metadata_props}[METADATA_KEY]
    assert Path(sidecar_path(str(model))).read_text() == embedded


def test_every_cell_is_embedded() -> None:
    """Every registered cell has a model in the embedding tests (JS parity, codegen, file)."""
    assert {case.cell for case in CASES} == set(CELLS)
