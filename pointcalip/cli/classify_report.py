"""``classify --report``: what the HTML page keeps per input, in bounded memory."""

from __future__ import annotations

import array
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from pointcalip.cli.classify_rows import Row

REPORT_MAX_ITEMS = 1000  # cards with pictures kept in memory for --report (the rest: 8 bytes a row)
REPORT_VIEW_PX = 112  # views are kept at this size for the report (what it shows)


class ReportRows:
    """The report's items: full cards (views, points) for the first ``max_items`` inputs, and
    8 bytes per later input (top-1 label and probability), plus path and message of later
    failures; a read-only sequence of :class:`~pointcalip.htmlreport.ReportItem`."""

    def __init__(self, max_items: int, classes: Sequence[str]) -> None:
        self.max_items, self.classes = max_items, list(classes)
        self.head: List[Any] = []
        self.tail_label = array.array("i")
        self.tail_prob = array.array("f")
        self.tail_errors: Dict[int, Tuple[str, str]] = {}

    def add(self, row: Row, views: Any, points: Any) -> None:
        from pointcalip.htmlreport import ReportItem

        if len(self.head) < self.max_items:
            extra = {"points": f"{row.n_points:,}"} if row.n_points is not None else {}
            if row.outliers:
                extra["outliers dropped"] = f"{row.outliers:,}"
            self.head.append(ReportItem(row.path, views=views, points=points, topk=row.topk,
                                        up_axis=row.up_axis if row.error is None else None, error=row.error,
                                        extra=extra))
            return
        if row.error is not None:
            self.tail_errors[len(self.tail_label)] = (row.path, row.error)
            self.tail_label.append(-1)
            self.tail_prob.append(0.0)
        else:
            self.tail_label.append(self.classes.index(row.topk[0][0]))
            self.tail_prob.append(row.topk[0][1])

    def wants_pictures(self) -> bool:
        return len(self.head) < self.max_items

    def __len__(self) -> int:
        return len(self.head) + len(self.tail_label)

    def _tail(self, i: int) -> Any:
        from pointcalip.htmlreport import ReportItem

        if i in self.tail_errors:
            path, error = self.tail_errors[i]
            return ReportItem(path, error=error)
        return ReportItem("", topk=((self.classes[self.tail_label[i]], min(1.0, float(self.tail_prob[i]))),))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self.head[key] if key < len(self.head) else self._tail(key - len(self.head))

    def __iter__(self) -> Iterator[Any]:
        yield from self.head
        for i in range(len(self.tail_label)):
            yield self._tail(i)


def small_views(views: Any, px: int = REPORT_VIEW_PX) -> Any:
    """``(V, H, W)`` in ``[0, 1]`` -> ``uint8 (V, h, w)`` with ``max(h, w) <= px`` (what the report shows)."""
    import numpy as np
    from PIL import Image

    grey = np.round(np.clip(np.asarray(views, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    v, h, w = grey.shape
    if max(h, w) <= px:
        return grey
    scale = px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(g).resize(size, Image.Resampling.LANCZOS)) for g in grey])
