"""The ``--report`` HTML file: self-contained, escaped, paged, capped, and showing the right things."""

from __future__ import annotations

import base64
import html
import io
import re
import stat
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from PIL import Image

from pointcalip.errors import ConfigError
from pointcalip.htmlreport import (
    PNG_MAGIC,
    PointCode,
    ReportItem,
    decode_points,
    encode_points,
    most_confident_wrong,
    most_confident_wrong_naive,
    subsample_points,
    views_png,
    write_classify_report,
    write_eval_report,
)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BAD_NAME = 'scans/<script>alert("x")</script> & co.ply'
BAD_ERROR = "scans/<script>alert(\"x\")</script> & co.ply: line 3 has 2 numbers, expected 3 (<b>fix</b> & retry)"
PLOTLY_BANNER = re.compile(r"\* plotly\.js v\d")


class Page(HTMLParser):
    """Everything the checks need: tags with attributes, text, style sheets, nesting errors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.text: List[str] = []
        self.styles: List[str] = []
        self.stack: List[str] = []
        self.nesting_errors: List[str] = []
        self.script_bodies: List[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.nesting_errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        top = self.stack[-1] if self.stack else ""
        if top == "style":
            self.styles.append(data)
        elif top == "script":
            self.script_bodies.append(data)
        else:
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def find(self, tag: str, **attrs: str) -> List[Dict[str, Optional[str]]]:
        """Tags named ``tag`` whose attributes equal ``attrs`` (``class_``: one of its classes)."""
        def match(a: Dict[str, Optional[str]]) -> bool:
            return all(v in (a.get("class") or "").split() if k == "class_" else a.get(k) == v for k, v in attrs.items())

        return [a for t, a in self.tags if t == tag and match(a)]


def parse(path: Path) -> Tuple[str, Page]:
    raw = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(raw)
    page.close()
    return raw, page


def assert_self_contained(raw: str, page: Page) -> int:
    """Well nested, every image an embedded PNG, no URL that could fetch; returns the image count."""
    assert raw.startswith("<!DOCTYPE html>")
    assert page.nesting_errors == [] and page.stack == []
    assert page.find("meta", **{"http-equiv": "Content-Security-Policy"}), "no CSP meta"
    csp = page.find("meta", **{"http-equiv": "Content-Security-Policy"})[0]["content"]
    assert "default-src 'none'" in csp and "img-src data:" in csp
    images = 0
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), f"<{tag}> could fetch"
        if tag == "script":
            assert "src" not in attrs, f"<script src={attrs['src']!r}>"
        for name in ("src", "href", "srcset", "poster", "data", "action", "background"):
            value = attrs.get(name)
            if value is None:
                continue
            if tag == "a" and name == "href":
                assert value.startswith("#"), f"link to {value!r}"
                continue
            assert value.startswith("data:"), f"<{tag} {name}={value[:60]!r}>"
        if tag == "img":
            images += 1
            src = attrs["src"]
            assert src.startswith("data:image/png;base64,")
            png = base64.b64decode(src.split(",", 1)[1], validate=True)
            assert png.startswith(PNG_MAGIC)
            with Image.open(io.BytesIO(png)) as im:
                im.load()
                if "width" in attrs:
                    assert im.size == (int(attrs["width"]), int(attrs["height"]))
        style = attrs.get("style")
        if style is not None:
            assert "url(" not in style and "@import" not in style
    css = "\n".join(page.styles)
    assert "@import" not in css and "@font-face" not in css
    for url in re.findall(r"url\(([^)]*)\)", css):
        assert url.strip("'\" ").startswith("data:"), url
    assert not re.search(r"https?://", css)
    assert len(PLOTLY_BANNER.findall(raw)) <= 1, "plotly.js embedded more than once"
    assert "cdn.plot.ly" not in "".join(a.get("src") or "" for _, a in page.tags)
    assert "MathJax" not in "".join(page.script_bodies[-1:])  # our own script never loads MathJax
    return images


def fake_views(v: int, h: int, w: int, seed: int, background: float = 1.0) -> np.ndarray:
    """``(V, H, W)`` pictures: a filled disc per view on a plain background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.full((v, h, w), background)
    for k in range(v):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.25) * h
        out[k][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.0, 0.7)
    return out


