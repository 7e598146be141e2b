"""Per-view CALIP components of a dataset split, encoded in batches and cached on disk.

Symbols: ``B`` clouds, ``V`` views, ``K`` classes, ``D`` width.

:class:`EvalModel` holds the engine and (lazily) the class text features: template averages,
or a prompt file's sentences (docs/method.md §3.3). :func:`dataset_components` streams a
dataset (subset) through the engine batch by batch, reading clouds with ``dataset.points_of``
so lazily stored datasets never sit in memory whole, and caches the ``(B, V, 3, K)`` result.

Blocks (docs/method.md §10): the rows are cut into blocks of whole batches
(:func:`block_bounds`, at most :data:`BLOCK_BATCHES` batches each). Each finished block is
cached at once, so a killed run resumes without re-encoding finished blocks, and the full
result replaces the block entries when the last block is done. Under ``torchrun`` each rank
encodes a contiguous run of blocks; every batch then holds exactly the clouds it holds in a
single process, and the components are gathered on rank 0 in dataset order.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pointcalip import distributed
from pointcalip.cache import ComponentCache, cache_key
from pointcalip.config import EvalConfig
from pointcalip.engine import engine_from_config

COMPONENTS_VERSION = "components-v2"
BLOCK_BATCHES = 64  # most batches per cached block
MIN_BLOCKS = 16  # smaller datasets get shorter blocks, so ranks share the work evenly


class EvalModel:
    """The engine of an evaluation; the class text features are encoded only when an image
    must be encoded (a run served from the component cache never needs them)."""

    def __init__(self, cfg: EvalConfig, classes: Sequence[str]) -> None:
        t0 = time.perf_counter()
        self.engine = engine_from_config(cfg)
        self.encoder = self.engine.encoder
        self.seconds_load = time.perf_counter() - t0
        self.cfg = cfg
        self.classes = list(classes)
        self._text: Optional[torch.Tensor] = None
        self._selected: Optional[Dict[str, Any]] = None  # set by prompt selection
        self._sentences: Optional[List[List[str]]] = None

    @property
    def sentences(self) -> Optional[List[List[str]]]:
        """The prompt file's sentences per class, or ``None`` when templates are used."""
        if self.cfg.prompts and self._sentences is None:
            from pointcalip.prompts import load_prompt_file

            self._sentences = load_prompt_file(self.cfg.prompts, self.classes)
        return self._sentences

    def text_identity(self) -> Dict[str, Any]:
        """What decides the text features (for cache keys)."""
        if self._selected is not None:
            return self._selected
        if self.cfg.prompts:
            return {"prompts": hashlib.sha256(repr(self.sentences).encode()).hexdigest()[:16]}
        return {"templates": list(self.cfg.templates)}

    @property
    def text(self) -> torch.Tensor:
        """``(K, D)`` class text features."""
        if self._text is None:
            from pointcalip.prompts import class_text

            cfg = self.cfg
            self._text = class_text(self.engine, self.classes, cfg.templates, cfg.prompts, cache_dir=cfg.cache_dir,
                                    use_cache=cfg.use_cache, progress=cfg.progress)
        return self._text

    def set_text(self, text: torch.Tensor, identity: Dict[str, Any]) -> None:
        """Use selected text features ``(K, D)`` from now on (prompt selection)."""
        self._text = text
        self._selected = dict(identity)


def components_key(cfg: EvalConfig, model: EvalModel, dataset: Any, split: str, indices: Optional[np.ndarray]) -> str:
    """Cache key of one dataset subset's components."""
    return cache_key({
        "version": COMPONENTS_VERSION, "dataset": cfg.dataset, "variant": getattr(dataset, "variant", None),
        "split": split, "indices": _indices_id(indices), "num_points": cfg.num_points, "data": dataset.fingerprint(),
        "backbone": Path(cfg.backbone).name, **model.engine.cache_parts(), **model.text_identity(),
        "classes": list(dataset.classes),
    })


def _indices_id(indices: Optional[np.ndarray]) -> str:
    return "all" if indices is None else hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()[:16]


