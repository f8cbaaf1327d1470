"""Write the seed corpora of the fuzz harnesses (fuzz/corpus/NAME/), from real files and
requests: run once after a format changes; `make fuzz` grows them. Model and snapshot seeds end
in .seed (the repository ignores *.onnx and *.npz); findings are kept as regression seeds."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LEGACY = HERE.parent / "tests" / "data" / "legacy_v0_1_0" / "model.onnx"


def seeds() -> dict[str, dict[str, bytes]]:
    from tritonclient.grpc import service_pb2 as pb

    from rnnstream.runtime import StreamPool
    from rnnstream.serve.metrics import Metrics
    from rnnstream.serve.sequences import Infer, Limits, ModelService, log_path

    out: dict[str, dict[str, bytes]] = {name: {} for name in
                                        ("model", "snapshot", "log", "http", "http_wire",
                                         "grpc", "line")}
    out["model"]["legacy-onnx.seed"] = LEGACY.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        pool = StreamPool(LEGACY)
        for key in (1, "two"):
            pool.add(key)
            pool.step_many([key], np.array([[0.5]], np.float32))
        pool.save_state(Path(folder) / "s.npz")
        out["snapshot"]["pool-npz.seed"] = (Path(folder) / "s.npz").read_bytes()
        state = str(Path(folder) / "log.npz")

        async def serve() -> None:
            s = ModelService("m", str(LEGACY), Limits(idle_timeout_s=None), Metrics())
            s.load(state, "log")
            await s.submit(Infer(np.full((2, 2, 1), 0.25, np.float32), [1, "b"],
                                 [True, True], [False, True]))
            await s.submit(Infer(np.full((1, 1, 1), 0.5, np.float32), [1], [False], [False]))
            s.close()

        asyncio.run(serve())
        out["log"]["server.wal"] = Path(log_path(state)).read_bytes()
    body = {"parameters": {"sequence_id": 7, "sequence_start": True},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 1],
                        "data": [0.5, 0.25]}]}
    many = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1, 1], "data": [1, 2]},
                       {"name": "sequence_id", "datatype": "BYTES", "shape": [2],
                        "data": ["a", "b"]},
                       {"name": "sequence_start", "datatype": "BOOL", "shape": [2],
                        "data": [True, False]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    head = json.dumps({"parameters": {"sequence_id": 9, "sequence_start": True},
                       "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 1],
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    out["http"]["json.bin"] = b"\xff" + json.dumps(body).encode()
    out["http"]["many.bin"] = b"\xff" + json.dumps(many).encode()
    out["http"]["binary.bin"] = bytes([len(head) // 4]) + head + np.float32(0.5).tobytes()
    raw = json.dumps(body).encode()
    out["http_wire"]["infer.txt"] = (b"POST /v2/models/model/infer HTTP/1.1\r\nhost: x\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(raw), raw))
    out["http_wire"]["get.txt"] = (b"GET /v2/models/model HTTP/1.1\r\nhost: x\r\n\r\n"
                                   b"GET /v2/health/ready HTTP/1.1\r\n\r\n")
    req = pb.ModelInferRequest(model_name="model", id="r1")
    req.parameters["sequence_id"].int64_param = 5
    req.parameters["sequence_start"].bool_param = True
    tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 1, 1])
    del tensor
    req.raw_input_contents.append(np.float32(0.5).tobytes())
    out["grpc"]["infer.pb"] = req.SerializeToString()
    out["line"]["csv.txt"] = b"ts,sin\n2024-01-01,0.5"
    out["line"]["json.txt"] = b'{"k": "A", "a": 1.5, "b": 2}\n[0.5, 1]'
    out["line"]["quoted.txt"] = b'k,a,b\n"Smith, J",1,2'
    return out


def main() -> None:
    for name, files in seeds().items():
        folder = HERE / "corpus" / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        print(f"{name}: {len(files)} seeds")


if __name__ == "__main__":
    main()
