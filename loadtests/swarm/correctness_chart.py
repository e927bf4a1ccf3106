"""Anomalies over time as an SVG chart: one line per scope of state, the count
found so far against the seconds since the test started. The Correctness tab
shows it live and Locust's HTML report carries it (loadtests/swarm/correctness_web.py);
it is drawn from Tally.series, a point every few seconds.

SVG in a string, no plotting library: the web UI asks for it every few
seconds, and a Locust process should not import matplotlib for that.
"""

from html import escape

from loadtests.judge.verdict import SCOPES

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 130, 30, 36
# Colour per scope, the same as matplotlib's first four (report.py's charts).
COLOURS = dict(zip(SCOPES, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"), strict=False))


def axis_top(most: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at or above `most`: the y axis's top."""
    scale = 1.0
    while True:
        for step in (1, 2, 5):
            if step * scale >= most:
                return step * scale
        scale *= 10


def chart_svg(series: list[tuple[float, dict[str, int]]], skip: tuple[str, ...] = ()) -> str:
    """The chart for these points; `skip` names scopes the app does not serve."""
    scopes = [scope for scope in SCOPES if scope not in skip]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    last_t = max((t for t, _ in series), default=0.0) or 1.0
    most = max((point[s] for _, point in series for s in scopes), default=0)
    top = axis_top(max(most, 1))

    def x(t: float) -> float:
        return LEFT + plot_w * t / last_t

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">'
        "Anomalies found so far, per scope of state</text>",
    ]
    for value in (top * quarter / 4 for quarter in range(5)):
        if value != int(value):
            continue  # whole anomalies only
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.0f}</text>'
        )
    step = axis_top(last_t / 6)
    for n in range(int(last_t // step) + 1):
        t = n * step
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{t:,.0f}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" text-anchor="middle">'
        "seconds since the test started</text>"
    )
    if not series:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'fill="#888">no points yet: one every few seconds while a test runs</text>'
        )
    for n, scope in enumerate(scopes):
        colour = COLOURS[scope]
        if series:
            points = " ".join(f"{x(t):.1f},{y(point[scope]):.1f}" for t, point in series)
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        final = series[-1][1][scope] if series else 0
        ly = TOP + 14 + n * 18
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 28}" y1="{ly - 4}" '
            f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{WIDTH - RIGHT + 34}" y="{ly}">{escape(scope)}: {final:,}</text>'
        )
    for scope in skip:
        ly = TOP + 14 + len(scopes) * 18
        parts.append(f'<text x="{WIDTH - RIGHT + 10}" y="{ly}" fill="#888">{scope}: n/a</text>')
    parts.append("</svg>")
    return "\n".join(parts)