class _BatchReader(torch.utils.data.Dataset):
    """Item ``i`` = the ``(b, N, 3)`` tensor of batch ``i`` of ``rows`` (read in DataLoader workers)."""

    def __init__(self, dataset: Any, rows: np.ndarray, batch_size: int) -> None:
        self.dataset, self.rows, self.batch_size = dataset, rows, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        idx = self.rows[i * self.batch_size : (i + 1) * self.batch_size]
        return torch.from_numpy(np.ascontiguousarray(self.dataset.points_of(idx), dtype=np.float32))


def row_batches(
    dataset: Any, rows: np.ndarray, batch_size: int, progress: bool = False, desc: str = "encoding",
    workers: int = 0, pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """``(b, N, 3)`` tensors of ``dataset`` rows ``rows`` in order, read batch by batch (progress + ETA).

    ``workers > 0`` reads the next batches in that many DataLoader processes while the
    caller encodes (``pin_memory`` for fast copies to a GPU); the batches are the same.
    """
    reader = _BatchReader(dataset, np.asarray(rows, dtype=np.int64), batch_size)
    if workers > 0 and len(reader) > 0:
        source: Any = torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers,
                                                  pin_memory=pin_memory)
    else:
        source = (reader[i] for i in range(len(reader)))
    with tqdm(total=len(rows), desc=desc, unit="cloud", disable=not progress, leave=False) as bar:
        for batch in source:
            yield batch
            bar.update(len(batch))


def block_bounds(n: int, batch_size: int) -> List[Tuple[int, int]]:
    """``[start, stop)`` row ranges of the cached blocks of ``n`` rows.

    A block holds ``min(BLOCK_BATCHES, ceil(batches / MIN_BLOCKS))`` whole batches (at least
    one); only the last block can end inside a batch. The cut depends on ``n`` and
    ``batch_size`` alone, not on the number of processes, so blocks cached by a run on some
    number of GPUs serve a resumed run on any other number.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    num_batches = -(-int(n) // batch_size)
    per_block = max(1, min(BLOCK_BATCHES, -(-num_batches // MIN_BLOCKS)))
    step = per_block * batch_size
    return [(s, min(int(n), s + step)) for s in range(0, int(n), step)]


def rank_blocks(blocks: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """This rank's contiguous run of ``blocks`` (all of them in a single process)."""
    a, b = distributed.shard_bounds(len(blocks), distributed.world_size(), distributed.rank())
    return list(blocks[a:b])


BlockStore = Tuple[Callable[[Tuple[int, int]], Optional[torch.Tensor]], Callable[[Tuple[int, int], torch.Tensor], None]]


