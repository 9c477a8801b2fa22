"""Charts as inline SVG strings: stacked bars, grouped bars, lines with interval bands, a
calibration plot and interval dots. No JavaScript, no library, nothing fetched: the page is
complete when the HTML arrives. Every mark that carries data has class "mark" (the browser
test checks that each chart drew some); every text is escaped."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
W, H = 720, 260  # the drawing's own units; the page scales it to its width
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 14, 42  # margins: y labels, legend, x labels


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _num(v: float) -> str:
    """A tick label: short, and never '1e-05' where 0.00001 reads better."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round numbers covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


class _Frame:
    """Maps data to the drawing: x slots (categories) or a numeric x, and a numeric y."""

    def __init__(self, ylo: float, yhi: float, width: int = W, height: int = H) -> None:
        self.w, self.h = width, height
        self.ticks = nice_ticks(ylo, yhi)
        self.ylo, self.yhi = self.ticks[0], self.ticks[-1]

    @property
    def plot_w(self) -> float:
        return self.w - LEFT - RIGHT

    @property
    def plot_h(self) -> float:
        return self.h - TOP - BOTTOM

    def y(self, v: float) -> float:
        span = (self.yhi - self.ylo) or 1.0
        return TOP + self.plot_h * (1 - (v - self.ylo) / span)

    def slot(self, i: int, n: int) -> tuple[float, float]:
        """Left edge and width of category i of n."""
        width = self.plot_w / max(n, 1)
        return LEFT + i * width, width

    def axes(self, labels: Sequence[str], ylabel: str) -> list[str]:
        out = []
        for t in self.ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{LEFT}" x2="{self.w - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>'
            )
        n = len(labels)
        every = max(1, math.ceil(n / 14))  # at most ~14 x labels
        for i, lab in enumerate(labels):
            if i % every:
                continue
            x0, width = self.slot(i, n)
            out.append(
                f'<text x="{x0 + width / 2:.1f}" y="{self.h - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(lab)}</text>'
            )
        out.append(
            f'<text x="14" y="{TOP + self.plot_h / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + self.plot_h / 2:.1f})">{escape(ylabel)}</text>'
        )
        return out


def _legend(names: Sequence[str], width: int = W) -> list[str]:
    out = []
    for i, name in enumerate(names[:12]):
        y = TOP + 4 + i * 18
        out.append(
            f'<rect x="{width - RIGHT + 12}" y="{y}" width="11" height="11" '
            f'fill="{colour(i)}"/><text x="{width - RIGHT + 28}" y="{y + 10}">'
            f"{escape(name[:20])}</text>"
        )
    return out


def _svg(name: str, title: str, parts: list[str], width: int = W, height: int = H) -> str:
    return (
        f'<figure class="chart" data-chart="{escape(name)}"><figcaption>{escape(title)}'
        f'</figcaption><svg viewBox="0 0 {width} {height}" style="max-width:{width * 1.15:.0f}px" '
        'role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg></figure>"
    )


