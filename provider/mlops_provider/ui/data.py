"""What the MLOps page shows, read once per request (configs, registry, reports, endpoint, DAG runs).

:class:`RequestData` is created per request *after* authentication and memoizes everything it reads:
the YAML configs (``config.load_configs``, itself cached by content hash), one MLflow client per tracking
store, one object store per ``aws`` connection, each model's registry view, report listings. Reports
and artifacts are read through the runtime's :class:`~mlops_provider.runtime.io.objstore.ObjectStore`
(local paths and ``s3://`` alike; the ``aws`` connection via ``ObjectStoreHook``) or, for an MLflow
artifact store that is neither, through MLflow's artifact download.

Decisions are derived in one place (:func:`effective_decision`): a human's ``mlops.approval.decision=
rejected`` wins over the gate's ``gate.decision=promote`` in every view.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_provider.redact import redact_text, redact_url

#: report kinds a route may serve, each a folder under the model's reports directory
REPORT_KINDS = ("drift", "validation", "gate", "infra_validation")
#: drift report JSONs read for the charts (newest first)
MAX_DRIFT_REPORTS = 30
#: ``gate.*`` version tags that are not metric values (every other numeric ``gate.<name>`` is one)
NOT_METRICS = frozenset({"gate.champion_version", "gate.snapshot_hash", "gate.evaluated_at", "gate.promoted_at",
                         "gate.demoted_at", "gate.report_path", "gate.checks", "gate.failed"})


def dags_folder() -> Path:
    env = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if env:
        return Path(env)
    try:
        from airflow.configuration import conf

        return Path(conf.get("core", "dags_folder"))
    except Exception:  # noqa: BLE001
        return Path("dags")


def effective_decision(tags: dict[str, str]) -> dict[str, str]:
    """``{"state", "label", "why"}`` of a version from its tags; a human rejection always wins.

    state: ``rejected`` (human), ``gate_rejected``, ``approved``, ``promotable``, ``manual``, ``error``,
    ``forced`` (force-promoted), ``not_gated``.
    """
    human = tags.get("mlops.approval.decision")
    gate = tags.get("gate.decision")
    failed = tags.get("gate.failed") or ""
    if human == "rejected":
        by = tags.get("mlops.approval.by") or "a human"
        comment = tags.get("mlops.approval.comment") or ""
        return {"state": "rejected", "label": f"rejected by {by}",
                "why": comment or f"approval rejected at {tags.get('mlops.approval.at', '?')}"}
    if tags.get("mlops.force_promote.reason"):
        return {"state": "forced", "label": f"force-promoted by {tags.get('mlops.force_promote.actor') or '?'}",
                "why": f"{tags['mlops.force_promote.reason']} (gate: {gate or 'not gated'})"}
    if gate == "reject":
        return {"state": "gate_rejected", "label": "rejected by the gate", "why": f"failed: {failed}"}
    if gate == "promote":
        if human == "approved":
            return {"state": "approved", "label": f"approved by {tags.get('mlops.approval.by') or '?'}",
                    "why": tags.get("mlops.approval.comment") or f"gate passed ({tags.get('gate.checks', '')})"}
        return {"state": "promotable", "label": "passed the gate", "why": tags.get("gate.checks", "")}
    if gate in ("manual", "error"):
        return {"state": gate, "label": f"gate: {gate}", "why": tags.get("gate.error", "")}
    return {"state": "not_gated", "label": "not gated", "why": ""}


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


class RequestData:
    """Everything one request reads, memoized (see the module doc)."""

    def __init__(self, dags: Path | None = None) -> None:
        self.dags = dags or dags_folder()
        self._memo: dict[Any, Any] = {}

    def _once(self, key: Any, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    # -------------------------------------------------------------------------------- configs
    def configs(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            from mlops_provider.config import iter_configs
            from mlops_provider.exceptions import ConfigError

            return {c.model: c for _, c in iter_configs(self.dags) if not isinstance(c, ConfigError)}

        return dict(self._once("configs", load))

    def config(self, model: str) -> Any | None:
        return self.configs().get(model)

    # -------------------------------------------------------------------------------- stores
    def store(self, aws_conn_id: str | None) -> Any:
        def make() -> Any:
            from mlops_provider.hooks.objstore import ObjectStoreHook
            from mlops_provider.runtime.io.objstore import ObjectStore

            return ObjectStore(ObjectStoreHook(aws_conn_id).settings)

        return self._once(("store", aws_conn_id), make)

    def tracking(self, cfg: Any) -> Any:
        from mlops_provider.hooks.mlflow import MLflowHook

        return self._once(("tracking", cfg.connections.mlflow, cfg.home),
                          lambda: MLflowHook(cfg.connections.mlflow, home=cfg.home).tracking_config())

    def client(self, cfg: Any) -> tuple[Any | None, str | None]:
        """``(MlflowClient, None)`` or ``(None, why not)``."""
        def make() -> tuple[Any | None, str | None]:
            try:
                tracking = self.tracking(cfg)
                from mlflow import MlflowClient
            except ImportError:
                return None, "MLflow is not installed on the API server (install the provider's [tracking] extra)"
            except Exception as e:  # noqa: BLE001
                return None, f"MLflow settings: {redact_text(e)}"
            for key, value in tracking.credentials.items():
                os.environ.setdefault(key, value)
            return MlflowClient(tracking_uri=tracking.tracking_uri,
                                registry_uri=tracking.registry_uri or tracking.tracking_uri), None

        return tuple(self._once(("client", cfg.model), make))  # type: ignore[return-value]

    # -------------------------------------------------------------------------------- registry
    def registry(self, model: str) -> dict[str, Any]:
        """``{"versions": [...newest first], "aliases": {alias: version}, "error"}``."""
        return dict(self._once(("registry", model), lambda: self._registry(model)))

    def _registry(self, model: str) -> dict[str, Any]:
        cfg = self.config(model)
        out: dict[str, Any] = {"versions": [], "aliases": {}, "error": None, "tracking": None}
        if cfg is None:
            return out
        client, why = self.client(cfg)
        if client is None:
            out["error"] = why
            return out
        try:
            out["tracking"] = redact_url(self.tracking(cfg).tracking_uri)
            try:
                rm = client.get_registered_model(model)
                out["aliases"] = {a: str(v) for a, v in (getattr(rm, "aliases", None) or {}).items()}
            except Exception as e:  # noqa: BLE001 - no model registered yet
                if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                    return out
                raise
            mvs = client.search_model_versions(f"name='{model}'")
        except Exception as e:  # noqa: BLE001 - the page renders without the registry
            out["error"] = f"MLflow registry not readable: {type(e).__name__}: {redact_text(str(e))[:300]}"
            return out
        by_version = {str(v): a for a, v in out["aliases"].items()}
        versions = []
        for mv in sorted(mvs, key=lambda m: int(m.version), reverse=True):
            tags = dict(mv.tags or {})
            versions.append({
                "version": str(mv.version),
                "run_id": mv.run_id,
                "created": int(mv.creation_timestamp or 0),
                "tags": tags,
                "aliases": sorted(a for a, v in out["aliases"].items() if v == str(mv.version)),
                "alias": by_version.get(str(mv.version)),
                "decision": effective_decision(tags),
                "metrics": {k[len("gate."):]: f for k, v in tags.items()
                            if k.startswith("gate.") and k not in NOT_METRICS and (f := _float(v)) is not None},
            })
        out["versions"] = versions
        return out

    def version(self, model: str, version: str) -> dict[str, Any] | None:
        return next((v for v in self.registry(model)["versions"] if v["version"] == str(version)), None)

    # -------------------------------------------------------------------------------- artifacts
    def read_run_artifact(self, cfg: Any, run_id: str, rel: str) -> bytes | None:
        """An artifact of an MLflow run: file:// and s3:// through the object store, else MLflow's download."""
        client, _ = self.client(cfg)
        if client is None:
            return None
        try:
            uri = str(client.get_run(run_id).info.artifact_uri).rstrip("/")
        except Exception:  # noqa: BLE001
            return None
        target = f"{uri}/{rel}"
        try:
            if target.startswith("file://"):
                from urllib.parse import unquote, urlsplit

                return Path(unquote(urlsplit(target).path)).read_bytes()
            if target.startswith("s3://") or target.startswith("/"):
                return bytes(self.store(cfg.connections.aws).read_bytes(target))
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mlops-ui-") as tmp:
                local = client.download_artifacts(run_id, rel, tmp)
                return Path(local).read_bytes()
        except Exception:  # noqa: BLE001 - missing artifact
            return None

    def report_root(self, cfg: Any, kind: str) -> str:
        return str(cfg.report_dir(kind))

    def read_report(self, cfg: Any, kind: str, name: str) -> bytes | None:
        if kind not in REPORT_KINDS or "/" in name or "\\" in name or name.startswith("."):
            return None
        from mlops_provider.runtime.io.objstore import join

        try:
            return bytes(self.store(cfg.connections.aws).read_bytes(join(self.report_root(cfg, kind), name)))
        except Exception:  # noqa: BLE001 - missing / unreadable
            return None

    def verdict(self, model: str, version: str) -> dict[str, Any] | None:
        """The full gate verdict of a version: the report file (local or s3://), else the run's artifact."""
        def load() -> dict[str, Any] | None:
            cfg, mv = self.config(model), self.version(model, version)
            if cfg is None or mv is None:
                return None
            path = mv["tags"].get("gate.report_path")
            if path:
                try:
                    return dict(self.store(cfg.connections.aws).read_json(path))
                except Exception:  # noqa: BLE001 - another host's disk: fall back to MLflow
                    pass
            data = self.read_run_artifact(cfg, mv["run_id"], "gate/verdict.json")
            return json.loads(data) if data else None

        return self._once(("verdict", model, str(version)), load)

    # -------------------------------------------------------------------------------- drift
    def drift_reports(self, model: str) -> list[dict[str, Any]]:
        """Summaries of the newest drift report JSONs (newest first): window, share, per-feature scores, performance."""
        return list(self._once(("drift", model), lambda: self._drift_reports(model)))

    def _drift_reports(self, model: str) -> list[dict[str, Any]]:
        cfg = self.config(model)
        if cfg is None:
            return []
        store = self.store(cfg.connections.aws)
        root = self.report_root(cfg, "drift")
        try:
            listing = store.list(root, "drift__*.json")
        except Exception:  # noqa: BLE001
            return []
        out = []
        for url in sorted(listing, reverse=True)[:MAX_DRIFT_REPORTS]:
            try:
                summary = (store.read_json(url) or {}).get("summary") or {}
            except Exception:  # noqa: BLE001
                continue
            name = url.rstrip("/").rsplit("/", 1)[-1]
            window = summary.get("window") or {}
            html_name = name[: -len(".json")] + ".html"
            out.append({
                "name": name,
                "html": html_name if store.exists(f"{root}/{html_name}") else None,
                "window_start": window.get("start") if isinstance(window, dict) else None,
                "window_end": window.get("end") if isinstance(window, dict) else str(window),
                "model_version": summary.get("model_version"),
                "status": summary.get("status"),
                "drift": bool(summary.get("drift")),
                "share": _float(summary.get("share")),
                "threshold": _float(summary.get("threshold")),
                "n_current": summary.get("n_current"),
                "columns": {c: {"score": _float(i.get("score")), "drifted": bool(i.get("drifted")),
                                "method": i.get("method"), "threshold": _float(i.get("stattest_threshold"))}
                            for c, i in (summary.get("columns") or {}).items() if isinstance(i, dict)},
                "performance": summary.get("performance") or {},
            })
        return out

    # -------------------------------------------------------------------------------- endpoint
    def endpoint(self, model: str) -> dict[str, Any]:
        return dict(self._once(("endpoint", model), lambda: self._endpoint(model)))

    def _endpoint(self, model: str) -> dict[str, Any]:
        cfg = self.config(model)
        if cfg is None:
            return {}
        state_file = cfg.paths.state / "serving" / model / "deployment.json"
        state: dict[str, Any] = {}
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            pass
        url = state.get("front_url") or state.get("url") or f"http://{cfg.serving.host}:{cfg.serving.port}"
        out: dict[str, Any] = {"url": url, "target": cfg.serving.target, "bento_tag": state.get("bento_tag"),
                               "deployed": bool(state), "checks": {}}
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx ships with Airflow
            return out
        for path in ("/readyz", "/health"):
            try:
                r = httpx.get(f"{url.rstrip('/')}{path}", timeout=1.5)
                body = r.text[:300]
                out["checks"][path] = {"status": r.status_code, "ok": r.status_code == 200, "body": body}
            except Exception as e:  # noqa: BLE001 - a stopped server is a state, not an error
                out["checks"][path] = {"status": None, "ok": False, "body": type(e).__name__}
        return out

    # -------------------------------------------------------------------------------- DAG runs
    def training_runs(self, model: str, limit: int = 12) -> list[dict[str, Any]]:
        """The newest runs of ``<model>__training`` with state and note (from Airflow's metadata DB)."""
        cfg = self.config(model)
        if cfg is None:
            return []

        def load() -> list[dict[str, Any]]:
            try:
                from airflow.models.dagrun import DagRun
                from airflow.utils.session import create_session
                from sqlalchemy import select
            except ImportError:  # pragma: no cover
                return []
            dag_id = cfg.dag_id("training")
            try:
                with create_session() as session:
                    runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                           .order_by(DagRun.id.desc()).limit(limit)).all()
                    return [{"dag_id": dag_id, "run_id": r.run_id, "state": str(r.state or ""),
                             "note": r.note or "", "start": r.start_date, "end": r.end_date,
                             "run_after": getattr(r, "run_after", None)} for r in runs]
            except Exception:  # noqa: BLE001 - no metadata DB here (unit tests)
                return []

        return list(self._once(("runs", model), load))


