"""Command lines of the package (light module: heavy imports happen inside each command).

    python -m mlops_provider.cli reproduce <run_id> [--register] [--tracking-uri URI]
        [--conn-id mlflow_default] [--tolerance 1e-6]

``reproduce`` (``make reproduce RUN=<id>``) retrains an MLflow training run from its recorded snapshot,
config and seed and compares the metrics (:func:`mlops_provider.runtime.training.reproduce.reproduce`).
The tracking store comes from ``--tracking-uri``, else the MLflowHook resolution (connection
``mlflow_default``, then ``$MLFLOW_TRACKING_URI``, then the embedded ``$MLOPS_HOME`` store); a remote
server must answer first (bounded retries, ``MlflowUnreachableError``). Exit status 0 when the metrics
match, 1 when they differ, 2 when the run cannot be reproduced.

Like an operator, this module resolves connections through the hooks and hands runtime code plain settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from mlops_provider.exceptions import MlopsError


def reproduce_main(args: argparse.Namespace) -> int:
    from mlops_provider.hooks.mlflow import MLflowHook, check_reachable
    from mlops_provider.runtime.training.reproduce import format_report, reproduce

    hook = None if args.tracking_uri else MLflowHook(args.conn_id)
    tracking: dict[str, Any] = {"tracking_uri": args.tracking_uri} if hook is None else hook.configure().public()
    print(f"Reproducing MLflow run {args.run_id} against {tracking['tracking_uri']} ...", flush=True)
    try:
        if hook is None:
            check_reachable(str(tracking["tracking_uri"]))
        else:
            hook.wait_until_reachable()
        result = reproduce(args.run_id, tracking=tracking, register=args.register, tolerance=args.tolerance)
    except MlopsError as e:
        print(f"\nCANNOT REPRODUCE {args.run_id}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print()
    print(format_report(result))
    return 0 if result["match"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_provider.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser(
        "reproduce",
        help="retrain an MLflow training run from its recorded snapshot, config and seed, and compare",
        description="Retrain an MLflow training run from its recorded snapshot, config and seed, and compare.",
    )
    rep.add_argument("run_id", help="MLflow run id of the training run to reproduce")
    rep.add_argument("--register", action="store_true", help="register the reproduction as a new version")
    rep.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the MLflowHook's)")
    rep.add_argument("--conn-id", default="mlflow_default", help="Airflow connection of the MLflowHook")
    rep.add_argument("--tolerance", type=float, default=1e-6, help="largest accepted metric difference")
    rep.set_defaults(func=reproduce_main)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
