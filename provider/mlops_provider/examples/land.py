"""Feed a model's landing zone with example data, the way an upstream system would (``make land``).

    python -m mlops_provider.examples.land --model flights_delay --months 1-6 [--dags dags]

Writes the example's monthly files (atomically: watchers never see half a file) into the model's landing
path from its YAML (default ``$MLOPS_HOME/landing/<model>``); the DataArrivalTrigger of the running
Airflow picks them up and the scheduler drives the loop. Only models with an example loader here can be
landed (``LOADERS``); an ``s3://`` landing path is refused (copy the files with your S3 tools instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def parse_months(text: str) -> list[int]:
    """``"1-6"`` -> [1..6]; ``"7,8"``; ``"1-3,5"``; every month in 1..12."""
    months: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if not (1 <= a <= b <= 12):
            raise ValueError(f"months {part!r}: use numbers 1-12, e.g. 1-6 or 7,8")
        months.extend(range(a, b + 1))
    return sorted(set(months))


def _flights(landing: Path, months: list[int], first: bool) -> list[str]:
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

    out = [write_landing_planes(landing)] if first else []
    for m in months:
        out.extend(write_landing_month(landing, 2013, m))
    return out


#: model -> loader(landing dir, months, also the static tables) of the examples shipped here
LOADERS: dict[str, Callable[[Path, list[int], bool], list[str]]] = {"flights_delay": _flights}


def landing_path(model: str, dags: Path) -> str:
    from mlops_provider.config import load_configs
    from mlops_provider.paths import ModelPaths

    for cfg in load_configs(dags):
        if cfg.model == model:
            return cfg.landing_path
    return str(ModelPaths.for_model(model).landing)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlops_provider.examples.land", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="flights_delay", help=f"one of {sorted(LOADERS)}")
    p.add_argument("--months", default="1-6", help="e.g. 1-6, 7,8")
    p.add_argument("--dags", default="dags", help="folder of the pipeline YAMLs (for the landing path)")
    args = p.parse_args(argv)
    if args.model not in LOADERS:
        print(f"no example loader for model {args.model!r}; examples: {', '.join(sorted(LOADERS))}", file=sys.stderr)
        return 2
    months = parse_months(args.months)
    target = landing_path(args.model, Path(args.dags))
    if "://" in target:
        print(f"the landing path of {args.model} is {target}: land local files and copy them there", file=sys.stderr)
        return 2
    landing = Path(target)
    landing.mkdir(parents=True, exist_ok=True)
    first = not any(landing.iterdir())
    files = LOADERS[args.model](landing, months, first)
    print(f"landed {len(files)} file(s) for {args.model} (months {months}) in {landing}")
    for f in files:
        print(f"  {f}")
    print("The running Airflow's DataArrivalTrigger picks them up (make airflow-ui; the features DAG runs next).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