def stacked_bars(
    name: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str = "",
) -> str:
    """One bar per label, stacked by series (e.g. events per day by type)."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    f = _Frame(0.0, max(totals, default=1.0) or 1.0)
    parts = f.axes(labels, ylabel)
    for i in range(len(labels)):
        x0, width = f.slot(i, len(labels))
        base = 0.0
        for j, (sname, values) in enumerate(series.items()):
            v = float(values[i])
            if v <= 0:
                continue
            y_top, y_bottom = f.y(base + v), f.y(base)
            parts.append(
                f'<rect class="mark" x="{x0 + width * 0.1:.1f}" y="{y_top:.1f}" '
                f'width="{width * 0.8:.1f}" height="{max(y_bottom - y_top, 0.5):.1f}" '
                f'fill="{colour(j)}"><title>{escape(labels[i])} {escape(sname)}: '
                f"{_num(v)}</title></rect>"
            )
            base += v
    parts += _legend(list(series))
    return _svg(name, title, parts)


def grouped_bars(
    name: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    ylabel: str = "",
    width: int = W,
) -> str:
    """Bars side by side per label, one per series (e.g. a model beside popularity)."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    f = _Frame(min(0.0, *values) if values else 0.0, max(values, default=1.0) or 1.0, width=width)
    parts = f.axes(labels, ylabel)
    k = max(len(series), 1)
    for i in range(len(labels)):
        x0, slot_w = f.slot(i, len(labels))
        bw = slot_w * 0.8 / k
        for j, (sname, vals) in enumerate(series.items()):
            v = vals[i]
            if v is None or not math.isfinite(v):
                continue
            y0, y1 = sorted((f.y(0.0), f.y(v)))
            parts.append(
                f'<rect class="mark" x="{x0 + slot_w * 0.1 + j * bw:.1f}" y="{y0:.1f}" '
                f'width="{bw * 0.95:.1f}" height="{max(y1 - y0, 0.5):.1f}" fill="{colour(j)}">'
                f"<title>{escape(labels[i])} {escape(sname)}: {_num(v)}</title></rect>"
            )
    parts += _legend(list(series), width)
    return _svg(name, title, parts, width=width)


def lines(
    name: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    bands: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]] | None = None,
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
    hline: float | None = None,
) -> str:
    """A line per series over categorical x (days), with an optional interval band each."""
    bands = bands or {}
    pool = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    for lo, hi in bands.values():
        pool += [v for v in (*lo, *hi) if v is not None and math.isfinite(v)]
    lo_y, hi_y = ylim if ylim else (min(pool, default=0.0), max(pool, default=1.0))
    f = _Frame(lo_y, hi_y)
    parts = f.axes(labels, ylabel)
    n = len(labels)

    def x(i: int) -> float:
        x0, width = f.slot(i, n)
        return x0 + width / 2

    if hline is not None:
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{f.y(hline):.1f}" y2="{f.y(hline):.1f}" '
            'class="ref"/>'
        )
    for j, (sname, vals) in enumerate(series.items()):
        if sname in bands:
            lo, hi = bands[sname]
            pts = [
                (i, float(a), float(b))
                for i, (a, b) in enumerate(zip(lo, hi, strict=True))
                if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
            ]
            if pts:
                upper = " ".join(f"{x(i):.1f},{f.y(b):.1f}" for i, _, b in pts)
                lower = " ".join(f"{x(i):.1f},{f.y(a):.1f}" for i, a, _ in reversed(pts))
                parts.append(
                    f'<polygon points="{upper} {lower}" fill="{colour(j)}" opacity="0.18"/>'
                )
        pts2 = [(i, v) for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
        if not pts2:
            continue
        d = " ".join(
            f"{'M' if k == 0 else 'L'}{x(i):.1f},{f.y(v):.1f}" for k, (i, v) in enumerate(pts2)
        )
        parts.append(
            f'<path class="mark" d="{d}" fill="none" stroke="{colour(j)}" stroke-width="2"/>'
        )
        for i, v in pts2:
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{f.y(v):.1f}" r="2.5" fill="{colour(j)}">'
                f"<title>{escape(labels[i])} {escape(sname)}: {_num(v)}</title></circle>"
            )
    parts += _legend(list(series))
    return _svg(name, title, parts)


