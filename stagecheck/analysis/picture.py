"""The two latency distributions side by side, as a small SVG (pure): one histogram per arm on a shared
log-scaled axis, medians and p95 marked. Written beside the JSON report and embedded in the Markdown."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT, PAD, BINS = 640, 300, 40, 40
COLOURS = {"baseline": "#4e79a7", "candidate": "#e15759"}


def latency_svg(baseline: Sequence[float], candidate: Sequence[float], title: str = "") -> str:
    arms = {"baseline": np.asarray(baseline, dtype=float), "candidate": np.asarray(candidate, dtype=float)}
    values = np.concatenate([a for a in arms.values() if a.size]) if any(a.size for a in arms.values()) else np.array([1.0])
    lo, hi = max(0.1, float(values.min())), max(float(values.max()), 1.0)
    if hi <= lo:
        hi = lo * 2
    edges = np.geomspace(lo, hi, BINS + 1)
    plot_w, plot_h = WIDTH - 2 * PAD, (HEIGHT - 3 * PAD) / 2

    def x(v: float) -> float:
        return PAD + plot_w * (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{PAD}" y="16" font-size="13">{escape(title or "latency per request (ms, log scale)")}</text>']
    for row, (arm, data) in enumerate(arms.items()):
        top = PAD + row * (plot_h + PAD / 2)
        counts, _ = np.histogram(np.clip(data, lo, hi), bins=edges) if data.size else (np.zeros(BINS), edges)
        peak = max(int(counts.max()), 1)
        for i, n in enumerate(counts):
            if n:
                h = plot_h * n / peak
                parts.append(f'<rect x="{x(edges[i]):.1f}" y="{top + plot_h - h:.1f}" width="{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}" '
                             f'height="{h:.1f}" fill="{COLOURS[arm]}" fill-opacity="0.8"/>')
        label = f"{arm}: n={data.size}"
        if data.size:
            med, p95 = float(np.median(data)), float(np.quantile(data, 0.95))
            label += f", median {med:.1f} ms, p95 {p95:.1f} ms"
            for v, dash in ((med, ""), (p95, ' stroke-dasharray="4 3"')):
                parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top:.1f}" y2="{top + plot_h:.1f}" '
                             f'stroke="black"{dash}/>')
        parts.append(f'<text x="{PAD}" y="{top - 4:.1f}" fill="{COLOURS[arm]}">{escape(label)}</text>')
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{top + plot_h:.1f}" y2="{top + plot_h:.1f}" stroke="#999"/>')
    for tick in _ticks(lo, hi):
        parts.append(f'<text x="{x(tick):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{tick:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _ticks(lo: float, hi: float) -> list[float]:
    out = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** exp
            if lo <= v <= hi:
                out.append(v)
    return out


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
