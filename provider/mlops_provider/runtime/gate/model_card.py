"""Model card of a gated version (runtime module): Markdown + self-contained HTML + PNG plots.

Built from the gate's verdict alone (no model access): task, data window and snapshot hash, metrics with
bootstrap confidence intervals, the paired comparison with the champion (primary and every guard metric
with its CI) and the gate's power, every check with value and bound, the slice table, behavioral tests,
permutation feature importance, and the task's plots: binary the ROC curve and a calibration (reliability)
plot; multiclass the confusion matrix, per-class recall and a top-label reliability plot; regression a
residual plot. :func:`mlops_provider.runtime.gate.evaluate.evaluate_gate` logs the files to the challenger's MLflow
run under ``gate/``; the gate task's "Model card" extra link opens the HTML.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
ROC_PNG = "roc_curve.png"
CALIBRATION_PNG = "calibration.png"
CONFUSION_PNG = "confusion_matrix.png"
RESIDUALS_PNG = "residuals.png"


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(ci: list[Any] | None) -> str:
    return "—" if not ci or ci[0] is None else f"[{_f(ci[0])}, {_f(ci[1])}]"


def _plots(verdict: dict[str, Any], out: Path) -> dict[str, Path]:
    """The task's plots as PNG files: ROC + calibration (binary), calibration + confusion matrix (multiclass),
    residuals (regression)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    files: dict[str, Path] = {}

    def plot(name: str, filename: str, draw: Any, *, title: str, xlabel: str, ylabel: str,
             legend: Any = None, diagonal: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        draw(ax)
        if diagonal:
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if legend:
            ax.legend(loc=legend, fontsize=8)
        fig.tight_layout()
        files[name] = out / filename
        fig.savefig(files[name])
        plt.close(fig)

    roc = verdict.get("roc") or {}
    if roc:
        def draw_roc(ax: Any) -> None:
            for role, pts in roc.items():
                auc = ((verdict.get(role) or {}).get("metrics") or {}).get("roc_auc")
                ax.plot(pts["fpr"], pts["tpr"],
                        label=f"{role} v{(verdict.get(role) or {}).get('version')} (AUC {_f(auc, 3)})")

        plot("roc", ROC_PNG, draw_roc, title="ROC curve (evaluation set)", xlabel="false positive rate",
             ylabel="true positive rate", legend="lower right", diagonal=True)
    cal = verdict.get("calibration") or {}
    if cal:
        def draw_calibration(ax: Any) -> None:
            for role, table in cal.items():
                ax.plot([b["p"] for b in table], [b["y"] for b in table], marker="o", label=role)

        top = verdict.get("task") == "multiclass"
        plot("calibration", CALIBRATION_PNG, draw_calibration, title="Calibration", legend="upper left",
             diagonal=True, xlabel="mean top-label probability" if top else "mean predicted probability",
             ylabel="observed accuracy" if top else "observed frequency of the positive label")
    confusion = verdict.get("confusion") or {}
    if confusion.get("challenger"):
        classes = [str(c) for c in confusion.get("classes") or []]

        def draw_confusion(ax: Any) -> None:
            ax.imshow(confusion["challenger"], cmap="Blues")
            ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            for i, row in enumerate(confusion["challenger"]):
                for j, n in enumerate(row):
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7)

        plot("confusion", CONFUSION_PNG, draw_confusion, title="Confusion matrix (challenger)",
             xlabel="predicted class", ylabel="true class")
    residuals = verdict.get("residuals") or {}
    if residuals:
        def draw_residuals(ax: Any) -> None:
            for role, pts in residuals.items():
                ax.scatter(pts["predicted"], pts["residual"], s=6, alpha=0.5, label=role)
            ax.axhline(0.0, ls="--", c="grey", lw=0.8)

        plot("residuals", RESIDUALS_PNG, draw_residuals, title="Residuals (evaluation set)", xlabel="prediction",
             ylabel="label - prediction", legend="upper left")
    return files


