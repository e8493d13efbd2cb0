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
        "predict", help="classify image files or folders with a registered model"
    )
    predict.add_argument("paths", nargs="+", type=Path)
    predict.add_argument("--model", default="models:/histoflow@champion")
    predict.add_argument("--out", type=Path, help="write a CSV here (default: print)")
    predict.set_defaults(func=_predict)

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
    from histoflow.data.standins import make_standin

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
    from histoflow.data.importers import import_dataset

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
    from histoflow.predict import predict_paths

    table = predict_paths(args.paths, model_uri=args.model, root=Path.cwd())
    if args.out:
        from histoflow.io import atomic_path

        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {len(table)} predictions to {args.out}")
    else:
        print(
            table.drop(
                columns=[c for c in table if c.startswith("prob_") or c == "caption"]
            ).to_string(index=False)
        )


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
