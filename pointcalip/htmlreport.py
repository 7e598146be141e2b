"""One self-contained HTML file that shows why each cloud got its label (``--report``).

The file opens from disk and makes no network request: pictures are PNG ``data:`` URIs,
the style sheet and the few lines of page logic are inline, and plotly.js (when plotly is
installed) is embedded once. A Content-Security-Policy ``<meta>`` forbids every fetch, so a
stray URL could not load anything either.

Per input (a "card"): the depth views as the encoder saw them (one contact-sheet PNG), the
top-k probabilities as bars, the chosen up axis (docs/method.md §1), the error row when the
input failed, and a lazily drawn interactive 3D scatter of the prepared cloud. Cards are
paged (``per_page``) and capped (``max_items``, with a visible note); failures are listed
first, with links to their cards. See docs/method.md (the ``--report`` section) for sizes.

Symbols: ``V`` views, ``H x W`` view size, ``M`` points of one cloud, ``B`` clouds, ``K`` classes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pointcalip.atomic import atomic_open
from pointcalip.errors import ConfigError
from pointcalip._types import PathLike

__all__ = [
    "ReportItem",
    "PointCode",
    "decode_points",
    "encode_points",
    "most_confident_wrong",
    "most_confident_wrong_naive",
    "subsample_points",
    "views_png",
    "write_classify_report",
    "write_eval_report",
]

log = logging.getLogger("pointcalip")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VIEW_PX = 112           # longest side of one view in the file (larger ones are downscaled, never upscaled)
MAX_POINTS_3D = 2048    # points per interactive 3D view
LIVE_3D_LIMIT = 8       # at most this many WebGL plots alive at once (browsers cap contexts at ~16)
_GAP = 2                # pixels between views in a contact sheet
_GAP_GREY = 136         # their grey: visible against both white and black backgrounds


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True, eq=False)
class ReportItem:
    """One card: an input of ``classify`` or one cloud of the ``eval`` gallery.

    Attributes:
        title: what the card is called (a path, ``"test #123"``).
        views: ``(V, H, W)`` float in ``[0, 1]`` (or ``uint8``): the pictures as the encoder
            saw them, background as given; ``None`` when the input failed before projection.
        points: ``(M, 3)`` the prepared cloud for the 3D view (subsampled to
            :data:`MAX_POINTS_3D` in the file); ``None`` for no 3D view.
        topk: ``(label, prob)`` pairs, most probable first; empty for a failed input.
        up_axis: the up axis used, e.g. ``"+z"`` (docs/method.md §1).
        error: the one-line error message of a failed input.
        true_label: the ground-truth class (``eval`` gallery).
        extra: more ``name -> value`` lines shown on the card (``n_points``, outliers dropped).
    """

    title: str
    views: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None
    topk: Sequence[Tuple[str, float]] = ()
    up_axis: Optional[str] = None
    error: Optional[str] = None
    true_label: Optional[str] = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.views is not None:
            v = np.asarray(self.views)
            if v.ndim != 3 or min(v.shape) == 0:
                raise ValueError(f"ReportItem {self.title!r}: views must be (V, H, W), got shape {tuple(v.shape)}")
            if v.dtype != np.uint8:
                v = v.astype(np.float64, copy=False)
                if not np.isfinite(v).all() or v.min() < -1e-6 or v.max() > 1 + 1e-6:
                    raise ValueError(
                        f"ReportItem {self.title!r}: views of shape {tuple(v.shape)} must be finite and in [0, 1]"
                    )
            object.__setattr__(self, "views", v)
        if self.points is not None:
            p = np.asarray(self.points, dtype=np.float64)
            if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
                raise ValueError(f"ReportItem {self.title!r}: points must be (M, 3), got shape {tuple(p.shape)}")
            if not np.isfinite(p).all():
                raise ValueError(f"ReportItem {self.title!r}: points of shape {tuple(p.shape)} are not all finite")
            object.__setattr__(self, "points", p)
        pairs = []
        for pair in self.topk:
            label, prob = pair
            prob = float(prob)
            if not (math.isfinite(prob) and -1e-6 <= prob <= 1 + 1e-6):
                raise ValueError(f"ReportItem {self.title!r}: top-k probability of {label!r} is {prob}, not in [0, 1]")
            pairs.append((str(label), prob))
        object.__setattr__(self, "topk", tuple(pairs))
        object.__setattr__(self, "extra", {str(k): str(v) for k, v in dict(self.extra).items()})

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def wrong(self) -> bool:
        """Has a true label and a top-1 that differs from it."""
        return self.true_label is not None and bool(self.topk) and self.topk[0][0] != self.true_label


# --------------------------------------------------------------------------------------------
# pictures and points


def _grid_cols(v: int) -> int:
    """Views per row: one row up to 6 views, two rows above (10 -> 5 x 2)."""
    return v if v <= 6 else -(-v // 2)


def views_png(views: np.ndarray, view_px: Optional[int] = VIEW_PX) -> Tuple[bytes, Tuple[int, int]]:
    """A contact sheet of ``(V, H, W)`` views in ``[0, 1]`` (or ``uint8``) as PNG bytes.

    Each view is downscaled (Lanczos) so its longest side is at most ``view_px`` (``None``:
    native size), the views are laid out in rows of :func:`_grid_cols` with a grey
    ``_GAP``-pixel gap. Returns ``(png_bytes, (width, height))``.
    """
    from PIL import Image

    v = np.asarray(views)
    if v.ndim != 3 or min(v.shape) == 0:
        raise ValueError(f"views must be (V, H, W), got shape {tuple(v.shape)}")
    grey = v if v.dtype == np.uint8 else np.round(np.clip(v.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    n, h, w = grey.shape
    if view_px is not None and max(h, w) > view_px:
        scale = view_px / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    else:
        th, tw = h, w
    cols = _grid_cols(n)
    rows = -(-n // cols)
    sheet = Image.new("L", (cols * tw + (cols - 1) * _GAP, rows * th + (rows - 1) * _GAP), color=_GAP_GREY)
    for k in range(n):
        tile = Image.fromarray(np.ascontiguousarray(grey[k]))
        if (th, tw) != (h, w):
            tile = tile.resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(tile, ((k % cols) * (tw + _GAP), (k // cols) * (th + _GAP)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), sheet.size


def subsample_points(points: np.ndarray, max_points: int = MAX_POINTS_3D, seed: int = 0) -> np.ndarray:
    """``(M, 3)`` -> ``(min(M, max_points), 3)``: a fixed-seed random subset, in input order."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (M, 3), got shape {tuple(p.shape)}")
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if p.shape[0] <= max_points:
        return p
    keep = np.sort(np.random.default_rng(seed).choice(p.shape[0], size=max_points, replace=False))
    return p[keep]


