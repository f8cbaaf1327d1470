"""Only those you let in: --token-file (HTTP Authorization: Bearer, gRPC metadata), refused
with 401 / UNAUTHENTICATED before anything runs; TLS on both front ends (--tls-cert,
--tls-key), driven by tritonclient with a self-signed certificate made here (openssl CLI);
a warning when listening beyond loopback without a token."""

from __future__ import annotations

import contextlib
import queue
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from rnnstream.serve import exposure_warning

from .conftest import LEGACY, Reference, get, infer_doc, post, same_bits, serving

pytestmark = pytest.mark.serve

TOKEN = "s3cret-Token_0123456789"  # noqa: S105 (a test token)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(f"other-token\n\n{TOKEN}\n")
    return path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _x(value: float = 0.5) -> np.ndarray:
    return np.full((1, 1, 1), value, np.float32)


def test_http_needs_the_token_and_a_refusal_changes_nothing(token_file):
    ref = Reference(LEGACY)
    url = None
    with serving([LEGACY], "--token-file", str(token_file)) as running:
        url = f"{running.url}/v2/models/model/infer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        status, body = post(url, infer_doc(_x(), seq=1, start=True), good)
        assert status == 200, body
        same_bits(np.array(body["outputs"][0]["data"]), ref.run([1], _x(), start=True)[0, 0])
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            status, body = post(url, infer_doc(_x(9.0), seq=1), headers)
            assert status == 401, headers
            assert "Authorization: Bearer <token>" in body["error"]
        status, body = post(url, infer_doc(_x(0.25), seq=1), {"authorization": f"bearer {TOKEN}"})
        assert status == 200  # the refused requests did not move sequence 1
        same_bits(np.array(body["outputs"][0]["data"]), ref.run([1], _x(0.25))[0, 0])
        assert get(f"{running.url}/v2/health/ready")[0] == 200  # probes stay open
        assert get(f"{running.url}/metrics")[0] == 401
        req = urllib.request.Request(f"{running.url}/metrics", headers=good)  # noqa: S310
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
            assert b'kind="unauthenticated"' in r.read()


def test_grpc_needs_the_token(token_file):
    with serving([LEGACY], "--token-file", str(token_file)) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        inp = grpcclient.InferInput("x", [1, 1, 1], "FP32")
        inp.set_data_from_numpy(_x())
        assert client.is_server_ready()  # health: open
        for headers in (None, {"authorization": "Bearer nope"}):
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                client.infer("model", [inp], sequence_id=3, sequence_start=True,
                             headers=headers)
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                client.get_model_metadata("model", headers=headers)
        good = {"authorization": f"Bearer {TOKEN}"}
        y = client.infer("model", [inp], sequence_id=3, sequence_start=True,
                         headers=good).as_numpy("y")
        same_bits(y, Reference(LEGACY).run([3], _x(), start=True))
        for headers, ok in (({"authorization": "Bearer nope"}, False), (good, True)):
            answers: queue.Queue = queue.Queue()
            client.start_stream(callback=lambda result, error, q=answers: q.put((result, error)),
                                headers=headers)
            # refused at once: the callback has the error (a send may already fail)
            with contextlib.suppress(InferenceServerException):
                client.async_stream_infer("model", [inp], sequence_id=3)
            _, error = answers.get(timeout=30)
            client.stop_stream()
            assert (error is None) == ok, error
            if not ok:
                assert "UNAUTHENTICATED" in str(error.status())
        client.close()


def test_tls_on_both_front_ends_with_tritonclient(certificate, token_file):
    cert, key = certificate
    ref = Reference(LEGACY)
    def auth() -> dict:  # tritonclient's HTTP client adds its own headers to the dict given
        return {"authorization": f"Bearer {TOKEN}"}

    with serving([LEGACY], "--tls-cert", str(cert), "--tls-key", str(key),
                 "--token-file", str(token_file)) as running:
        https = httpclient.InferenceServerClient(
            f"127.0.0.1:{running.http_port}", ssl=True,
            ssl_context_factory=lambda: ssl.create_default_context(cafile=str(cert)))
        inp = httpclient.InferInput("x", [1, 2, 1], "FP32")
        x = np.array([[[0.1], [0.2]]], np.float32)
        inp.set_data_from_numpy(x)
        y = https.infer("model", [inp], sequence_id=8, sequence_start=True,
                        headers=auth()).as_numpy("y")
        same_bits(y, ref.run([8], x, start=True))
        https.close()
        grpcs = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}", ssl=True,
                                                 root_certificates=str(cert))
        ginp = grpcclient.InferInput("x", [1, 1, 1], "FP32")
        ginp.set_data_from_numpy(_x(0.3))
        y = grpcs.infer("model", [ginp], sequence_id=8, headers=auth()).as_numpy("y")
        same_bits(y, ref.run([8], _x(0.3)))
        grpcs.close()
        # plain HTTP to the TLS port gets no answer; an unknown certificate is refused
        with pytest.raises(OSError, match=r"Connection reset|Remote end closed|BadStatusLine|"
                           r"timed out"):
            urllib.request.urlopen(f"http://127.0.0.1:{running.http_port}/v2/health/live",
                                   timeout=10).read()
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://127.0.0.1:{running.http_port}/v2/health/live",
                                   timeout=10).read()


def test_a_warning_when_listening_beyond_loopback_without_a_token():
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):  # noqa: S104
        message = exposure_warning(host, ())
        assert message is not None
        assert "without --token-file" in message
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure_warning(host, ()) is None
    assert exposure_warning("0.0.0.0", ("t",)) is None  # noqa: S104


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    from rnnstream.cli import serve_cmd
    from rnnstream.cli.main import build_parser

    args = build_parser().parse_args(["serve", str(LEGACY), "--tls-cert", "c.pem"])
    assert serve_cmd.run(args) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    empty = tmp_path / "t.txt"
    empty.write_text("\n\n")
    args = build_parser().parse_args(["serve", str(LEGACY), "--token-file", str(empty)])
    assert serve_cmd.run(args) == 1
    assert "no token in it" in capsys.readouterr().err
