"""Serving a registered model over REST: MLflow's scoring server, from the project, clean errors.

``mlflow models serve`` run by hand resolves ``models:/`` against MLflow's default store (an
``mlflow.db`` in the working directory, created if missing), not the project's, and answers bad
input with its generic message and the server's stack trace (file paths included). This runs the
same scoring app (MLflow's, unchanged: ``/invocations``, ``/ping``, ``/version``) against the
project's tracking store, and rewrites every error answer to ``{"error_code", "message"}``:
histoflow's own message for bad input (which row, what is wrong), a generic one for anything
else, and the details only in the server's log.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

__all__ = ["client_error", "scoring_app", "serve_model"]

_log = logging.getLogger("histoflow.serving")
# MLflow prefixes a model's own error with the whole input it was given; the client sent that.
_ECHO = re.compile(r"^Failed to predict data .*?\nError: ", re.DOTALL)


def serve_model(model_uri: str, root: Path, *, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Load ``model_uri`` from the project's tracking store and serve it until stopped.

    Raises:
        FileNotFoundError: no such registered model or alias (from loading).
    """
    import uvicorn

    from histoflow.registry.mlflow_registry import load_pyfunc

    app = scoring_app(load_pyfunc(model_uri, root))  # the project's store; clear when missing
    _log.warning("serving %s on http://%s:%s/invocations (Ctrl-C stops)", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def scoring_app(pyfunc_model):
    """MLflow's scoring app for ``pyfunc_model``, with every error answer made clean."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(pyfunc_model)

    @app.middleware("http")
    async def clean_errors(request: Request, call_next):
        response = await call_next(request)
        if response.status_code < 400:
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        status, payload = client_error(response.status_code, body)
        _log.warning("%s %s -> %s: %s", request.method, request.url.path, status, body[:4000])
        return JSONResponse(payload, status_code=status)

    return app


def client_error(status: int, body: bytes) -> tuple[int, dict]:
    """What a client is told about an error answer of MLflow's scoring app: no stack trace.

    Bad input (4xx) keeps its message, without MLflow's echo of the whole input; a server
    error (5xx, e.g. an exception in the model) becomes a generic message.

    Returns:
        The status code and ``{"error_code": ..., "message": ...}``.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {"message": body.decode("utf-8", errors="replace")}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    if status >= 500:
        return status, {
            "error_code": "INTERNAL_ERROR",
            "message": "the model could not answer this request; the server log has the details",
        }
    message = _ECHO.sub("", str(payload.get("message", "")).strip())
    return status, {"error_code": payload.get("error_code", "BAD_REQUEST"), "message": message}
