"""``histoflow server``, ``serve``, ``serve-model`` and ``monitor``: Prefect, REST, drift reports."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from histoflow.project import load_flow

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
    server = sub.add_parser(
        "server", help="start a Prefect server on 127.0.0.1 (SQLite in .prefect/) for `serve`"
    )
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=4200)
    server.set_defaults(func=_server)
    serve = sub.add_parser(
        "serve", help="serve the nightly-training and inbox-monitoring deployments until stopped"
    )
    serve.add_argument(
        "--api",
        default=None,
        help="Prefect API URL (default: $PREFECT_API_URL, else http://127.0.0.1:4200/api)",
    )
    serve.set_defaults(func=_serve)

    serve_model = sub.add_parser(
        "serve-model", help="serve a registered model over REST (MLflow's scoring server)"
    )
    serve_model.add_argument("--model", default="models:/histoflow@champion")
    serve_model.add_argument("--host", default="127.0.0.1")
    serve_model.add_argument("--port", type=int, default=5001)
    serve_model.set_defaults(func=_serve_model)

    monitor = sub.add_parser("monitor", help="drift report for a folder of new images (or --inbox)")
    monitor.add_argument("batch", type=Path, nargs="?")
    monitor.add_argument(
        "--inbox", action="store_true", help="report on each new folder of monitor.inbox"
    )
    monitor.add_argument("--model", default="models:/histoflow@champion")
    monitor.set_defaults(func=_monitor)


def _server(args: argparse.Namespace) -> None:
    cmd = [_venv_tool("prefect"), "server", "start", "--host", args.host, "--port", str(args.port)]
    print(
        f"Prefect server on http://{args.host}:{args.port} (state in {os.environ['PREFECT_HOME']}); "
        f"then: PREFECT_API_URL=http://{args.host}:{args.port}/api histoflow serve",
        file=sys.stderr,
        flush=True,
    )
    # The server replaces this process, so a signal to it (kill -TERM, Ctrl-C) stops the
    # server itself: no Prefect server is left listening behind a dead `histoflow server`.
    os.execvp(cmd[0], cmd)


def _serve(args: argparse.Namespace) -> None:
    import urllib.request

    api = args.api or os.environ.get("PREFECT_API_URL") or "http://127.0.0.1:4200/api"
    try:
        urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=5).read()
    except OSError as exc:
        raise ConnectionError(
            f"no Prefect server answers at {api} ({exc}); start one with `histoflow server` "
            "(or `prefect server start`), or pass --api / set PREFECT_API_URL"
        ) from None
    os.environ["PREFECT_API_URL"] = api
    deployments = load_flow("deployments", Path.cwd())
    print(f"serving histoflow deployments against {api} (Ctrl-C stops)", file=sys.stderr)
    deployments.main([str(Path.cwd()), str(args.params)])


def _serve_model(args: argparse.Namespace) -> None:
    from histoflow.registry.serving import serve_model

    print(
        f"loading {args.model}; then POST to http://{args.host}:{args.port}/invocations "
        "(Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    serve_model(args.model, Path.cwd(), host=args.host, port=args.port)


def _venv_tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def _monitor(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.orchestration import prefect_server, quiet_console

    if args.inbox == (args.batch is not None):
        raise ValueError("give either a batch folder or --inbox")
    load_params(args.params)  # a bad params file fails before any server starts
    if args.batch is not None and not args.batch.is_dir():
        raise FileNotFoundError(f"{args.batch}: no such folder of images to monitor")
    with prefect_server(Path.cwd()):
        flows = load_flow("monitoring", Path.cwd())
        quiet_console()
        if args.inbox:
            result = flows.monitor_inbox(
                root=str(Path.cwd()), params_file=str(args.params), model_uri=args.model
            )
        else:
            result = flows.monitoring(
                batch_dir=str(args.batch),
                root=str(Path.cwd()),
                params_file=str(args.params),
                model_uri=args.model,
            )
    print(json.dumps(result, indent=2, default=str))