def encode_blocks(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    rows: np.ndarray,
    blocks: Sequence[Tuple[int, int]],
    batch_size: int,
    *,
    workers: int = 0,
    pin_memory: bool = False,
    progress: bool = False,
    desc: str = "encoding",
    store: Optional[BlockStore] = None,
) -> List[torch.Tensor]:
    """``encode`` applied batch by batch to ``rows[start:stop]`` of each block; one CPU tensor per block.

    ``encode`` maps a ``(b, N, 3)`` batch to ``(b, ...)``. ``store = (load, save)``: blocks that
    ``load`` returns are not encoded; every newly encoded block is passed to ``save`` as soon
    as it is complete. The blocks still to encode are read as one stream of batches (so
    DataLoader workers keep reading ahead across blocks); since every block but the last of
    ``rows`` is whole batches, the batches are those of a plain run over all ``rows``.
    """
    done: Dict[Tuple[int, int], torch.Tensor] = {}
    todo: List[Tuple[int, int]] = []
    for blk in blocks:
        hit = store[0](blk) if store is not None else None
        if hit is not None:
            done[blk] = hit
        else:
            todo.append(blk)
    if todo:
        todo_rows = np.concatenate([rows[a:b] for a, b in todo])
        stream = row_batches(dataset, todo_rows, batch_size, progress, desc, workers, pin_memory)
        try:
            for blk in todo:
                parts = [encode(next(stream)).cpu() for _ in range(-(-(blk[1] - blk[0]) // batch_size))]
                done[blk] = torch.cat(parts)
                if store is not None:
                    store[1](blk, done[blk])
        finally:
            stream.close()
    return [done[blk] for blk in blocks]


def _pin(model: EvalModel) -> bool:
    return model.engine.device.type == "cuda"


def block_key(key: str, block: Tuple[int, int]) -> str:
    """Cache key of rows ``[start, stop)`` of the subset whose components key is ``key``."""
    return "blk-" + cache_key({"components": key, "rows": [int(block[0]), int(block[1])]})


def dataset_components(
    cfg: EvalConfig, model: EvalModel, dataset: Any, split: str, indices: Optional[np.ndarray] = None
) -> Tuple[Optional[torch.Tensor], np.ndarray, bool]:
    """``(components (B, V, 3, K), labels (B,), from_cache)`` of a dataset (subset).

    Under ``torchrun`` every rank must call it; rank 0 gets the components of all rows in
    dataset order and the other ranks get ``None`` in their place (``labels`` everywhere).
    ``from_cache`` is true when the whole result came from one cache entry.
    """
    rows = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = dataset.labels[rows]
    cache = ComponentCache(cfg.cache_dir)
    key = components_key(cfg, model, dataset, split, indices)
    main = distributed.is_main()
    if cfg.use_cache:
        hit = cache.load(key) if main else None
        ok = hit is not None and np.array_equal(hit["labels"], labels)
        if distributed.broadcast_object(ok):  # rank 0 decides for everyone (caches may be per machine)
            return (torch.from_numpy(hit["components"]) if main else None), labels, True
    blocks = rank_blocks(block_bounds(len(rows), cfg.batch_size))
    shape = (model.engine.num_views, 3, len(model.classes))

    def load(blk: Tuple[int, int]) -> Optional[torch.Tensor]:
        got = cache.load(block_key(key, blk))
        if got is None or got["components"].shape != (blk[1] - blk[0], *shape):
            return None
        return torch.from_numpy(got["components"])

    def save(blk: Tuple[int, int], comps: torch.Tensor) -> None:
        cache.save(block_key(key, blk), {"components": comps.numpy()},
                   meta={"split": split, "rows": list(blk), "of": key})

    parts = encode_blocks(lambda batch: model.engine.components(batch, model.text), dataset, rows, blocks, cfg.batch_size,
                          workers=cfg.workers, pin_memory=_pin(model), progress=cfg.progress and main,
                          desc=f"encoding {split}", store=(load, save) if cfg.use_cache else None)
    mine = torch.cat(parts) if parts else torch.zeros(0, *shape)
    comps = distributed.gather_rows(mine)
    if cfg.use_cache:
        if comps is not None:
            cache.save(key, {"components": comps.numpy(), "labels": labels}, meta={"split": split, "n": len(labels)})
        for blk in blocks:  # the full entry (rank 0) now holds these rows
            cache.path(block_key(key, blk)).unlink(missing_ok=True)
    return comps, labels, False


def global_features(model: EvalModel, dataset: Any, rows: np.ndarray, batch_size: int, progress: bool) -> torch.Tensor:
    """CPU ``(len(rows), V, D)`` normalised per-view global features (for prompt selection).

    Under ``torchrun`` each rank encodes its run of blocks and every rank receives all rows
    (each then makes the same, deterministic prompt selection).
    """
    rows = np.asarray(rows, dtype=np.int64)
    blocks = rank_blocks(block_bounds(len(rows), batch_size))
    parts = encode_blocks(lambda batch: model.engine.forward_features(batch).global_, dataset, rows, blocks,
                          batch_size, workers=model.cfg.workers, pin_memory=_pin(model),
                          progress=progress and distributed.is_main(), desc="encoding prompt-selection clouds")
    mine = torch.cat(parts) if parts else torch.zeros(0, model.engine.num_views, model.encoder.embed_dim)
    return distributed.all_gather_rows(mine)
