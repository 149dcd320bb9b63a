"""Charts rendered on the server as inline SVG (no JavaScript, no external assets; standard library only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#017cee", "#e8590c", "#2f9e44", "#9c36b5", "#c92a2a", "#1098ad", "#f08c00", "#5c7cfa")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    hlines: dict[str, float] | None = None,
    width: int = 560,
    height: int = 220,
    y_label: str = "",
) -> str:
    """A line chart: one x position per label, one line per series (None = gap), dashed reference lines."""
    values = [v for s in series.values() for v in s if v is not None] + list((hlines or {}).values())
    if not labels or not values:
        return f'<div class="chart empty" role="img" aria-label="{escape(title)}">{escape(title)}: no data yet</div>'
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.1, hi + 0.5 * (abs(hi) or 1) * 0.1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 52, 12, 28, 40
    pw, ph = width - left - right, height - top - bottom
    n = len(labels)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    for k in range(5):  # grid + y ticks
        v = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{_fmt(v)}</text>')
    step = max(1, n // 10)
    for i, lab in enumerate(labels):
        if i % step == 0 or i == n - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" class="tick" '
                         f'text-anchor="middle">{escape(str(lab)[:12])}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top + ph / 2:.0f}" class="tick" transform="rotate(-90 12 {top + ph / 2:.0f})" '
                     f'text-anchor="middle">{escape(y_label)}</text>')
    for name, v in (hlines or {}).items():
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="ref"/>'
                     f'<text x="{width - right - 4}" y="{y(v) - 4:.1f}" class="tick" text-anchor="end">'
                     f'{escape(name)} {_fmt(v)}</text>')
    legend_x = left
    for idx, (name, vals) in enumerate(series.items()):
        color = PALETTE[idx % len(PALETTE)]
        segs: list[list[tuple[float, float]]] = [[]]
        for i, val in enumerate(vals):
            if val is None:
                segs.append([])
            else:
                segs[-1].append((x(i), y(val)))
        for seg in segs:
            if len(seg) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, val in enumerate(vals):
            if val is not None:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(val):.1f}" r="3" fill="{color}">'
                             f'<title>{escape(name)} {escape(str(labels[i]))}: {val:.4f}</title></circle>')
        parts.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="{height - 5}" class="tick">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    bars: dict[str, float | None],
    *,
    threshold: float | None = None,
    highlight: set[str] | None = None,
    width: int = 560,
    bar_h: int = 16,
) -> str:
    """Horizontal bars (e.g. per-feature drift scores), highlighted ones in red, a dashed threshold."""
    items = [(k, v) for k, v in bars.items() if v is not None]
    if not items:
        return f'<div class="chart empty" role="img" aria-label="{escape(title)}">{escape(title)}: no data yet</div>'
    hi = max([v for _, v in items] + ([threshold] if threshold is not None else [])) or 1.0
    left, top = 150, 26
    pw = width - left - 60
    height = top + len(items) * (bar_h + 6) + 10
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    for i, (name, v) in enumerate(items):
        yy = top + i * (bar_h + 6)
        w = max(1.0, pw * v / hi)
        color = "#c92a2a" if name in (highlight or set()) else "#017cee"
        parts.append(f'<text x="{left - 6}" y="{yy + bar_h - 4}" class="tick" text-anchor="end">{escape(name[:22])}</text>'
                     f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                     f'<title>{escape(name)}: {v:.4f}</title></rect>'
                     f'<text x="{left + w + 4:.1f}" y="{yy + bar_h - 4}" class="tick">{_fmt(v)}</text>')
    if threshold is not None:
        tx = left + pw * threshold / hi
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{height - 6}" class="ref"/>')
    parts.append("</svg>")
    return "".join(parts)
