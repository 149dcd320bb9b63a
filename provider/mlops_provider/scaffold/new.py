"""``mlops new <model> --task ...``: a new model from the text templates in ``templates/``.

Writes, under a project root::

    dags/<model>.yaml                        the pipeline YAML (first line: the JSON Schema for editors)
    feature_repo/<model>/feature_store.yaml  the model's own Feast project, registry and online store
    feature_repo/<model>/feature_store.production.yaml   SQL registry + Redis (the feast connection's
                                             ``fs_yaml_file`` applies to every model's repo)
    feature_repo/<model>/definitions.py      entity, FileSource, FeatureView, RequestSource + on-demand view,
                                             FeatureService <model>_v1
    feature_repo/<model>/transforms.py       build_partitions honouring the transform contract
    feature_repo/<model>/.feastignore        transforms.py is not a definitions file
    tests/test_<model>.py                    the transform, the YAML and a point-in-time join, on synthetic data
    docs/pipeline.schema.json                only when absent (what the YAML's first line points at)

Templates are plain text with ``{{name}}`` placeholders (no template engine: the files hold ``${VAR}`` and
``{...}`` of their own). The task decides the label's type, its contract and the gate's metrics.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from mlops_provider.exceptions import ConfigError

TEMPLATES = Path(__file__).parent / "templates"
TASKS = ("binary", "multiclass", "regression")
LABEL = "target"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_LABEL_CONTRACT = {
    "binary": "{dtype: int, nullable: false, allowed: [0, 1]}",
    "multiclass": "{dtype: str, nullable: false, allowed: [low, medium, high]}",
    "regression": "{dtype: float, nullable: false}",
}
_CSV_LABEL = {"binary": "", "multiclass": ', LABEL: {"dtype": "str"}', "regression": ""}
_LABEL_CAST = {
    "binary": '    out[LABEL] = out[LABEL].astype("int64")',
    "multiclass": "    out[LABEL] = out[LABEL].astype(str)",
    "regression": '    out[LABEL] = out[LABEL].astype("float64")',
}
_SYNTHETIC_LABEL = {
    "binary": '    df["target"] = (score > 0).astype("int64")',
    "multiclass": '    df["target"] = np.select([score < -0.7, score > 0.7], ["low", "high"], "medium")',
    "regression": '    df["target"] = 10.0 + 3.0 * score',
}
_GATE = {
    "binary": """  primary_metric: roc_auc
  floors: {roc_auc: 0.6}           # absolute; a first model (no champion) faces the floors only
  max_regression: {roc_auc: 0.01, log_loss: 0.02}   # tolerated change vs the champion
  slices:
    - {column: segment, metric: roc_auc, max_regression: 0.05, min_rows: 50}
  calibration: {max_ece: 0.2, bins: 10}""",
    "multiclass": """  primary_metric: log_loss
  floors: {log_loss: 1.05}         # a ceiling (lower is better): ln(3) = 1.10 is a uniform guess over 3 classes
  max_regression: {log_loss: 0.02, macro_f1: 0.03}
  slices:
    - {column: segment, metric: log_loss, max_regression: 0.1, min_rows: 50}""",
    "regression": """  primary_metric: rmse
  floors: {}                       # add {rmse: <your baseline's rmse>} once you know it (a ceiling)
  max_regression: {rmse: 0.5, mae: 0.5}   # in label units: tolerated increase vs the champion
  slices:
    - {column: segment, metric: rmse, max_regression: 1.0, min_rows: 50}""",
}


def training_fields() -> set[str]:
    """The ``training`` keys this provider version knows (task types arrived with issue 13)."""
    from mlops_provider.specs import TrainingSpec

    return set(TrainingSpec.__dataclass_fields__)


def render(name: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", text)
    if left:
        raise ConfigError(f"template {name}: placeholders without a value: {sorted(set(left))}")
    return text


def values_for(model: str, task: str) -> dict[str, str]:
    """The placeholder values of one model and task. ConfigError for a bad name or an unsupported task."""
    if not _NAME.match(model):
        raise ConfigError(f"model {model!r}: use lowercase letters, digits and '_' (it becomes DAG ids and "
                          "Python names), starting with a letter")
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: expected one of {list(TASKS)}")
    fields = training_fields()
    if "task" not in fields and task != "binary":
        raise ConfigError(
            f"this provider version has no task types (no 'training.task' key): it trains binary classifiers "
            f"only, so --task {task} would write a YAML it cannot load. Task types arrive with issue 13."
        )
    task_line = f"  task: {task}\n" if "task" in fields else ""
    if task == "multiclass" and "classes" in fields:
        task_line += "  classes: [low, medium, high]\n"
    return {
        "model": model,
        "task": task,
        "label": LABEL,
        "description": f"{task} model {model} (generated by mlops new; describe what it predicts)",
        "label_contract": _LABEL_CONTRACT[task],
        "csv_label": _CSV_LABEL[task],
        "label_cast": _LABEL_CAST[task],
        "synthetic_label": _SYNTHETIC_LABEL[task],
        "task_line": task_line,
        "gate": _GATE[task],
        "port": str(3200 + zlib.crc32(model.encode()) % 700),  # the examples use 3000 and 3100
    }


def render_model(model: str, task: str, root: str | Path, *, force: bool = False) -> list[Path]:
    """Write the files of the module docstring under ``root``; returns their paths.

    Raises ConfigError (bad name / task) or FileExistsError (a file exists and ``force`` is false) before
    writing anything.
    """
    values = values_for(model, task)
    root = Path(root)
    repo = root / "feature_repo" / model
    files = {
        root / "dags" / f"{model}.yaml": render("pipeline.yaml.tmpl", values),
        repo / "feature_store.yaml": render("feature_store.yaml.tmpl", values),
        repo / "feature_store.production.yaml": render("feature_store.production.yaml.tmpl", values),
        repo / "definitions.py": render("definitions.py.tmpl", values),
        repo / "transforms.py": render("transforms.py.tmpl", values),
        repo / ".feastignore": render("feastignore.tmpl", values),
        root / "tests" / f"test_{model}.py": render("test_model.py.tmpl", values),
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --force to overwrite")
    schema = root / "docs" / "pipeline.schema.json"
    if not schema.exists():
        from mlops_provider.scaffold import schema_text

        files[schema] = schema_text()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


__all__ = ["TASKS", "render", "render_model", "values_for"]