def good_item(i: int, *, views: int = 6, size: int = 40, points: int = 300, true_label: Optional[str] = None,
              topk=None) -> ReportItem:
    rng = np.random.default_rng(100 + i)
    return ReportItem(
        title=f"clouds/obj_{i}.ply",
        views=fake_views(views, size, size, i),
        points=rng.normal(size=(points, 3)),
        topk=topk or [("chair", 0.61), ("table", 0.25), ("lamp", 0.14)],
        up_axis="+z" if i % 2 else "+y",
        true_label=true_label,
        extra={"n_points": f"{points}", "outliers dropped": "3"},
    )


@pytest.fixture(scope="module")
def classify_report(tmp_path_factory) -> Tuple[Path, List[ReportItem]]:
    items = [
        good_item(0),
        ReportItem(BAD_NAME, error=BAD_ERROR),
        good_item(3, topk=[("airplane", 0.9), ("lamp & shade", 0.075), ("mug", 0.025)]),
    ]
    path = tmp_path_factory.mktemp("rep") / "out" / "report.html"
    written = write_classify_report(path, items, title="classify <demo>", settings={"backbone": "RN50", "classes": "a,b"})
    assert written == path
    return path, items


def test_classify_report_is_self_contained(classify_report):
    path, items = classify_report
    raw, page = parse(path)
    assert assert_self_contained(raw, page) == 2  # one contact sheet per input with views
    assert len(PLOTLY_BANNER.findall(raw)) == 1  # 3D views are on: plotly.js is embedded, once
    # exactly our three scripts (figure template, plotly.js, page logic): nothing injected from titles
    assert [a.get("type") for t, a in page.tags if t == "script"] == ["application/json", None, None]


def test_classify_report_shows_topk_up_axis_and_counts(classify_report):
    path, items = classify_report
    raw, page = parse(path)
    text = page.all_text
    for item in items:
        for label, prob in item.topk:
            assert label in text and f"{prob:.3f}" in text
    assert "up axis +y" in text and "up axis +z" in text
    assert re.search(r"\b3 inputs\b", text) and re.search(r"\b1 failed\b", text) and re.search(r"\b2 classified\b", text)
    # bar widths follow the probabilities
    assert 'style="width:61.0%"' in raw and 'style="width:90.0%"' in raw and 'style="width:7.5%"' in raw
    cards = page.find("article")
    assert [c["id"] for c in cards] == ["item-1", "item-2", "item-3"]
    assert "classify <demo>" in text  # title shown (escaped in the source)
    assert "<demo>" not in raw and "classify &lt;demo&gt;" in raw


def test_failed_input_has_escaped_error_row_and_anchor(classify_report):
    path, _ = classify_report
    raw, page = parse(path)
    cards = {a["id"]: a for a in page.find("article")}
    assert "failed" in cards["item-2"]["class"].split() and "failed" not in cards["item-1"]["class"].split()
    assert page.find("a", href="#item-2"), "failed list links to the failed card"
    assert page.find("div", class_="err")
    text = page.all_text
    assert f"error: {BAD_ERROR}" in text  # the message, whole, as the reader sees it
    assert BAD_NAME in text
    # the raw source holds only the escaped forms
    assert "<script>alert" not in raw and "<b>fix</b>" not in raw
    assert html.escape(BAD_ERROR, quote=True) in raw
    assert "&amp; co.ply" in raw


def test_3d_payload_decodes_to_the_subsampled_cloud(classify_report):
    path, items = classify_report
    _, page = parse(path)
    details = page.find("details", class_="v3d")
    assert len(details) == 2  # one per input with points, none for the failed one
    for attrs, item in zip(details, [items[0], items[2]]):
        code = PointCode(attrs["data-q"], tuple(map(float, attrs["data-lo"].split(","))),
                         tuple(map(float, attrs["data-span"].split(","))), 0)
        got = decode_points(code)
        want = subsample_points(item.points)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=np.ptp(want, axis=0).max() / 510 + 1e-4)


