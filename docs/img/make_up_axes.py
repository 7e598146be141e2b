"""Draw docs/img/up_axes.png: each --up-axis value, a file stored that way, and what pointcalip sees.

Run from the repository root: ``.venv/bin/python docs/img/make_up_axes.py``.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pointcalip.clouds import UP_AXES, rotate_up, up_axis_matrix
from pointcalip.testing.shapes import make_object

chair = make_object("chair", 3000, seed=0)  # y up
chair = chair - chair.mean(0)
fig = Figure(figsize=(12, 4.6), dpi=100)
for col, axis in enumerate(UP_AXES):
    stored = chair @ up_axis_matrix(axis).astype(float)  # R^T applied: the file's convention
    seen = rotate_up(stored, axis)
    assert np.array_equal(seen, chair)
    for row, (pts, what) in enumerate(((stored, f"file, {axis} up"), (seen, "after --up-axis " + axis))):
        ax = fig.add_subplot(2, len(UP_AXES), row * len(UP_AXES) + col + 1, projection="3d")
        ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=0.3, c=pts[:, 1], cmap="viridis")  # y drawn upwards
        ax.set_title(what, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_xlabel("x", fontsize=7, labelpad=-12), ax.set_ylabel("z", fontsize=7, labelpad=-12)
        ax.set_zlabel("y", fontsize=7, labelpad=-12)
        ax.view_init(elev=15, azim=-60)
fig.suptitle("--up-axis: the file's up axis is turned onto +y (y drawn upwards in every panel)", fontsize=11)
fig.savefig(Path(__file__).with_name("up_axes.png"))