def alias_events(versions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Alias moves recorded on the versions: promotions, force-promotes, rollbacks (newest first)."""
    events = []
    for v in versions:
        t = v["tags"]
        if t.get("gate.promoted_at"):
            events.append({"at": t["gate.promoted_at"], "version": v["version"], "action": "promoted by the gate",
                           "actor": t.get("gate.promoted_by", ""), "reason": t.get("gate.checks", "")})
        for action, label in (("force_promote", "force-promoted"), ("rollback", "rolled back to")):
            if t.get(f"mlops.{action}.at") or t.get(f"mlops.{action}.reason"):
                events.append({"at": t.get(f"mlops.{action}.at", ""), "version": v["version"], "action": label,
                               "actor": t.get(f"mlops.{action}.actor") or t.get(f"mlops.{action}.by", ""),
                               "reason": t.get(f"mlops.{action}.reason", "")})
        if t.get("mlops.approval.decision"):
            events.append({"at": t.get("mlops.approval.at", ""), "version": v["version"],
                           "action": f"approval {t['mlops.approval.decision']}",
                           "actor": t.get("mlops.approval.by", ""), "reason": t.get("mlops.approval.comment", "")})
        if t.get("gate.demoted_at"):
            events.append({"at": t["gate.demoted_at"], "version": v["version"], "action": "demoted",
                           "actor": "", "reason": ""})
    return sorted(events, key=lambda e: e["at"], reverse=True)