@dataclass(frozen=True)
class PointCode:
    """A cloud quantised to 8 bits per axis over its bounding box.

    ``data`` is base64 of ``uint8 (M, 3)`` row-major; point ``i`` decodes to
    ``lo + q[i] * span / 255`` (per axis), so the error is at most ``span / 510``.
    """

    data: str
    lo: Tuple[float, float, float]
    span: Tuple[float, float, float]
    count: int


def encode_points(points: np.ndarray) -> PointCode:
    """Quantise ``(M, 3)`` points to :class:`PointCode` (3 bytes per point before base64)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise ValueError(f"points must be (M, 3) with M >= 1, got shape {tuple(p.shape)}")
    lo = p.min(axis=0)
    span = p.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    q = np.round((p - lo) / span * 255.0).astype(np.uint8)
    return PointCode(
        base64.b64encode(q.tobytes()).decode("ascii"),
        tuple(float(x) for x in lo),
        tuple(float(x) for x in span),
        int(p.shape[0]),
    )


def decode_points(code: PointCode) -> np.ndarray:
    """Inverse of :func:`encode_points` (what the page's script does): ``(M, 3)`` float64."""
    q = np.frombuffer(base64.b64decode(code.data), dtype=np.uint8).reshape(-1, 3).astype(np.float64)
    return np.asarray(code.lo) + q * np.asarray(code.span) / 255.0


def most_confident_wrong(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` wrongly classified clouds with the highest top-1 probability.

    Args:
        probs: ``(B, K)`` class probabilities (or logits: only the order matters).
        labels: ``(B,)`` true class indices.
        k: how many to return at most.

    Returns:
        ``int64 (<= k,)``, most confident first; ties go to the lower index.
    """
    p = np.asarray(probs)
    y = np.asarray(labels)
    if p.ndim != 2:
        raise ValueError(f"probs must be (B, K), got shape {tuple(p.shape)}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must be (B,) with B = {p.shape[0]}, got shape {tuple(y.shape)}")
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = np.lexsort((wrong, -conf[wrong]))  # by -confidence, then index
    return wrong[order][: max(0, k)].astype(np.int64)


def most_confident_wrong_naive(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Loop reference of :func:`most_confident_wrong`."""
    found = []
    for i in range(len(labels)):
        row = list(probs[i])
        best = max(range(len(row)), key=lambda j: (row[j], -j))
        if best != labels[i]:
            found.append((-row[best], i))
    found.sort()
    return np.array([i for _, i in found[: max(0, k)]], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# plotly (optional)


@dataclass(frozen=True)
class _Plotly:
    js: str
    figure_json: str
    version: str


def _load_plotly() -> Optional[_Plotly]:
    """plotly.js and the JSON of an empty Scatter3d figure; ``None`` without plotly."""
    try:
        import plotly
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.offline import get_plotlyjs
    except ImportError:
        return None
    axis = dict(showbackground=False, showticklabels=False, title=dict(text=""), showspikes=False,
                gridcolor="#e3e3e3", zerolinecolor="#c8c8c8")
    fig = go.Figure(
        go.Scatter3d(x=[], y=[], z=[], mode="markers", hoverinfo="skip",
                     marker=dict(size=1.8, color=[], colorscale="Viridis", showscale=False, opacity=1.0)),
        layout=go.Layout(
            template="none", height=340, margin=dict(l=0, r=0, t=0, b=0), showlegend=False,
            paper_bgcolor="#ffffff",
            scene=dict(aspectmode="data", xaxis=axis, yaxis=axis, zaxis=axis,
                       camera=dict(up=dict(x=0, y=1, z=0), eye=dict(x=1.4, y=0.7, z=1.4))),
        ),
    )
    spec = json.loads(pio.to_json(fig, validate=True))
    spec["config"] = {"displaylogo": False, "responsive": True, "scrollZoom": False,
                      "modeBarButtonsToRemove": ["toImage"], "typesetMath": False}
    js = get_plotlyjs()
    if "</script" in js.lower():  # would end the inline <script> early
        js = js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    return _Plotly(js, _script_json(spec), str(plotly.__version__))


def _script_json(obj: object) -> str:
    """JSON safe inside ``<script type="application/json">``."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


# --------------------------------------------------------------------------------------------
# HTML pieces

_CSS = """
:root{--fg:#1d2430;--muted:#5d6878;--line:#dde2ea;--bg:#f5f7fa;--card:#fff;--accent:#2f6fdf;
--bad:#c62828;--badbg:#fdecea;--good:#2e7d32;--goodbg:#e8f5e9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}h3{font-size:15px;margin:0;word-break:break-all}
.sub{color:var(--muted);margin:0 0 14px}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.tile b{display:block;font-size:20px}.tile span{color:var(--muted);font-size:12px}
.tile.bad b{color:var(--bad)}
.note{background:#fff8e1;border:1px solid #f3d98b;border-radius:6px;padding:8px 12px;margin:10px 0}
.fails{background:var(--badbg);border:1px solid #f3b8b3;border-radius:8px;padding:8px 14px;margin:10px 0}
.fails h2{margin:4px 0 6px;color:var(--bad)}.fails ol{margin:0;padding-left:3.2em;max-height:260px;overflow:auto}
.fails li{margin:2px 0;word-break:break-all}.fails .msg{color:var(--muted)}
table.kv,table.cls{border-collapse:collapse;background:var(--card);border:1px solid var(--line)}
table.kv td,table.kv th,table.cls td,table.cls th{padding:3px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.kv th{color:var(--muted);font-weight:500;white-space:nowrap}
table.cls td.num{text-align:right;font-variant-numeric:tabular-nums}
details.settings{margin:8px 0}details.settings summary{cursor:pointer;color:var(--muted)}
.pager{display:flex;flex-wrap:wrap;gap:4px;align-items:center;margin:12px 0}
.pager a{padding:2px 9px;border:1px solid var(--line);border-radius:5px;background:var(--card);color:var(--accent);text-decoration:none}
.pager a.current{background:var(--accent);color:#fff;border-color:var(--accent)}
.pager label{margin-left:auto;color:var(--muted);cursor:pointer}
.js .page:not(.current){display:none}
.only-failed .item:not(.failed){display:none}.only-failed .page{display:block!important}
.only-failed .pager a{display:none}
.item{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:12px 0;padding:10px 14px}
.item.failed{border-color:#f3b8b3;border-left:5px solid var(--bad)}
.item.wrong{border-left:5px solid #ef8f00}
.item header{display:flex;flex-wrap:wrap;gap:8px;align-items:baseline;margin-bottom:6px}
.idx{color:var(--muted);font-variant-numeric:tabular-nums}
.badge{font-size:12px;border-radius:10px;padding:1px 8px;background:#eef1f6;color:var(--fg);white-space:nowrap}
.badge.pred{background:#e3edff}.badge.ok{background:var(--goodbg);color:var(--good)}
.badge.bad{background:var(--badbg);color:var(--bad)}
.err{background:var(--badbg);color:var(--bad);border-radius:5px;padding:6px 10px;margin:6px 0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}
.body{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}figcaption{color:var(--muted);font-size:12px;margin-top:3px}
figure.views img{display:block;border-radius:3px}
.side{flex:1;min-width:280px}
table.topk{border-collapse:collapse;width:100%;max-width:520px;table-layout:fixed}
table.topk col.lab{width:9em}table.topk col.p{width:3.6em}
table.topk td{padding:2px 6px 2px 0}table.topk td.lab{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
table.topk td.p{text-align:right;font-variant-numeric:tabular-nums}
table.topk tr.truth td.lab{font-weight:700;color:var(--good)}
.bar{background:#eef1f6;border-radius:3px;height:12px;min-width:120px}
.bar>span{display:block;height:12px;border-radius:3px;background:#8fb3f0}
tr.top1 .bar>span{background:var(--accent)}tr.truth .bar>span{background:var(--good)}
dl.extra{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:8px 0 0;font-size:12px;color:var(--muted)}
dl.extra dt{font-weight:600}dl.extra dd{margin:0;word-break:break-all}
details.v3d{margin-top:6px}details.v3d summary{cursor:pointer;color:var(--accent)}
details.v3d[open]{border:1px solid var(--line);border-radius:4px;padding:4px}
details.v3d .plot{height:340px;min-width:300px}
.left{display:flex;flex-direction:column}
figure.conf{flex:1 1 520px;max-width:760px}table.cls caption{text-align:left;padding:0 0 4px}
img.confusion{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:4px}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
footer{color:var(--muted);font-size:12px;margin-top:30px;border-top:1px solid var(--line);padding-top:8px}
"""

# Pages (show the one holding the URL's #anchor), the failed-only switch, lazy 3D views.
_JS = """
(function(){
var root=document.documentElement;root.classList.add('js');
function show(page){var g=page.parentNode;
 g.querySelectorAll(':scope>.page').forEach(function(p){p.classList.toggle('current',p===page);});
 g.querySelectorAll(':scope>.pager a').forEach(function(a){a.classList.toggle('current',a.getAttribute('href')==='#'+page.id);});}
function route(){var id=decodeURIComponent(location.hash.slice(1));var el=id&&document.getElementById(id);
 document.querySelectorAll('.group').forEach(function(g){var first=g.querySelector(':scope>.page');
  var target=el&&(el.classList.contains('page')?el:el.closest('.page'));
  if(target&&target.parentNode===g){show(target);}else if(!g.querySelector(':scope>.page.current')&&first){show(first);}});
 if(el&&!el.classList.contains('page')){el.scrollIntoView();}}
window.addEventListener('hashchange',route);route();
document.querySelectorAll('input.failed-only').forEach(function(box){box.addEventListener('change',function(){
 box.closest('.group').classList.toggle('only-failed',box.checked);});});
var tpl=document.getElementById('plotly-figure');if(!tpl||typeof Plotly==='undefined'){return;}
var spec=JSON.parse(tpl.textContent),live=[],LIMIT=%(limit)d;
function draw(d){if(d.dataset.drawn){return;}var raw=atob(d.dataset.q),n=raw.length/3;
 var lo=d.dataset.lo.split(',').map(Number),sp=d.dataset.span.split(',').map(Number),xyz=[[],[],[]];
 for(var i=0;i<n;i++){for(var a=0;a<3;a++){xyz[a].push(lo[a]+raw.charCodeAt(3*i+a)*sp[a]/255);}}
 var data=JSON.parse(JSON.stringify(spec.data));data[0].x=xyz[0];data[0].y=xyz[1];data[0].z=xyz[2];
 data[0].marker.color=xyz[1];
 Plotly.newPlot(d.querySelector('.plot'),data,JSON.parse(JSON.stringify(spec.layout)),spec.config);
 d.dataset.drawn='1';live.push(d);
 while(live.length>LIMIT){var old=live.shift();Plotly.purge(old.querySelector('.plot'));delete old.dataset.drawn;old.open=false;}}
document.addEventListener('toggle',function(e){var d=e.target;
 if(d.classList&&d.classList.contains('v3d')&&d.open){draw(d);}},true);
document.querySelectorAll('details.v3d[open]').forEach(draw);
})();
""" % {"limit": LIVE_3D_LIMIT}

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; base-uri 'none'; form-action 'none'")


def _e(text: object) -> str:
    """HTML-escape any value for text and attribute positions."""
    return html.escape(str(text), quote=True)


def _fmt_prob(p: float) -> str:
    return f"{p:.3f}"


def _count(shown: int, total: int) -> str:
    return f"{total:,} points" if shown == total else f"{shown:,} of {total:,} points"


def _kv_table(rows: Mapping[str, str]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items())
    return f'<table class="kv">{body}</table>'


def _data_uri_png(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class _Options:
    view_px: Optional[int]
    plotly: Optional[_Plotly]
    max_points_3d: int


def _card(index: int, item: ReportItem, opts: _Options) -> str:
    classes = ["item"] + (["failed"] if item.failed else []) + (["wrong"] if item.wrong else [])
    head = [f'<span class="idx">#{index + 1}</span><h3>{_e(item.title)}</h3>']
    if item.topk and not item.failed:
        head.append(f'<span class="badge pred">{_e(item.topk[0][0])} {_fmt_prob(item.topk[0][1])}</span>')
    if item.true_label is not None:
        ok = bool(item.topk) and item.topk[0][0] == item.true_label
        head.append(f'<span class="badge {"ok" if ok else "bad"}">true: {_e(item.true_label)}</span>')
    if item.up_axis is not None:
        head.append(f'<span class="badge up">up axis {_e(item.up_axis)}</span>')
    if item.failed:
        head.append('<span class="badge bad">failed</span>')
    parts = [f'<article class="{" ".join(classes)}" id="item-{index + 1}"><header>{"".join(head)}</header>']
    if item.failed:
        parts.append(f'<div class="err" role="alert">error: {_e(item.error)}</div>')
    left: List[str] = []
    if item.views is not None:
        png, (w, h) = views_png(item.views, opts.view_px)
        v, vh, vw = item.views.shape
        shown = f", shown at {opts.view_px} px" if opts.view_px is not None and max(vh, vw) > opts.view_px else ""
        left.append(
            f'<figure class="views"><img src="{_data_uri_png(png)}" width="{w}" height="{h}" '
            f'alt="{v} depth views of {_e(item.title)}"><figcaption>{v} views as the encoder saw them, '
            f"{vh}×{vw} px{shown}</figcaption></figure>"
        )
    if item.points is not None and opts.plotly is not None:
        pts = subsample_points(item.points, opts.max_points_3d)
        code = encode_points(pts)
        lo = ",".join(f"{x:.6g}" for x in code.lo)
        span = ",".join(f"{x:.6g}" for x in code.span)
        left.append(
            f'<details class="v3d" data-q="{code.data}" data-lo="{lo}" data-span="{span}">'
            f"<summary>3D view ({_count(code.count, item.points.shape[0])}, colour = height y)</summary>"
            '<div class="plot"></div></details>'
        )
    side: List[str] = []
    if item.topk:
        rows = []
        for r, (label, prob) in enumerate(item.topk):
            cls = " ".join(c for c in ("top1" if r == 0 else "", "truth" if label == item.true_label else "") if c)
            width = f"{100.0 * min(max(prob, 0.0), 1.0):.1f}%"
            rows.append(
                f'<tr class="{cls}"><td class="lab" title="{_e(label)}">{_e(label)}</td><td><div class="bar">'
                f'<span style="width:{width}"></span></div></td><td class="p">{_fmt_prob(prob)}</td></tr>'
            )
        side.append(f'<table class="topk" aria-label="top-{len(item.topk)}"><colgroup><col class="lab"><col>'
                    f'<col class="p"></colgroup>{"".join(rows)}</table>')
        if item.true_label is not None and item.true_label not in {lab for lab, _ in item.topk}:
            side.append(f'<p class="sub">true label {_e(item.true_label)} is not in the top {len(item.topk)}</p>')
    if item.extra:
        side.append('<dl class="extra">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in item.extra.items()) + "</dl>")
    body = ([f'<div class="left">{"".join(left)}</div>'] if left else []) + (
        [f'<div class="side">{"".join(side)}</div>'] if side else [])
    if body:
        parts.append(f'<div class="body">{"".join(body)}</div>')
    parts.append("</article>")
    return "".join(parts)


def _paged_cards(
    items: Sequence[ReportItem], group_id: str, per_page: int, opts: _Options, failed_switch: bool
) -> str:
    """Cards in pages of ``per_page``, one ``.group`` with a pager above and below."""
    if not items:
        return '<p class="sub">nothing to show</p>'
    n_pages = -(-len(items) // per_page)
    links = "".join(
        f'<a href="#{group_id}-p{p + 1}">{p * per_page + 1}–{min(len(items), (p + 1) * per_page)}</a>'
        for p in range(n_pages)
    ) if n_pages > 1 else ""
    switch = ('<label><input type="checkbox" class="failed-only"> failed only</label>'
              if failed_switch and any(i.failed for i in items) else "")
    pager = f'<nav class="pager">{links}{switch}</nav>' if (links or switch) else ""
    pages = []
    for p in range(n_pages):
        lo, hi = p * per_page, min(len(items), (p + 1) * per_page)
        cards = "".join(_card(i, items[i], opts) for i in range(lo, hi))
        pages.append(f'<section class="page" id="{group_id}-p{p + 1}">{cards}</section>')
    bottom = f'<nav class="pager">{links}</nav>' if links else ""
    return f'<div class="group" id="{group_id}">{pager}{"".join(pages)}{bottom}</div>'


def _document(title: str, body: str, plotly: Optional[_Plotly], needs_3d: bool) -> str:
    scripts = ""
    if plotly is not None and needs_3d:
        scripts += f'<script type="application/json" id="plotly-figure">{plotly.figure_json}</script>'
        scripts += f"<script>{plotly.js}</script>"
    scripts += f"<script>{_JS}</script>"
    made = "pointcalip --report; self-contained: no network requests"
    if plotly is not None and needs_3d:
        made += f"; 3D views by plotly {plotly.version} (plotly.js embedded)"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main>{body}<footer>{_e(made)}</footer></main>{scripts}</body></html>\n"
    )


def _three_d(items: Sequence[ReportItem], interactive_3d: bool) -> Tuple[Optional[_Plotly], str]:
    """plotly assets when some item has points (and ``interactive_3d``), and a note if they are missing."""
    if not interactive_3d or not any(i.points is not None for i in items):
        return None, ""
    plotly = _load_plotly()
    if plotly is None:
        log.warning("plotly is not installed: the HTML report has no interactive 3D views (pip install plotly)")
        return None, '<p class="note">3D views left out: plotly is not installed (<code>pip install plotly</code>).</p>'
    return plotly, ""


def _write(path: PathLike, text: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"report path {target} is a folder; give a file name such as {target / 'report.html'}")
    try:
        with atomic_open(target, "wb") as f:
            f.write(text.encode("utf-8"))
            # the temp file is private (0600); a report is a document: rw-r--r--
            os.chmod(f.name, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write report {target}: {exc.strerror or exc}; choose another path") from exc
    log.info("wrote %s (%.1f MB)", target, target.stat().st_size / 1e6)
    return target


def _check_paging(max_items: int, per_page: int) -> None:
    if max_items < 0:
        raise ValueError(f"max_items must be >= 0, got {max_items}")
    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")


def _cap_note(total: int, shown: int, what: str) -> str:
    if shown >= total:
        return ""
    return (f'<p class="note">Showing the first {shown:,} of {total:,} {what}; '
            f"{total - shown:,} left out (report cap max_items = {shown:,}).</p>")


# --------------------------------------------------------------------------------------------
# public writers


def write_classify_report(
    path: PathLike,
    items: Sequence[ReportItem],
    *,
    title: str = "pointcalip classify",
    settings: Optional[Mapping[str, str]] = None,
    max_items: int = 1000,
    per_page: int = 50,
    view_px: Optional[int] = VIEW_PX,
    interactive_3d: bool = True,
    max_points_3d: int = MAX_POINTS_3D,
) -> Path:
    """Write the ``classify`` report: one card per input, failures listed first.

    Args:
        path: the ``.html`` file to write (atomically: temp file beside it, then rename).
        items: one :class:`ReportItem` per input, in input order.
        title: page title.
        settings: ``name -> value`` lines (model, weights, classes, method, ...).
        max_items: at most this many cards (the first ones); a note says how many were left
            out. Every failure is still listed at the top.
        per_page: cards per page.
        view_px: longest side of a view in the file (``None``: native size).
        interactive_3d: embed plotly.js and a lazily drawn 3D view per card with points.
        max_points_3d: points per 3D view.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is a folder or cannot be written.
    """
    _check_paging(max_items, per_page)
    shown = list(items[:max_items])
    n_failed = sum(i.failed for i in items)
    opts_plotly, note_3d = _three_d(shown, interactive_3d)
    opts = _Options(view_px, opts_plotly, max_points_3d)
    tiles = [("inputs", f"{len(items):,}", ""), ("classified", f"{len(items) - n_failed:,}", ""),
             ("failed", f"{n_failed:,}", " bad" if n_failed else "")]
    labels = [i.topk[0][0] for i in items if i.topk and not i.failed]
    if labels:
        top = max(set(labels), key=lambda lab: (labels.count(lab), -labels.index(lab)))
        tiles.append(("most frequent top-1", f"{top}", ""))
    parts = [f"<h1>{_e(title)}</h1>", _tiles(tiles)]
    if n_failed:
        lis = []
        for k, it in enumerate(items):
            if not it.failed:
                continue
            name = (f'<a href="#item-{k + 1}">#{k + 1} {_e(it.title)}</a>' if k < max_items
                    else f"#{k + 1} {_e(it.title)} (card left out)")
            lis.append(f'<li>{name} <span class="msg">— {_e(it.error)}</span></li>')
        parts.append(f'<div class="fails"><h2>{n_failed:,} failed input{"s" if n_failed != 1 else ""}</h2>'
                     f'<ol>{"".join(lis)}</ol></div>')
    parts.append(_cap_note(len(items), len(shown), "inputs"))
    parts.append(note_3d)
    if settings:
        parts.append(f'<details class="settings"><summary>settings ({len(settings)})</summary>{_kv_table(settings)}</details>')
    parts.append("<h2>Inputs</h2>")
    parts.append(_paged_cards(shown, "inputs", per_page, opts, failed_switch=True))
    return _write(path, _document(title, "".join(parts), opts.plotly, any(i.points is not None for i in shown)))


def _tiles(tiles: Sequence[Tuple[str, str, str]]) -> str:
    return '<div class="tiles">' + "".join(
        f'<div class="tile{cls}"><b>{_e(value)}</b><span>{_e(name)}</span></div>' for name, value, cls in tiles
    ) + "</div>"


def _confusion_png(confusion_png: Union[None, bytes, PathLike]) -> Optional[bytes]:
    if confusion_png is None:
        return None
    if isinstance(confusion_png, (bytes, bytearray)):
        data = bytes(confusion_png)
        where = "confusion_png bytes"
    else:
        where = str(confusion_png)
        try:
            data = Path(confusion_png).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read confusion plot {where}: {exc.strerror or exc}") from exc
    if not data.startswith(PNG_MAGIC):
        raise ValueError(f"{where} is not a PNG (first bytes {data[:8]!r})")
    return data


def write_eval_report(
    path: PathLike,
    *,
    summary: Mapping[str, str],
    per_class: Sequence[Tuple[str, int, float]],
    gallery: Sequence[ReportItem],
    confusion_png: Union[None, bytes, PathLike] = None,
    title: str = "pointcalip eval",
    settings: Optional[Mapping[str, str]] = None,
    max_items: int = 1000,
    per_page: int = 50,
    view_px: Optional[int] = VIEW_PX,
    interactive_3d: bool = True,
    max_points_3d: int = MAX_POINTS_3D,
) -> Path:
    """Write the ``eval`` report: metrics, confusion plot, per-class accuracy, wrong clouds.

    Args:
        path: the ``.html`` file to write (atomically).
        summary: headline metrics, ``name -> formatted value`` (top-1, top-5, mean class
            accuracy, how hyper-parameters were selected, ...), shown as tiles in this order.
        per_class: ``(class, support, accuracy in [0, 1])`` per class; shown worst first.
        gallery: the most confidently wrong clouds (see :func:`most_confident_wrong`), each
            with ``true_label`` set, most confident first.
        confusion_png: the confusion plot, PNG bytes or a PNG file; ``None`` to leave out.
        title, settings, max_items, per_page, view_px, interactive_3d, max_points_3d: as in
            :func:`write_classify_report` (``max_items`` caps the gallery).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is a folder or cannot be written, ``confusion_png`` cannot be read.
        ValueError: ``confusion_png`` is not a PNG, an accuracy is outside ``[0, 1]``.
    """
    _check_paging(max_items, per_page)
    png = _confusion_png(confusion_png)
    rows = []
    for name, support, acc in per_class:
        acc = float(acc)
        if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise ValueError(f"per_class accuracy of {name!r} is {acc}, not in [0, 1]")
        rows.append((str(name), int(support), acc))
    shown = list(gallery[:max_items])
    opts_plotly, note_3d = _three_d(shown, interactive_3d)
    opts = _Options(view_px, opts_plotly, max_points_3d)

    parts = [f"<h1>{_e(title)}</h1>", _tiles([(k, v, "") for k, v in summary.items()])]
    if settings:
        parts.append(f'<details class="settings"><summary>settings ({len(settings)})</summary>{_kv_table(settings)}</details>')
    left = ""
    if png is not None:
        left = (f'<figure class="conf"><img class="confusion" src="{_data_uri_png(png)}" alt="confusion matrix">'
                "<figcaption>row-normalised confusion matrix (rows: true class)</figcaption></figure>")
    right = ""
    if rows:
        order = sorted(range(len(rows)), key=lambda r: (rows[r][2], r))
        trs = "".join(
            f'<tr><td>{_e(rows[r][0])}</td><td class="num">{rows[r][1]:,}</td>'
            f'<td class="num">{100 * rows[r][2]:.1f}%</td><td><div class="bar"><span style="width:{100 * rows[r][2]:.1f}%">'
            "</span></div></td></tr>"
            for r in order
        )
        right = ('<table class="cls"><caption class="sub">per-class accuracy, worst first</caption>'
                 f"<tr><th>class</th><th>support</th><th>accuracy</th><th></th></tr>{trs}</table>")
    if left or right:
        parts.append(f'<h2>Confusion and per-class accuracy</h2><div class="cols">{left}{right}</div>')
    parts.append(f"<h2>Most confidently wrong ({len(gallery):,})</h2>")
    parts.append(_cap_note(len(gallery), len(shown), "wrong clouds"))
    parts.append(note_3d)
    parts.append(_paged_cards(shown, "gallery", per_page, opts, failed_switch=False))
    return _write(path, _document(title, "".join(parts), opts.plotly, any(i.points is not None for i in shown)))