def _comparison_lines(verdict: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if verdict.get("comparison"):
        conf = (verdict.get("power") or {}).get("confidence")
        level = f"{conf:.0%} CI" if conf else "CI"
        lines += ["", f"## Comparison with the champion (paired bootstrap, {level} of challenger - champion)",
                  "", "| metric | role | Δ | CI | tolerance | result |", "|---|---|---|---|---|---|"]
        for c in verdict["comparison"]:
            lines.append(f"| {c['metric']} | {'guard' if c.get('guard') else 'primary'} | {_f(c.get('delta'))} | "
                         f"{_ci(c.get('ci'))} | {_f(c.get('tolerance'))} | "
                         f"{'pass' if c.get('passed') else '**significantly worse**'} |")
    power = verdict.get("power") or {}
    if power.get("statement"):
        lines += ["", f"Power: {power['statement']}."]
    return lines


def _task_lines(verdict: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    confusion = verdict.get("confusion") or {}
    if confusion.get("challenger"):
        classes = [str(c) for c in confusion.get("classes") or []]
        lines += ["", "## Confusion matrix (challenger; rows: true class, columns: predicted)", "",
                  "| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        for c, row in zip(classes, confusion["challenger"], strict=False):
            lines.append(f"| {c} | " + " | ".join(str(n) for n in row) + " |")
        ch = (verdict.get("challenger") or {}).get("metrics") or {}
        champ = ((verdict.get("champion") or {}).get("metrics")) or {}
        lines += ["", "## Per-class recall", "", "| class | challenger | champion |", "|---|---|---|"]
        lines += [f"| {c} | {_f(ch.get(f'recall_{c}'))} | {_f(champ.get(f'recall_{c}'))} |" for c in classes]
    return lines


def _label_summary(ev: dict[str, Any]) -> str:
    if ev.get("positives") is not None:
        return f", {ev['positives']} positives"
    if ev.get("class_counts"):
        return ", classes " + ", ".join(f"{k}: {v}" for k, v in ev["class_counts"].items())
    if ev.get("label_mean") is not None:
        return f", label mean {_f(ev['label_mean'])}"
    return ""


def render_markdown(verdict: dict[str, Any], plots: dict[str, Path] | None = None) -> str:
    ch = verdict.get("challenger") or {}
    champ = verdict.get("champion")
    ev = verdict.get("evaluation_set") or {}
    tw = ch.get("training_window") or {}
    lines = [
        f"# Model card — {verdict.get('model')} v{ch.get('version')}",
        "",
        f"Task: {verdict.get('task') or 'binary'}; primary metric {verdict.get('primary_metric')}"
        + (f"; guard metrics {', '.join(verdict['guard_metrics'])}" if verdict.get("guard_metrics") else ""),
        "",
        f"**Gate decision: {str(verdict.get('decision')).upper()}**"
        + (" (bootstrap: no champion yet)" if verdict.get("bootstrap") else "")
        + (f" — failed: {', '.join(verdict.get('failed') or [])}" if verdict.get("failed") else ""),
        "",
        f"- evaluated at {verdict.get('evaluated_at')}; MLflow run `{ch.get('run_id')}`",
        f"- evaluation set: split `{ev.get('split')}` of snapshot `{str(ev.get('snapshot_hash'))[:16]}` "
        f"({ev.get('rows')} rows{_label_summary(ev)}), window {(ev.get('window') or {}).get('start')} "
        f".. {(ev.get('window') or {}).get('end')}",
        f"- training window: {tw.get('start')} .. {tw.get('end')} (snapshot `{str(tw.get('snapshot_hash'))[:16]}`)",
    ]
    lines += [f"- warning: {w}" for w in verdict.get("warnings") or []]
    if verdict.get("error"):
        lines += [f"- error: {verdict['error']}"]
    metrics = ch.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics (evaluation set, bootstrap CI)", ""]
        head = "| metric | challenger | CI |" + (" champion | CI | Δ | Δ CI |" if champ else "")
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        delta = verdict.get("delta") or {}
        for m, v in metrics.items():
            row = f"| {m} | {_f(v)} | {_ci((ch.get('ci') or {}).get(m))} |"
            if champ:
                row += (
                    f" {_f((champ.get('metrics') or {}).get(m))} | {_ci((champ.get('ci') or {}).get(m))} |"
                    f" {_f((delta.get('metrics') or {}).get(m))} | {_ci((delta.get('ci') or {}).get(m))} |"
                )
            lines.append(row)
        if ch.get("ece") is not None:
            lines.append(
                f"\nExpected calibration error: challenger {_f(ch.get('ece'))}"
                + (f", champion {_f(champ.get('ece'))}" if champ and champ.get("ece") is not None else "")
            )
        lat = (verdict.get("latency") or {}).get("median_ms")
        if lat:
            lines.append(
                f"\nMedian latency per batch of {verdict['latency']['batch_size']} rows: "
                + ", ".join(f"{k} {_f(v, 2)} ms" for k, v in lat.items())
            )
    lines += _comparison_lines(verdict)
    lines += _task_lines(verdict)
    checks = verdict.get("checks") or []
    if checks:
        lines += ["", "## Checks", "", "| check | value | bound | result |", "|---|---|---|---|"]
        for c in checks:
            lines.append(
                f"| {c['name']} | {_f(c.get('value'))} | {c.get('direction', '')} {_f(c.get('bound'))} | "
                f"{'pass' if c.get('passed') else '**FAIL**' if c.get('enforced', True) else 'fail (advisory)'} |"
            )
    if verdict.get("slices"):
        lines += [
            "",
            "## Slices",
            "",
            "| slice | rows | metric | challenger | champion | judged |",
            "|---|---|---|---|---|---|",
        ]
        for s in verdict["slices"]:
            lines.append(
                f"| {s['column']}={s['value']} | {s['rows']} | {s['metric']} | {_f(s.get('challenger'))} | "
                f"{_f(s.get('champion'))} | {'yes' if s['judged'] else s.get('reason', 'no')} |"
            )
    if verdict.get("behavioral"):
        lines += [
            "",
            "## Behavioral tests",
            "",
            "| test | kind | pass rate | bound | rows | mean shift | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in verdict["behavioral"]:
            lines.append(
                f"| {b['name']} | {b['test']} | {_f(b.get('value'))} | {_f(b.get('bound'))} | "
                f"{b.get('rows')} | {_f(b.get('mean_shift'))} | {b.get('message') or ''} |"
            )
    if verdict.get("importance"):
        lines += [
            "",
            f"## Permutation feature importance (drop of {verdict.get('primary_metric')})",
            "",
            "| feature | importance |",
            "|---|---|",
        ]
        lines += [f"| {r['feature']} | {_f(r['importance'])} |" for r in verdict["importance"]]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    lines.append("")
    return "\n".join(lines)


def render_html(markdown: str, plots: dict[str, Path]) -> str:
    """A self-contained HTML page (plots inlined as data URIs) from the card's Markdown subset."""
    body: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        out = html.escape(text)
        parts = out.split("**")
        out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        parts = out.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        if table:
            head, *rows = table
            body.append(
                "<table><tr>"
                + "".join(f"<th>{inline(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                + "</table>"
            )
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("!["):
            name = line[2 : line.index("]")]
            path = plots.get(name)
            if path is not None and path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}img{margin:.5em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Model card</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )


def write_model_card(verdict: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``model_card.md``, ``model_card.html`` and the PNG plots into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(verdict, out)
    md = render_markdown(verdict, plots)
    (out / CARD_MD).write_text(md, encoding="utf-8")
    (out / CARD_HTML).write_text(render_html(md, plots), encoding="utf-8")
    return {"markdown": out / CARD_MD, "html": out / CARD_HTML, **plots}
