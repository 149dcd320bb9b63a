"""Server-rendered HTML of the MLOps page and the artifact pages (standard library only).

The look follows Airflow 3's UI (its colours, a system font stack, bordered tables, state badges) with no
external asset: styles inline, charts inline SVG (:mod:`.charts`). Links to Airflow pages use
``target="_top"`` so they open Airflow itself, not a page nested in the plugin's iframe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from mlops_provider.ui import charts
from mlops_provider.ui.data import RequestData, alias_events

CSS = """
:root{--fg:#1a202c;--muted:#4a5568;--border:#e2e8f0;--bg:#fff;--panel:#f7fafc;--brand:#017cee;
--ok:#2f9e44;--bad:#c92a2a;--warn:#e8590c;--skip:#d6336c;--info:#1098ad}
@media (prefers-color-scheme: dark){:root{--fg:#e2e8f0;--muted:#a0aec0;--border:#2d3748;--bg:#1a202c;
--panel:#171923}}
*{box-sizing:border-box}body{margin:0;padding:16px 24px;background:var(--bg);color:var(--fg);
font:14px/1.45 Inter,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;padding-top:8px;border-top:1px solid var(--border)}
h3{font-size:15px;margin:18px 0 6px}a{color:var(--brand);text-decoration:none}a:hover{text-decoration:underline}
.muted{color:var(--muted)}.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid var(--border);padding:6px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
background:var(--muted);white-space:nowrap}
.b-promotable,.b-approved,.b-success,.b-ok,.b-champion{background:var(--ok)}
.b-rejected,.b-gate_rejected,.b-failed,.b-error,.b-down,.b-drift{background:var(--bad)}
.b-forced,.b-manual,.b-warn{background:var(--warn)}.b-skipped,.b-declined{background:var(--skip)}
.b-running,.b-queued,.b-previous,.b-info{background:var(--info)}
.card{border:1px solid var(--border);border-radius:8px;padding:12px 16px;background:var(--panel);min-width:220px}
.card .v{font-size:20px;font-weight:600}.nav a{margin-right:14px}
svg.chart{background:var(--bg);border:1px solid var(--border);border-radius:8px;max-width:100%;height:auto}
svg .grid{stroke:var(--border)}svg .ref{stroke:var(--bad);stroke-dasharray:4 3}
svg .tick{font-size:10px;fill:var(--muted)}svg .chart-title{font-size:12px;font-weight:600;fill:var(--fg)}
.chart.empty{border:1px dashed var(--border);border-radius:8px;padding:24px;color:var(--muted);width:560px}
details summary{cursor:pointer}code{font-size:12px}.err{color:var(--bad)}
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")


def badge(state: str, text: str | None = None) -> str:
    return f"<span class='badge b-{escape(state)}'>{escape(text or state)}</span>"


def _ts(ms_or_iso: Any) -> str:
    if not ms_or_iso:
        return ""
    if isinstance(ms_or_iso, int | float):
        return datetime.fromtimestamp(ms_or_iso / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(ms_or_iso, datetime):
        return ms_or_iso.strftime("%Y-%m-%d %H:%M")
    return escape(str(ms_or_iso)[:16].replace("T", " "))


def _num(v: Any) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return "—"


def airflow_link(base: str, path: str, text: str) -> str:
    """A link to an Airflow UI page, opened at top level (not inside the plugin's iframe)."""
    return f"<a href='{escape(base + path)}' target='_top'>{escape(text)}</a>"


def dag_path(dag_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}"


def run_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


# ----------------------------------------------------------------------------------------- index
def index(data: RequestData, models: list[str], base: str, prefix: str, user: str) -> str:
    parts = [f"<h1>MLOps</h1><p class='muted'>Signed in as {escape(user)}. Models from "
             f"<code>{escape(str(data.dags))}</code>. "
             f"<a href='{prefix}/docs'>API</a></p>"]
    if not models:
        parts.append("<p>No model pipelines you may read (no YAML in the DAGs folder, or no DAG permission).</p>")
    rows = []
    for m in models:
        cfg = data.config(m)
        reg = data.registry(m)
        champ = reg["aliases"].get("champion")
        latest = reg["versions"][0] if reg["versions"] else None
        ep = data.endpoint(m)
        ready = (ep.get("checks") or {}).get("/readyz", {})
        drift = data.drift_reports(m)
        rows.append(
            f"<tr><td><a href='#model-{escape(m)}'>{escape(m)}</a></td>"
            f"<td>{'v' + escape(champ) if champ else '<span class=muted>none yet</span>'}</td>"
            f"<td>{badge(latest['decision']['state'], 'v' + latest['version'] + ': ' + latest['decision']['label']) if latest else ''}</td>"
            f"<td>{badge('ok' if ready.get('ok') else 'down', 'ready' if ready.get('ok') else 'not serving')} "
            f"<code>{escape(ep.get('url', ''))}</code></td>"
            f"<td>{badge('drift' if drift and drift[0]['drift'] else 'ok', 'drift' if drift and drift[0]['drift'] else 'no drift') if drift else '<span class=muted>no report</span>'}</td>"
            f"<td>{escape(cfg.description if cfg else '')}</td></tr>")
    if rows:
        parts.append("<table id='models'><tr><th>model</th><th>champion</th><th>latest version</th>"
                     "<th>endpoint</th><th>drift</th><th>description</th></tr>" + "".join(rows) + "</table>")
    for m in models:
        parts.append(model_section(data, m, base, prefix))
    return page("MLOps", "".join(parts))


# ----------------------------------------------------------------------------------------- model
def model_section(data: RequestData, model: str, base: str, prefix: str) -> str:
    cfg = data.config(model)
    if cfg is None:
        return ""
    reg = data.registry(model)
    versions = reg["versions"]
    mp = f"{prefix}/models/{quote(model, safe='')}"
    out = [f"<h2 id='model-{escape(model)}'>{escape(model)}</h2><p class='muted'>{escape(cfg.description)}</p>"]
    dags = " ".join(airflow_link(base, dag_path(cfg.dag_id(k)), k) for k in ("features", "training", "deploy",
                                                                                "monitor"))
    manual = " ".join(airflow_link(base, dag_path(cfg.dag_id(k)), f"{k.replace('_', '-')} (trigger form)")
                      for k in ("force_promote", "rollback"))
    out.append(f"<p class='nav'>DAGs: {dags} &nbsp;|&nbsp; manual: {manual} &nbsp;|&nbsp; "
               f"<a href='{mp}/endpoint'>endpoint</a></p>")
    if reg["error"]:
        out.append(f"<p class='err'>{escape(reg['error'])}</p>")

    # summary cards
    champ, prev = reg["aliases"].get("champion"), reg["aliases"].get("previous")
    ep = data.endpoint(model)
    ready = (ep.get("checks") or {}).get("/readyz", {})
    health = (ep.get("checks") or {}).get("/health", {})
    drift = data.drift_reports(model)
    perf: dict[str, Any] = next((d["performance"] for d in drift if d["performance"].get("overall")), {})
    cards = [
        ("champion", f"v{champ}" if champ else "none yet", f"previous: v{prev}" if prev else ""),
        ("endpoint", "ready" if ready.get("ok") else "not serving",
         f"/readyz {ready.get('status') or '—'} · /health {health.get('status') or '—'}"),
        ("drift (latest window)", "—" if not drift else ("DRIFT" if drift[0]["drift"] else "no drift"),
         "" if not drift else f"share {_num(drift[0]['share'])} / threshold {_num(drift[0]['threshold'])}"),
        ("live ROC AUC", _num((perf.get("overall") or {}).get("roc_auc")) if perf else "—",
         f"{(perf.get('overall') or {}).get('n', 0)} labelled · status {perf.get('status', '—')}" if perf else
         "no labelled traffic yet"),
    ]
    out.append("<div class='row'>" + "".join(
        f"<div class='card'><div class='muted'>{escape(k)}</div><div class='v'>{escape(v)}</div>"
        f"<div class='muted'>{escape(s)}</div></div>" for k, v, s in cards) + "</div>")

    # versions
    g = cfg.gate
    recorded = {m for v in versions for m in v["metrics"]}  # whatever the task type's gate recorded
    metrics = list(dict.fromkeys([g.primary_metric, *g.floors, *g.max_regression, *sorted(recorded)]))
    out.append("<h3>Versions and gate decisions</h3>")
    if versions:
        head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
        rows = []
        for v in versions:
            d = v["decision"]
            alias = " ".join(badge("champion" if a == "champion" else "previous", "@" + a) for a in v["aliases"])
            vp = f"{mp}/versions/{quote(v['version'], safe='')}"
            cells = "".join(f"<td class='num'>{_num(v['metrics'].get(m))}</td>" for m in metrics)
            rows.append(
                f"<tr class='version' data-state='{escape(d['state'])}'><td>v{escape(v['version'])}</td>"
                f"<td>{_ts(v['created'])}</td><td>{alias}</td><td>{badge(d['state'], d['label'])}</td>"
                f"<td>{escape(d['why'])}</td>{cells}"
                f"<td><a href='{vp}/verdict'>checks</a> · <a href='{vp}/card'>card</a> · "
                f"<a href='{prefix}/runs/{quote(v['run_id'] or '', safe='')}'>run</a></td></tr>")
        out.append(f"<table id='versions-{escape(model)}'><tr><th>version</th><th>created</th><th>aliases</th>"
                   f"<th>decision</th><th>why</th>{head}<th></th></tr>{''.join(rows)}</table>")
        # checks of the newest versions
        for v in versions[:3]:
            verdict = data.verdict(model, v["version"])
            if verdict and verdict.get("checks"):
                out.append(f"<details><summary>Checks that decided v{escape(v['version'])} "
                           f"({escape(v['decision']['label'])})</summary>{checks_table(verdict)}</details>")
        chron = list(reversed(versions))
        labels = [f"v{v['version']}" for v in chron]
        series = {m: [v["metrics"].get(m) for v in chron] for m in metrics}
        floors = {f"floor {m}": float(b) for m, b in g.floors.items() if m == g.primary_metric}
        out.append("<div class='row'>" + charts.line_chart(
            f"{g.primary_metric} per version (gate, frozen evaluation window)", labels,
            {g.primary_metric: series[g.primary_metric]}, hlines=floors) + charts.line_chart(
            "guard metrics per version", labels, {m: s for m, s in series.items() if m != g.primary_metric})
            + "</div>")
    else:
        out.append("<p class='muted'>No registered version yet.</p>")

    # aliases and who moved them
    events = alias_events(versions)
    out.append("<h3>Aliases and who moved them</h3>")
    if events:
        out.append("<table class='aliases'><tr><th>when</th><th>version</th><th>what</th><th>who</th><th>why</th></tr>"
                   + "".join(f"<tr><td>{_ts(e['at'])}</td><td>v{escape(e['version'])}</td><td>{escape(e['action'])}"
                             f"</td><td>{escape(e['actor'])}</td><td>{escape(e['reason'])}</td></tr>" for e in events)
                   + "</table>")
    else:
        out.append("<p class='muted'>No alias move recorded yet.</p>")

    # training runs with their notes
    runs = data.training_runs(model)
    out.append("<h3>Training runs (what the gate or the guards decided)</h3>")
    if runs:
        out.append("<table class='runs'><tr><th>run</th><th>state</th><th>started</th><th>note</th></tr>" + "".join(
            f"<tr><td>{airflow_link(base, run_path(r['dag_id'], r['run_id']), r['run_id'])}</td>"
            f"<td>{badge(r['state'] or 'queued', r['state'] or 'queued')}</td><td>{_ts(r['start'])}</td>"
            f"<td>{_note_badge(r['note'])}</td></tr>" for r in runs) + "</table>")
    else:
        out.append("<p class='muted'>No training run yet.</p>")

    # drift and live performance
    out.append("<h3>Drift and live performance</h3>")
    if drift:
        chron_d = list(reversed(drift))
        labels = [(d["window_end"] or d["name"])[:10] for d in chron_d]
        latest = drift[0]
        drifted = {c for c, i in latest["columns"].items() if i["drifted"]}
        out.append("<div class='row'>" + charts.line_chart(
            "share of drifted features per window", labels, {"share": [d["share"] for d in chron_d]},
            hlines={"threshold": latest["threshold"]} if latest["threshold"] is not None else None)
            + charts.bar_chart(f"per-feature drift score, window ending {labels[-1]}",
                               {c: i["score"] for c, i in latest["columns"].items()}, highlight=drifted)
            + charts.line_chart("live performance per window (realized on delayed labels; estimated when present)",
                                labels, _perf_series(chron_d)) + "</div>")
        feats = sorted({c for d in drift for c in d["columns"]})
        if feats:
            out.append("<details><summary>Per-feature drift over windows</summary><table><tr><th>feature</th>"
                       + "".join(f"<th>{escape(lab)}</th>" for lab in labels) + "</tr>" + "".join(
                           f"<tr><td>{escape(f)}</td>" + "".join(
                               _drift_cell(d["columns"].get(f)) for d in chron_d) + "</tr>" for f in feats)
                       + "</table></details>")
        out.append("<table class='drift'><tr><th>window</th><th>model</th><th>status</th><th>verdict</th>"
                   "<th>share</th><th>rows</th><th>report</th></tr>" + "".join(
                       f"<tr><td>{escape(str(d['window_start'] or '')[:16])} → {escape(str(d['window_end'] or '')[:16])}"
                       f"</td><td>v{escape(str(d['model_version']))}</td><td>{escape(str(d['status']))}</td>"
                       f"<td>{badge('drift' if d['drift'] else 'ok', 'drift' if d['drift'] else 'no drift')}</td>"
                       f"<td class='num'>{_num(d['share'])}</td><td class='num'>{escape(str(d['n_current']))}</td>"
                       f"<td>{_report_links(mp, d)}</td></tr>" for d in drift) + "</table>")
    else:
        out.append("<p class='muted'>No drift report yet (the monitor DAG writes one per window once a champion "
                   "serves).</p>")

    # endpoint
    out.append("<h3>Live endpoint</h3>" + endpoint_table(ep))
    return "".join(out)


def _note_badge(note: str) -> str:
    """The run's note with a badge of the decision it records (the provider's line starts ``MLOps: ``)."""
    from mlops_provider.operator_notes import NOTE_PREFIX

    lines = []
    for line in (note or "").splitlines():
        text = line[len(NOTE_PREFIX):] if line.startswith(NOTE_PREFIX) else line
        low = text.lower()
        kind = next((k for k in ("promoted", "force_promote", "rollback", "approved", "rejected by the gate",
                                 "rejected", "declined by guards") if low.startswith(k)), None)
        state = {"promoted": "ok", "approved": "ok", "force_promote": "forced", "rollback": "forced",
                 "rejected by the gate": "gate_rejected", "rejected": "rejected",
                 "declined by guards": "declined"}.get(kind or "", "")
        lines.append((badge(state, kind.replace("_", "-")) + " " if kind else "") + escape(text))
    return "<br>".join(lines)


def _perf_series(chron: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    def get(d: dict[str, Any], *path: str) -> float | None:
        cur: Any = d["performance"]
        for p in path:
            cur = (cur or {}).get(p) if isinstance(cur, dict) else None
        try:
            return float(cur) if cur is not None else None
        except (TypeError, ValueError):
            return None

    series = {"realized ROC AUC": [get(d, "overall", "roc_auc") for d in chron]}
    est = [get(d, "estimated", "roc_auc") for d in chron]
    if any(v is not None for v in est):
        series["estimated ROC AUC"] = est
    base = [get(d, "baseline", "roc_auc") for d in chron]
    if any(v is not None for v in base):
        series["champion at validation"] = base
    return series


def _drift_cell(info: dict[str, Any] | None) -> str:
    if not info or info.get("score") is None:
        return "<td class='num muted'>—</td>"
    style = " style='color:var(--bad);font-weight:600'" if info.get("drifted") else ""
    return f"<td class='num'{style}>{info['score']:.3f}</td>"


def _report_links(mp: str, d: dict[str, Any]) -> str:
    links = []
    if d.get("html"):
        links.append(f"<a href='{mp}/reports/drift/{quote(d['html'], safe='')}'>HTML</a>")
    links.append(f"<a href='{mp}/reports/drift/{quote(d['name'], safe='')}'>JSON</a>")
    return " · ".join(links)


def checks_table(verdict: dict[str, Any]) -> str:
    from mlops_provider.operator_notes import advisory_label

    rows = []
    for c in verdict.get("checks") or []:
        enforced = c.get("enforced", True)
        label = advisory_label(bool(c.get("passed")), enforced)
        state = "ok" if c.get("passed") else ("failed" if enforced else "warn")
        rows.append(f"<tr><td>{escape(str(c.get('name')))}</td><td class='num'>{_num(c.get('value'))}</td>"
                    f"<td>{escape(str(c.get('direction', '')))}</td><td class='num'>{_num(c.get('bound'))}</td>"
                    f"<td>{badge(state, label)}</td></tr>")
    return ("<table class='checks'><tr><th>check</th><th>value</th><th></th><th>bound</th><th>result</th></tr>"
            + "".join(rows) + "</table>")


def endpoint_table(ep: dict[str, Any]) -> str:
    if not ep:
        return ""
    rows = [f"<tr><th>URL</th><td><a href='{escape(ep['url'])}' target='_blank' rel='noopener'>"
            f"{escape(ep['url'])}</a> ({escape(str(ep.get('target')))})</td></tr>",
            f"<tr><th>bento</th><td>{escape(str(ep.get('bento_tag') or '—'))}</td></tr>"]
    for path, c in (ep.get("checks") or {}).items():
        rows.append(f"<tr><th>{escape(path)}</th><td>{badge('ok' if c['ok'] else 'down', str(c['status'] or 'unreachable'))}"
                    f" <code>{escape(c['body'][:200])}</code></td></tr>")
    return "<table class='endpoint'>" + "".join(rows) + "</table>"


def verdict_page(model: str, version: str, verdict: dict[str, Any], mv: dict[str, Any] | None, prefix: str) -> str:
    d = (mv or {}).get("decision") or {"state": str(verdict.get("decision")), "label": str(verdict.get("decision")),
                                        "why": ""}
    ch, champ = verdict.get("challenger") or {}, verdict.get("champion") or {}
    metrics = sorted(set(ch.get("metrics") or {}) | set(champ.get("metrics") or {}))
    body = [f"<p><a href='{prefix}/#model-{escape(model)}'>← MLOps</a></p>",
            f"<h1>{escape(model)} v{escape(version)}: {badge(d['state'], d['label'])}</h1>",
            f"<p class='muted'>{escape(d['why'])}</p>",
            f"<p>gate decision <b>{escape(str(verdict.get('decision')))}</b> at {escape(str(verdict.get('evaluated_at', '')))}"
            f" against {'champion v' + escape(str(champ.get('version'))) if champ else 'no champion (bootstrap)'}; "
            f"evaluation rows {escape(str((verdict.get('evaluation_set') or {}).get('rows', '')))}</p>"]
    if metrics:
        body.append("<table><tr><th>metric</th><th>challenger</th><th>champion</th></tr>" + "".join(
            f"<tr><td>{escape(m)}</td><td class='num'>{_num((ch.get('metrics') or {}).get(m))}</td>"
            f"<td class='num'>{_num((champ.get('metrics') or {}).get(m))}</td></tr>" for m in metrics) + "</table>")
    body.append("<h3>Checks</h3>" + checks_table(verdict))
    if mv:
        tags = {k: v for k, v in mv["tags"].items() if k.startswith(("gate.", "mlops."))}
        body.append("<h3>Tags</h3><table>" + "".join(f"<tr><td><code>{escape(k)}</code></td><td>{escape(v)}</td></tr>"
                                                    for k, v in sorted(tags.items())) + "</table>")
    body.append(f"<p><a href='{prefix}/models/{quote(model, safe='')}/versions/{quote(version, safe='')}/card'>"
                f"model card</a> · <a href='?format=json'>JSON</a></p>")
    return page(f"{model} v{version} gate verdict", "".join(body))


def run_page(run: Any, prefix: str) -> str:
    info, d = run.info, run.data
    body = [f"<p><a href='{prefix}/'>← MLOps</a></p><h1>MLflow run {escape(info.run_id)}</h1>",
            f"<p>{badge(str(info.status).lower().replace('finished', 'success'), str(info.status))} "
            f"experiment {escape(str(info.experiment_id))}, started {_ts(info.start_time)}, "
            f"ended {_ts(info.end_time)}</p>"]
    for title, items in (("Metrics", {k: _num(v) for k, v in (d.metrics or {}).items()}),
                         ("Parameters", d.params or {}),
                         ("Tags", {k: v for k, v in (d.tags or {}).items() if not k.startswith("mlflow.log-model")})):
        body.append(f"<h3>{title}</h3><table>" + "".join(
            f"<tr><td><code>{escape(str(k))}</code></td><td>{escape(str(v))[:500]}</td></tr>"
            for k, v in sorted(items.items())) + "</table>")
    return page(f"MLflow run {info.run_id}", "".join(body))


def message_page(title: str, message: str, prefix: str) -> str:
    return page(title, f"<p><a href='{prefix}/'>← MLOps</a></p><h1>{escape(title)}</h1><p>{escape(message)}</p>")


def endpoint_page(model: str, ep: dict[str, Any], prefix: str) -> str:
    return page(f"{model} endpoint", f"<p><a href='{prefix}/#model-{escape(model)}'>← MLOps</a></p>"
                f"<h1>{escape(model)}: live endpoint</h1>{endpoint_table(ep)}"
                "<p class='muted'>POST /predict with a JSON body of entity rows; see the service's own docs at its "
                "URL.</p>")


def docs_page(openapi: dict[str, Any], prefix: str) -> str:
    rows = []
    for path, methods in sorted((openapi.get("paths") or {}).items()):
        for method, op in methods.items():
            params = ", ".join(p.get("name", "") for p in op.get("parameters") or [])
            rows.append(f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(prefix + path)}"
                        f"</code></td><td>{escape(op.get('summary') or '')}<br><span class='muted'>"
                        f"{escape((op.get('description') or '').strip().splitlines()[0] if op.get('description') else '')}"
                        f"</span></td><td>{escape(params)}</td></tr>")
    return page("MLOps API", f"<p><a href='{prefix}/'>← MLOps</a></p><h1>MLOps plugin API</h1>"
                "<p class='muted'>Every route requires Airflow's authentication (the UI's session cookie or "
                "<code>Authorization: Bearer &lt;token from POST /auth/token&gt;</code>) and read access to the "
                f"model's DAGs. Machine-readable: <a href='{prefix}/openapi.json'>openapi.json</a>.</p>"
                "<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr>"
                + "".join(rows) + "</table>")
