"""Regenerate docs/img/report_classify.png and docs/img/report_eval.png.

Synthetic objects (pointcalip.testing.shapes), made-up probabilities, one failed input; the
first card's 3D view is opened as a reader would, then headless Chromium takes the picture:

    apt-get install -y chromium
    python docs/img/make_report_screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pointcalip.clouds.prepare import prepare_cloud
from pointcalip.htmlreport import ReportItem, write_classify_report, write_eval_report
from pointcalip.projection import get_projection
from pointcalip.report import plot_confusion
from pointcalip.testing.shapes import make_object

NAMES = ["chair", "table", "airplane", "lamp"]
CLASSES = NAMES + ["sofa", "bench", "desk", "stool"]


def item(projection, rng, name: str, seed: int, title: str, true: str | None = None, wrong: bool = False) -> ReportItem:
    pts = prepare_cloud(make_object(name, 4096, seed), 1024)
    views = projection.preview(torch.from_numpy(pts[None]))[0].numpy()
    logits = rng.normal(size=len(CLASSES))
    logits[CLASSES.index(name)] += 3.0
    if wrong:
        logits[(CLASSES.index(name) + 4) % len(CLASSES)] += 5.0
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:5]
    return ReportItem(title, views=views, points=pts, topk=[(CLASSES[i], float(p[i])) for i in top], up_axis="+y",
                      true_label=true, extra={"n_points": "4,096", "outliers dropped": "0"})


def screenshot(page: Path, png: Path) -> None:
    """Open the first 3D view, then a 1280 x 1450 headless Chromium screenshot."""
    opened = page.with_suffix(".open.html")
    opened.write_text(page.read_text(encoding="utf-8").replace('<details class="v3d"', '<details open class="v3d"', 1),
                      encoding="utf-8")
    profile = tempfile.mkdtemp()
    try:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1450", "--hide-scrollbars",
             "--virtual-time-budget=4000", f"--screenshot={png}", opened.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    projection = get_projection("pointclip")
    rng = np.random.default_rng(0)
    items = [item(projection, rng, n, s, f"scans/{n}_{s:02d}.ply") for s in range(2) for n in NAMES]
    bad = "scans/broken <script>&.ply"
    items.insert(1, ReportItem(bad, error=f"{bad}: line 3 has 2 numbers, expected 3; fix or remove the line"))
    write_classify_report(out / "report_classify.html", items, title="pointcalip classify — 9 inputs",
                          settings={"backbone": "RN50", "pretrained": "openai", "method": "calip",
                                    "projection": projection.name, "classes": ", ".join(CLASSES), "num_points": "1024"})
    conf = np.diag(rng.integers(5, 20, len(CLASSES))) + rng.integers(0, 3, (len(CLASSES),) * 2)
    plot_confusion(out / "confusion.png", conf, CLASSES, "ModelNet-toy, calip (config values)")
    acc = np.diag(conf) / conf.sum(1)
    gallery = [item(projection, rng, n, 10 + s, f"test #{100 + 7 * s + i}", true=n, wrong=True)
               for s in range(2) for i, n in enumerate(NAMES)]
    write_eval_report(out / "report_eval.html", title="pointcalip eval — toy", settings={"backbone": "RN50", "split": "test"},
                      summary={"top-1": "81.4%", "top-5": "96.2%", "mean class accuracy": "79.9%", "clouds": "2,468",
                               "hyper-parameters": "config values"},
                      confusion_png=out / "confusion.png",
                      per_class=[(c, int(conf[i].sum()), float(acc[i])) for i, c in enumerate(CLASSES)], gallery=gallery)
    for name in ("report_classify", "report_eval"):
        screenshot(out / f"{name}.html", out / f"{name}.png")
        print(out / f"{name}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
