"""`histoflow serve-model`: MLflow's scoring server from the project, with clean 4xx answers."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from histoflow.registry.serving import client_error
from servers import Server, free_port

pytestmark = pytest.mark.slow


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _images(*values: str) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["image"], "data": [[v] for v in values]}}
    ).encode()


def test_serve_model_answers_from_the_project_and_refuses_bad_input_cleanly(
    trained_project, tmp_path, bin_dir
):
    port = free_port()
    server = Server(
        [f"{bin_dir}/histoflow", "serve-model", "--port", str(port)],
        log=tmp_path / "serve.log",
        cwd=trained_project,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    tile = next((trained_project / "data").rglob("*.png"))
    try:
        server.wait_http(f"http://127.0.0.1:{port}/ping", timeout=300)
        status, good = _post(url, _images(base64.b64encode(tile.read_bytes()).decode()))
        text = base64.b64encode(b"just some notes, not an image").decode()
        answers = {
            "text file": _post(url, _images(base64.b64encode(tile.read_bytes()).decode(), text)),
            "bad base64": _post(url, _images("%%% not base64 %%%")),
            "not JSON": _post(url, b"{this is not json"),
        }
    finally:
        server.stop()

    assert status == 200 and good["predictions"][0]["label"] in {
        "adipose",
        "lymphocytes",
        "stroma",
    }
    # The conformal set comes with every answer (#14): class names joined by "|", and its size.
    answer = good["predictions"][0]
    in_set = answer["prediction_set"].split("|")
    assert set(in_set) <= {"adipose", "lymphocytes", "stroma"}
    assert answer["set_size"] == len(in_set) >= 1
    for what, (status, answer) in answers.items():
        assert status == 400, (what, answer)
        assert set(answer) == {"error_code", "message"}, (what, answer)
        text_of = json.dumps(answer)
        assert "Traceback" not in text_of and "site-packages" not in text_of, (what, answer)
        assert str(trained_project) not in text_of and str(bin_dir) not in text_of
    assert "row 1: not an image" in answers["text file"][1]["message"]
    assert "row 0: 'image' is not base64" in answers["bad base64"][1]["message"]
    assert not (trained_project / "mlflow.db").exists()  # the project's store, no stray one


def test_server_errors_tell_the_client_nothing_of_the_server():
    body = json.dumps(
        {"error_code": "INTERNAL_ERROR", "message": "boom", "stack_trace": "File /srv/x.py"}
    ).encode()
    status, answer = client_error(500, body)
    assert status == 500 and "/srv" not in json.dumps(answer) and "boom" not in answer["message"]