def calibration(name: str, title: str, curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Predicted probability (x) against the observed rate (y) per bin, one curve per model,
    beside the diagonal of perfect calibration; a dot's area follows its bin's count."""
    size = 300
    pts = [(c["predicted"], c["observed"]) for cs in curves.values() for c in cs]
    top = max([max(p, o) for p, o in pts] or [1.0]) * 1.1
    ticks = nice_ticks(0.0, min(top, 1.0))
    top = ticks[-1]
    inner = size - 50
    w = size + 170

    def sx(v: float) -> float:
        return 46 + inner * v / top

    def sy(v: float) -> float:
        return 10 + inner * (1 - v / top)

    parts = []
    for t in ticks:
        parts.append(
            f'<line x1="46" x2="{46 + inner}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
            f'<text x="40" y="{sy(t) + 4:.1f}" text-anchor="end">{_num(t)}</text>'
            f'<text x="{sx(t):.1f}" y="{10 + inner + 16}" text-anchor="middle">{_num(t)}</text>'
        )
    parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(top)}" y2="{sy(top)}" class="ref"/>')
    parts.append(
        f'<text x="{46 + inner / 2}" y="{size - 4}" text-anchor="middle">predicted</text>'
        f'<text x="12" y="{10 + inner / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {10 + inner / 2})">observed</text>'
    )
    for j, cs in enumerate(curves.values()):
        total = sum(c["count"] for c in cs) or 1
        d = " ".join(
            f"{'M' if k == 0 else 'L'}{sx(c['predicted']):.1f},{sy(c['observed']):.1f}"
            for k, c in enumerate(cs)
        )
        if d:
            parts.append(
                f'<path class="mark" d="{d}" fill="none" stroke="{colour(j)}" stroke-width="2"/>'
            )
        for c in cs:
            r = 2.5 + 8 * math.sqrt(c["count"] / total)
            parts.append(
                f'<circle cx="{sx(c["predicted"]):.1f}" cy="{sy(c["observed"]):.1f}" '
                f'r="{r:.1f}" fill="{colour(j)}" opacity="0.6"><title>predicted '
                f"{_num(c['predicted'])}, observed {_num(c['observed'])}, "
                f"{c['count']:.0f} examples</title></circle>"
            )
    parts += _legend(list(curves), width=size + RIGHT)
    return _svg(name, title, parts, width=w, height=size)


def intervals(
    name: str,
    title: str,
    labels: Sequence[str],
    estimate: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    reference: float | None = 0.0,
) -> str:
    """A dot and its interval per row (e.g. coefficients, off-policy CTRs), rows top down."""
    row, label_w = 20, 230
    height = TOP + BOTTOM + row * max(len(labels), 1)
    width = W
    pool = [v for v in (*low, *high, *estimate) if math.isfinite(v)]
    if reference is not None:
        pool.append(reference)
    ticks = nice_ticks(min(pool, default=0.0), max(pool, default=1.0))
    lo_x, hi_x = ticks[0], ticks[-1]
    span = (hi_x - lo_x) or 1.0

    def sx(v: float) -> float:
        return label_w + (width - label_w - 30) * (v - lo_x) / span

    parts = []
    for t in ticks:
        parts.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{TOP}" y2="{height - BOTTOM}" '
            f'class="grid"/><text x="{sx(t):.1f}" y="{height - BOTTOM + 16}" '
            f'text-anchor="middle">{_num(t)}</text>'
        )
    if reference is not None:
        parts.append(
            f'<line x1="{sx(reference):.1f}" x2="{sx(reference):.1f}" y1="{TOP}" '
            f'y2="{height - BOTTOM}" class="ref"/>'
        )
    for i, lab in enumerate(labels):
        y = TOP + row * i + row / 2
        e, a, b = estimate[i], low[i], high[i]
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(lab[:36])}</text>'
        )
        if math.isfinite(a) and math.isfinite(b):
            parts.append(
                f'<line x1="{sx(a):.1f}" x2="{sx(b):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{colour(0)}" stroke-width="2"/>'
            )
        if math.isfinite(e):
            parts.append(
                f'<circle class="mark" cx="{sx(e):.1f}" cy="{y:.1f}" r="4" fill="{colour(0)}">'
                f"<title>{escape(lab)}: {_num(e)} [{_num(a)}, {_num(b)}]</title></circle>"
            )
    return _svg(name, title, parts, width=width, height=height)