def test_eval_report(tmp_path):
    confusion = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(confusion, "PNG")
    gallery = [good_item(i, views=10, size=30, true_label="table",
                         topk=[("chair", 0.8 - 0.1 * i), ("table", 0.1 + 0.1 * i), ("lamp", 0.1)]) for i in range(3)]
    gallery.append(good_item(3, true_label="sofa", topk=[("chair", 0.4), ("lamp", 0.35), ("table", 0.25)]))
    out = write_eval_report(
        tmp_path / "eval.html",
        summary={"top-1": "81.4%", "mean class accuracy": "77.0%", "hyper-parameters": "oracle (tuned on test labels)"},
        confusion_png=confusion.getvalue(),
        per_class=[("chair", 10, 0.9), ("table", 8, 0.25), ("sofa", 5, 0.6)],
        gallery=gallery, title="eval <toy>", settings={"split": "test"},
    )
    raw, page = parse(out)
    assert assert_self_contained(raw, page) == 1 + len(gallery)
    conf = page.find("img", class_="confusion")
    assert len(conf) == 1 and base64.b64decode(conf[0]["src"].split(",", 1)[1]) == confusion.getvalue()
    text = page.all_text
    for value in ("81.4%", "77.0%", "oracle (tuned on test labels)"):
        assert value in text
    # per-class rows, worst first
    rows = re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td><td class=\"num\">([\d.]+)%</td>", raw)
    assert rows == [("table", "8", "25.0"), ("sofa", "5", "60.0"), ("chair", "10", "90.0")]
    # gallery: every card is wrong, shows its true label, and the true label's row is marked
    cards = page.find("article")
    assert len(cards) == 4 and all("wrong" in c["class"].split() for c in cards)
    assert text.count("true: table") == 3 and "true: sofa" in text
    assert raw.count('<tr class="truth">') == 3  # table is in the top-k of the first three
    assert "true label sofa is not in the top 3" in text
    assert "Most confidently wrong (4)" in text


def test_cap_pages_and_failures_beyond_the_cap(tmp_path):
    items = [good_item(i, views=2, size=8, points=10) for i in range(7)]
    items[1] = ReportItem("early_bad.ply", error="unreadable")
    items[6] = ReportItem("late_bad.ply", error="empty cloud")
    out = write_classify_report(tmp_path / "r.html", items, title="t", settings={}, max_items=5, per_page=2,
                                interactive_3d=False)
    raw, page = parse(out)
    assert_self_contained(raw, page)
    assert not PLOTLY_BANNER.search(raw)  # no 3D views asked: no plotly.js
    assert not page.find("details", class_="v3d")
    pages = page.find("section", class_="page")
    assert [p["id"] for p in pages] == ["inputs-p1", "inputs-p2", "inputs-p3"]
    assert len(page.find("article")) == 5
    text = page.all_text
    assert "Showing the first 5 of 7 inputs; 2 left out" in text
    assert "2 failed inputs" in text
    assert page.find("a", href="#item-2") and not page.find("a", href="#item-7")
    assert "#7 late_bad.ply (card left out)" in text and "empty cloud" in text
    assert page.find("a", href="#inputs-p3")  # pager


