"""``histoflow stage``, ``run`` and ``recipe``: one stage, the training flow, a recipe's params."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from histoflow.project import load_flow

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``histoflow`` parser."""
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
    from histoflow.config import load_params
    from histoflow.orchestration import prefect_server, quiet_console

    if args.recipe:
        _recipe(argparse.Namespace(file=args.recipe, params=args.params))
    load_params(args.params)  # a bad params file fails here, in well under a second
    with prefect_server(Path.cwd()):
        flows = load_flow("training", Path.cwd())
        quiet_console()
        result = flows.training(root=str(Path.cwd()), force=args.force)
    print(json.dumps(result, indent=2, default=str))
