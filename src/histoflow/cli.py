"""The ``histoflow`` command: data, stages, the training flow, prediction and monitoring.

Run it from the project root (the folder holding ``dvc.yaml`` and ``params.yaml``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_environment()
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("histoflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI edge: every failure becomes one clear message
        if os.environ.get("HISTOFLOW_DEBUG"):
            raise
        print(f"histoflow: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="histoflow", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file (default: params.yaml)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="datasets").add_subparsers(required=True, metavar="ACTION")
    synth = data.add_parser("synth", help="generate the deterministic synthetic H&E tile dataset")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--classes", type=int, default=6)
    synth.add_argument("--per-class", type=int, default=80)
    synth.add_argument("--size", type=int, default=64, help="tile size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--stain-shift", type=float, default=0.0, help="0 = none; 1 = a clearly different lab"
    )
    synth.add_argument("--patients-per-class", type=int, help="default: min(8, per-class)")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(func=_data_synth)

    standin = data.add_parser("standin", help="a synthetic stand-in for a recipe's dataset")
    standin.add_argument("kind", help="brats_path, breakhis, brain_mri or stroke")
    standin.add_argument("--out", type=Path, required=True)
    standin.add_argument("--per-class", type=int, default=24)
    standin.add_argument("--size", type=int, default=64)
    standin.add_argument("--seed", type=int, default=0)
    standin.add_argument("--overwrite", action="store_true")
    standin.set_defaults(func=_data_standin)

    imp = data.add_parser("import", help="convert a public dataset format into histoflow's layout")
    imp.add_argument("format", help="folder, csv, medmnist, breakhis or pcam")
    imp.add_argument("src", type=Path, help="source folder or file")
    imp.add_argument("--out", type=Path, required=True, help="e.g. data (then: dvc add data)")
    imp.add_argument("--class-names", help="comma-separated class names (medmnist)")
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_data_import)

    stage = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name")
    stage.set_defaults(func=_stage)

    run = sub.add_parser(
        "run", help="the training flow: DVC stages under Prefect, then MLflow registration"
    )
    run.add_argument("--force", action="store_true", help="re-run every stage even if unchanged")
    run.add_argument("--recipe", type=Path, help="apply recipes/NAME.yaml to params.yaml first")
    run.set_defaults(func=_run)

    recipe = sub.add_parser("recipe", help="write a recipe's params into params.yaml")
    recipe.add_argument("file", type=Path, help="e.g. recipes/brain_mri.yaml")
    recipe.set_defaults(func=_recipe)

    predict = sub.add_parser(
        "predict", help="classify image files, folders or globs with a registered model"
    )
    predict.add_argument("paths", nargs="+", help="files, folders (searched recursively), globs")
    predict.add_argument("--model", default="models:/histoflow@champion")
    predict.add_argument("--out", type=Path, help="write a CSV or JSON file (default: print)")
    predict.add_argument(
        "--format", choices=("csv", "json"), help="output format (default: from --out's suffix)"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="images per model call")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=_predict)

    reg = sub.add_parser("registry", help="the MLflow model registry: status, promote, rollback")
    reg_sub = reg.add_subparsers(required=True, metavar="ACTION")
    reg_status = reg_sub.add_parser("status", help="champion and challenger with their metrics")
    reg_status.add_argument("--json", action="store_true", help="print JSON")
    reg_status.set_defaults(func=_registry_status)
    reg_promote = reg_sub.add_parser(
        "promote", help="make VERSION champion by hand (the rules' verdict is recorded with it)"
    )
    reg_promote.add_argument("version")
    reg_promote.add_argument("--note", default="", help="why, recorded as a tag")
    reg_promote.add_argument(
        "--by-rule", action="store_true", help="promote only if the params.yaml rules allow"
    )
    reg_promote.set_defaults(func=_registry_promote)
    reg_rollback = reg_sub.add_parser("rollback", help="give champion back to the previous one")
    reg_rollback.add_argument("--note", default="", help="why, recorded as a tag")
    reg_rollback.set_defaults(func=_registry_rollback)

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

    monitor = sub.add_parser("monitor", help="drift report for a folder of new images (or --inbox)")
    monitor.add_argument("batch", type=Path, nargs="?")
    monitor.add_argument(
        "--inbox", action="store_true", help="report on each new folder of monitor.inbox"
    )
    monitor.add_argument("--model", default="models:/histoflow@champion")
    monitor.set_defaults(func=_monitor)
    return parser


def _data_synth(args: argparse.Namespace) -> None:
    from histoflow.data.synthetic import generate

    manifest = generate(
        args.out,
        classes=args.classes,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        stain_shift=args.stain_shift,
        patients_per_class=args.patients_per_class,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.classes * args.per_class} tiles and {manifest}")


def _data_standin(args: argparse.Namespace) -> None:
    from histoflow.data.synthetic.standins import make_standin

    manifest = make_standin(
        args.kind,
        args.out,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote the {args.kind} stand-in: {manifest}")


def _data_import(args: argparse.Namespace) -> None:
    from histoflow.data.ingest import import_dataset

    names = args.class_names.split(",") if args.class_names else None
    manifest = import_dataset(
        args.format, args.src, args.out, overwrite=args.overwrite, class_names=names
    )
    print(f"wrote {manifest}; record it with `dvc add {args.out}`")


def _stage(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.stages import get_stage, run_stage

    get_stage(args.name)  # an unknown name fails before params are read
    cfg = load_params(args.params)
    metrics = run_stage(args.name, cfg)
    if args.name == "evaluate":
        from histoflow.registry.experiments import experiment_name, log_experiment

        if name := experiment_name():  # inside `dvc exp run`: record the sweep point
            log_experiment(cfg, metrics, name)
    print(
        json.dumps(
            {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}, default=str
        )
    )


def _recipe(args: argparse.Namespace) -> None:
    from histoflow.recipes import apply_recipe

    changed = apply_recipe(args.file, args.params)
    print(
        f"{args.params}: {len(changed)} keys set from {args.file}"
        + "".join(f"\n  {key}" for key in changed)
    )


def _run(args: argparse.Namespace) -> None:
    if args.recipe:
        _recipe(argparse.Namespace(file=args.recipe, params=args.params))
    flows = _load_flows("training")
    result = flows.training(root=str(Path.cwd()), force=args.force)
    print(json.dumps(result, indent=2, default=str))


def _predict(args: argparse.Namespace) -> None:
    from histoflow.predict import predict_paths, write_predictions

    table = predict_paths(
        args.paths,
        model_uri=args.model,
        root=Path.cwd(),
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    fmt = args.format or (
        "json" if args.out is not None and args.out.suffix.lower() == ".json" else "csv"
    )
    if args.out:
        write_predictions(table, args.out, fmt)
        print(f"wrote {len(table)} predictions to {args.out}", file=sys.stderr)
    elif args.format == "json":
        print(table.to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(
            table.drop(
                columns=[c for c in table if c.startswith("prob_") or c == "caption"]
            ).to_string(index=False)
        )


def _registry_status(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.registry import status

    report = status(load_params(args.params).registry, Path.cwd())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"{report['model']} at {report['tracking_uri']}")
    for alias in ("champion", "challenger"):
        entry = report[alias]
        if entry is None:
            print(f"  {alias:<10} none")
            continue
        details = "  ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in entry.items()
            if k not in ("version", "run_id") and v is not None and not k.startswith("promotion.")
        )
        print(f"  {alias:<10} v{entry['version']}  {details}")
        for key in ("promotion.decision", "promotion.reason"):
            if key in entry:
                print(f"  {'':<10} {key.split('.')[1]}: {entry[key]}")
    print(f"  history    {' -> '.join('v' + v for v in report['history']) or 'none'}")


def _registry_promote(args: argparse.Namespace) -> int:
    from histoflow.config import load_params
    from histoflow.registry import promote, promote_by_hand

    cfg = load_params(args.params).registry
    if args.by_rule:
        decision = promote(cfg, args.version, Path.cwd())
    else:
        decision = promote_by_hand(cfg, args.version, Path.cwd(), note=args.note)
    verdict = "champion" if decision.promoted else "not promoted"
    print(f"{cfg.model_name} v{decision.version}: {verdict}: {decision.reason}")
    return 0 if decision.promoted else 3


def _registry_rollback(args: argparse.Namespace) -> None:
    from histoflow.config import load_params
    from histoflow.registry import rollback

    cfg = load_params(args.params).registry
    demoted, restored = rollback(cfg, Path.cwd(), note=args.note)
    print(f"{cfg.model_name}: champion v{demoted} -> v{restored}")


def _server(args: argparse.Namespace) -> int:
    import subprocess

    cmd = [_venv_tool("prefect"), "server", "start", "--host", args.host, "--port", str(args.port)]
    print(
        f"Prefect server on http://{args.host}:{args.port} (state in {os.environ['PREFECT_HOME']}); "
        f"then: PREFECT_API_URL=http://{args.host}:{args.port}/api histoflow serve",
        file=sys.stderr,
    )
    return subprocess.call(cmd)


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
    deployments = _load_flows("deployments")
    print(f"serving histoflow deployments against {api} (Ctrl-C stops)", file=sys.stderr)
    deployments.main([str(Path.cwd()), str(args.params)])


def _venv_tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def _monitor(args: argparse.Namespace) -> None:
    flows = _load_flows("monitoring")
    if args.inbox == (args.batch is not None):
        raise ValueError("give either a batch folder or --inbox")
    if args.inbox:
        result = flows.monitor_inbox(
            root=str(Path.cwd()), params_file=str(args.params), model_uri=args.model
        )
        print(json.dumps(result, indent=2, default=str))
        return
    result = flows.monitoring(
        batch_dir=str(args.batch),
        root=str(Path.cwd()),
        params_file=str(args.params),
        model_uri=args.model,
    )
    print(json.dumps(result, indent=2, default=str))


def _load_flows(name: str):
    """Import ``flows/NAME.py`` of the project in the working directory."""
    path = Path.cwd() / "flows" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run histoflow from the project root (where dvc.yaml is)"
        )
    spec = importlib.util.spec_from_file_location(f"histoflow_flows_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quiet_environment() -> None:
    # Project-local Prefect state (runs appear in `make ui`), no telemetry: this may be offline.
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


if __name__ == "__main__":
    sys.exit(main())