def test_without_plotly_the_report_still_works(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly -> ImportError
    out = write_classify_report(tmp_path / "r.html", [good_item(0)], title="t", settings={})
    raw, page = parse(out)
    assert assert_self_contained(raw, page) == 1
    assert not PLOTLY_BANNER.search(raw) and not page.find("details", class_="v3d")
    assert "plotly is not installed" in page.all_text
    assert "chair" in page.all_text


def test_written_atomically_readable_and_errors(tmp_path):
    out = write_classify_report(tmp_path / "r.html", [ReportItem("a.ply", error="x")], title="t", settings={},
                                interactive_3d=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temp file left
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with pytest.raises(ConfigError, match="is a folder"):
        write_classify_report(tmp_path, [], title="t", settings={})
    with pytest.raises(ValueError, match="not a PNG"):
        write_eval_report(tmp_path / "e.html", summary={}, confusion_png=b"GIF89a", per_class=[], gallery=[],
                          title="t", settings={})
    with pytest.raises(ConfigError, match="cannot read confusion plot"):
        write_eval_report(tmp_path / "e.html", summary={}, confusion_png=tmp_path / "missing.png", per_class=[],
                          gallery=[], title="t", settings={})
    assert not (tmp_path / "e.html").exists()


def test_report_item_checks_shapes_and_values():
    with pytest.raises(ValueError, match=r"views must be \(V, H, W\), got shape \(4, 4\)"):
        ReportItem("a", views=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ReportItem("a", views=np.full((1, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"points must be \(M, 3\), got shape \(5, 2\)"):
        ReportItem("a", points=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="not all finite"):
        ReportItem("a", points=np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="probability of 'x'"):
        ReportItem("a", topk=[("x", 1.5)])
    item = ReportItem("a", topk=[("x", np.float32(0.5))], extra={"n": 3})
    assert item.topk == (("x", 0.5),) and item.extra == {"n": "3"}


def test_views_png_layout_and_pixels():
    views = np.random.default_rng(0).integers(0, 256, size=(10, 110, 110), dtype=np.uint8)
    png, size = views_png(views, view_px=None)
    assert size == (5 * 110 + 4 * 2, 2 * 110 + 2)  # 10 views -> 5 x 2 with 2-pixel gaps
    sheet = np.asarray(Image.open(io.BytesIO(png)))
    for k in range(10):
        r, c = divmod(k, 5)
        np.testing.assert_array_equal(sheet[r * 112:r * 112 + 110, c * 112:c * 112 + 110], views[k])
    _, small = views_png(views.astype(np.float64) / 255.0, view_px=96)
    assert small == (5 * 96 + 4 * 2, 2 * 96 + 2)
    _, row = views_png(np.zeros((6, 20, 30)), view_px=96)  # never upscaled; <= 6 views in one row
    assert row == (6 * 30 + 5 * 2, 20)
    black = np.asarray(Image.open(io.BytesIO(views_png(np.zeros((1, 5, 5)))[0])))
    white = np.asarray(Image.open(io.BytesIO(views_png(np.ones((1, 5, 5)))[0])))
    assert (black == 0).all() and (white == 255).all()  # background kept as given


def test_point_code_round_trip_and_subsample():
    rng = np.random.default_rng(1)
    for m in (1, 7, 3000):
        p = rng.normal(size=(m, 3)) * [1.0, 0.2, 3.0]
        code = encode_points(p)
        assert code.count == m and len(base64.b64decode(code.data)) == 3 * m
        got = decode_points(code)
        span = np.ptp(p, axis=0)
        assert np.all(np.abs(got - p) <= span / 510 + 1e-12)
    flat = np.zeros((4, 3))  # zero span on every axis decodes exactly
    np.testing.assert_array_equal(decode_points(encode_points(flat)), flat)
    big = rng.normal(size=(5000, 3))
    sub = subsample_points(big, 2048)
    assert sub.shape == (2048, 3)
    np.testing.assert_array_equal(sub, subsample_points(big, 2048))  # deterministic
    rows = {tuple(r) for r in big}
    assert all(tuple(r) in rows for r in sub) and len({tuple(r) for r in sub}) == 2048
    assert subsample_points(big[:10], 2048).shape == (10, 3)


def test_most_confident_wrong_matches_loop_reference():
    rng = np.random.default_rng(2)
    for trial in range(20):
        b, k = rng.integers(1, 40), rng.integers(2, 6)
        probs = np.round(rng.dirichlet(np.ones(k), size=b), 1)  # rounding makes ties
        labels = rng.integers(0, k, size=b)
        for top in (0, 1, 5, 100):
            np.testing.assert_array_equal(most_confident_wrong(probs, labels, top),
                                          most_confident_wrong_naive(probs, labels, top))
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    np.testing.assert_array_equal(most_confident_wrong(probs, np.array([1, 1, 0, 1]), 5), [0, 2, 3])
    with pytest.raises(ValueError, match=r"labels must be \(B,\)"):
        most_confident_wrong(probs, np.zeros(3, dtype=int), 1)
