"""Bar charts as server-rendered SVG: no script, no CDN, nothing to fetch; the page works offline
and under a Content-Security-Policy that allows no inline code."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 56, 28, 16


def bars(points: list[tuple[str, float]], title: str, fmt: str = "{:g}") -> Markup:
    """One bar per (label, value). Labels are escaped here; everything else is numbers."""
    t = escape(title)
    if not points:
        return Markup(
            f'<svg class="chart" viewBox="0 0 {WIDTH} 60" role="img" aria-label="{t}">'
            f'<text x="{WIDTH // 2}" y="34" text-anchor="middle" class="empty">No {t} yet</text></svg>'
        )
    top = max(v for _, v in points) or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / len(points)
    bar_w = max(step * 0.7, 1.0)
    every = max(1, len(points) // 12)  # at most about twelve labels under the bars
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}">',
        f"<title>{t}</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" class="tick">{escape(fmt.format(top))}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" class="tick">0</text>',
    ]
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = LEFT + i * step + (step - bar_w) / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(label)}: {escape(fmt.format(value))}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="tick">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
