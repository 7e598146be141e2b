"""Metrics on small hand-made logits whose answers are worked out by hand (docs/method.md §5)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pointcalip.metrics import (classification_metrics, confused_pairs, confusion_matrix, label_rank,
                                per_class_table, topk_accuracy)
from pointcalip.report import plot_confusion, write_metric_files

CLASSES = ["a", "b", "c"]
# 5 clouds, 3 classes. Row by row: predicted (argmax), label, label rank.
LOGITS = np.array([
    [3.0, 1.0, 2.0],  # label 0 -> predicted 0, rank 0
    [3.0, 1.0, 2.0],  # label 2 -> predicted 0, rank 1
    [0.0, 5.0, 1.0],  # label 1 -> predicted 1, rank 0
    [2.0, 2.0, 0.0],  # label 1 -> tie with class 0 (lower index wins): predicted 0, rank 1
    [1.0, 0.0, 0.0],  # label 0 -> predicted 0, rank 0
])
LABELS = np.array([0, 2, 1, 1, 0])


def test_hand_made_three_classes() -> None:
    m = classification_metrics(LOGITS, LABELS, CLASSES)
    assert m["top1"] == pytest.approx(60.0)  # clouds 0, 2, 4
    assert m["top5"] == pytest.approx(100.0)  # K = 3 < 5: every label is in the top 5
    # per class: a 2/2, b 1/2, c 0/1
    assert m["per_class_accuracy"] == {"a": pytest.approx(100.0), "b": pytest.approx(50.0), "c": pytest.approx(0.0)}
    assert m["mean_class_accuracy"] == pytest.approx(50.0)
    assert m["support"] == {"a": 2, "b": 2, "c": 1}
    assert m["num_samples"] == 5
    expected = np.array([[2, 0, 0],   # true a: both predicted a
                         [1, 1, 0],   # true b: one a (the tie), one b
                         [1, 0, 0]])  # true c: predicted a
    np.testing.assert_array_equal(m["confusion"], expected)
    assert m["confusion"].dtype == np.int64
    np.testing.assert_array_equal(label_rank(LOGITS, LABELS), [0, 1, 0, 1, 0])
    assert topk_accuracy(LOGITS, LABELS, 1) == pytest.approx(60.0)
    assert topk_accuracy(LOGITS, LABELS, 2) == pytest.approx(100.0)


def test_ties_follow_argmax() -> None:
    # all logits equal: argmax is class 0, so only label 0 is top-1; label j has rank j
    logits = np.zeros((4, 4))
    labels = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(label_rank(logits, labels), [0, 1, 2, 3])
    m = classification_metrics(logits, labels, list("wxyz"))
    assert m["top1"] == pytest.approx(25.0)
    assert topk_accuracy(logits, labels, 3) == pytest.approx(75.0)  # rank 3 is outside the top 3
    # a tie with a *higher* class index does not hurt the label
    assert label_rank(np.array([[1.0, 1.0]]), np.array([0]))[0] == 0


def test_top5_with_more_classes() -> None:
    # 7 classes; the label's logit is 6th highest in cloud 0 and 5th highest in cloud 1
    logits = np.array([[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                       [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = np.array([5, 4])
    m = classification_metrics(logits, labels, list("abcdefg"))
    assert m["top5"] == pytest.approx(50.0) and m["top1"] == 0.0
    # an absent class has no accuracy and does not enter the mean
    assert m["per_class_accuracy"]["a"] is None and m["mean_class_accuracy"] == 0.0


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(LOGITS[:, :2], LABELS, CLASSES)
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(LOGITS, LABELS[:3], CLASSES)
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(LOGITS, np.array([0, 1, 2, 3, 0]), CLASSES)
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.full((5, 3), np.nan), LABELS, CLASSES)
    empty = classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), CLASSES)
    assert empty["top1"] == 0.0 and empty["num_samples"] == 0


def test_per_class_table_and_pairs() -> None:
    cm = np.array([[5, 3, 0],
                   [1, 4, 1],
                   [0, 0, 0]])
    rows = per_class_table(cm, CLASSES)
    assert rows[0] == ("a", 8, 5, pytest.approx(62.5), 6, pytest.approx(500 / 6), "b", 3)
    assert rows[1] == ("b", 6, 4, pytest.approx(400 / 6), 7, pytest.approx(400 / 7), "a", 1)  # tie a/c: a
    assert rows[2] == ("c", 0, 0, None, 1, pytest.approx(0.0), None, 0)
    assert confused_pairs(cm, 10) == [(0, 1, 3), (1, 0, 1), (1, 2, 1)]
    assert confused_pairs(cm, 1) == [(0, 1, 3)]
    assert confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist() == [[1, 1], [0, 1]]


def test_metric_files_and_figures(tmp_path) -> None:
    cm = np.array([[5, 3, 0], [1, 4, 1], [0, 0, 0]])
    paths = write_metric_files(tmp_path, cm, CLASSES)
    np.testing.assert_array_equal(np.load(paths["confusion"]), cm)
    with open(paths["per_class"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == CLASSES
    assert rows[0]["accuracy"] == "62.5000" and rows[0]["most_confused_with"] == "b"
    assert rows[2]["accuracy"] == "" and rows[2]["most_confused_with"] == ""
    plot_confusion(tmp_path / "m.png", cm, CLASSES, "matrix")
    big = np.diag(np.arange(1, 81))
    big[3, 7] = 9
    plot_confusion(tmp_path / "p.png", big, [f"class{i}" for i in range(80)], "pairs")  # > 60: top pairs
    for name in ("m.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_global_matplotlib_state(tmp_path) -> None:
    import sys

    plot_confusion(tmp_path / "m.png", np.eye(3, dtype=np.int64), CLASSES, "t")
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
