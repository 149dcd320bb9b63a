"""Command lines of the package (light module: heavy imports happen inside each command).

Installed as the ``mlops`` console script (also ``python -m mlops_provider.cli``)::

    mlops validate dags/<model>.yaml [--json] [--strict] [--airflow-url URL | --airflow-db]
    mlops new <model> --task regression|binary|multiclass [--dir .] [--force]
    mlops schema [--output docs/pipeline.schema.json] [--check]
    mlops reproduce <run_id> [--register] [--tracking-uri URI] [--conn-id mlflow_default] [--tolerance 1e-6]

``validate`` checks a pipeline YAML together with its Feast repo before anything runs
(:mod:`mlops_provider.scaffold.check`): exit 0 when valid, 1 when not (``--strict``: warnings too).

``new`` writes a new model from templates (:mod:`mlops_provider.scaffold.new`): ``dags/<model>.yaml``, the
Feast repo ``feature_repo/<model>/`` (feature_store.yaml, definitions.py, transforms.py) and
``tests/test_<model>.py``; the output passes ``mlops validate`` and its own test.

``schema`` writes the JSON Schema of the pipeline YAML and its Markdown key reference (``docs/configuration.md``) (editor completion: the example YAMLs start with
``# yaml-language-server: $schema=../docs/pipeline.schema.json``); ``--check`` exits 1 when the file is stale.

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
import json
import logging
import sys
from pathlib import Path
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


SCHEMA_PATH = Path("docs") / "pipeline.schema.json"


def schema_main(args: argparse.Namespace) -> int:
    from mlops_provider.scaffold import reference_markdown, schema_text

    out = Path(args.output)
    ref = Path(args.reference) if args.reference else out.with_name("configuration.md")
    files = {out: schema_text(), ref: reference_markdown()}
    if args.check:
        stale = [p for p, text in files.items() if (p.read_text(encoding="utf-8") if p.is_file() else None) != text]
        for p in stale:
            print(f"{p} is stale: regenerate it with `mlops schema --output {out}`", file=sys.stderr)
        if stale:
            return 1
        print(f"{out} and {ref} are up to date")
        return 0
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p}")
    return 0


def validate_main(args: argparse.Namespace) -> int:
    from mlops_provider.scaffold.check import validate_pipeline

    reports = [
        validate_pipeline(p, airflow_url=args.airflow_url, airflow_user=args.airflow_user,
                          airflow_password=args.airflow_password, airflow_db=args.airflow_db)
        for p in args.yaml
    ]
    if args.json:
        data = [r.to_dict(strict=args.strict) for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str))
    else:
        print("\n\n".join(r.format(strict=args.strict) for r in reports))
    return 0 if all(r.passed(args.strict) for r in reports) else 1


def new_main(args: argparse.Namespace) -> int:
    from mlops_provider.exceptions import ConfigError
    from mlops_provider.scaffold.new import render_model

    try:
        written = render_model(args.model, args.task, Path(args.dir), force=args.force)
    except (ConfigError, FileExistsError) as e:
        print(f"mlops new: {e}", file=sys.stderr)
        return 2
    root = Path(args.dir)
    for path in written:
        print(f"wrote {path}")
    print(f"\nnext: mlops validate {root / 'dags' / (args.model + '.yaml')}   and   "
          f"pytest {root / 'tests' / ('test_' + args.model + '.py')}\n"
          "then edit the transform and the definitions for your data (docs/adding-a-model.md)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    val = commands.add_parser(
        "validate", help="check a pipeline YAML and its Feast repo together, before anything runs",
        description="Check pipeline YAML(s) and their Feast repos: config, model names, the FeatureService, "
        "training features vs its outputs, the label, the smoke request, the pools. Exit 0 valid, 1 invalid.",
    )
    val.add_argument("yaml", nargs="+", help="pipeline YAML file(s), e.g. dags/churn_risk.yaml")
    val.add_argument("--json", action="store_true", help="print the report as JSON")
    val.add_argument("--strict", action="store_true", help="warnings fail too")
    val.add_argument("--airflow-url", default=None, help="check that the pools exist through this Airflow API")
    val.add_argument("--airflow-user", default=None, help="API user (default $AIRFLOW_USER or admin)")
    val.add_argument("--airflow-password", default=None, help="API password (default $AIRFLOW_PASSWORD)")
    val.add_argument("--airflow-db", action="store_true",
                     help="check that the pools exist in the configured Airflow metadata DB")
    val.set_defaults(func=validate_main)

    new = commands.add_parser(
        "new", help="write a new model (YAML, Feast repo, transform, test) from templates",
        description="Write dags/<model>.yaml, feature_repo/<model>/ and tests/test_<model>.py from templates.",
    )
    new.add_argument("model", help="model name: lowercase letters, digits and '_'")
    new.add_argument("--task", required=True, choices=["binary", "multiclass", "regression"])
    new.add_argument("--dir", default=".", help="project root holding dags/, feature_repo/, tests/ (default .)")
    new.add_argument("--force", action="store_true", help="overwrite existing files")
    new.set_defaults(func=new_main)

    sch = commands.add_parser("schema", help="write the JSON Schema of the pipeline YAML",
                              description="Write the JSON Schema of the pipeline YAML (config.json_schema()).")
    sch.add_argument("--output", default=str(SCHEMA_PATH), help=f"file to write (default {SCHEMA_PATH})")
    sch.add_argument("--reference", default=None,
                     help="the Markdown key reference to write (default configuration.md beside --output)")
    sch.add_argument("--check", action="store_true", help="exit 1 when a file differs instead of writing")
    sch.set_defaults(func=schema_main)

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
    logging.basicConfig(level=logging.WARNING if args.command in ("validate", "schema", "new") else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
