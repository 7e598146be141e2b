"""Prompt files and the honest per-class prompt selection (docs/method.md §3.6 and §5, "Honest selection").

Symbols: ``B`` clouds, ``V`` views, ``D`` width, ``K`` classes, ``P_k`` sentences of class ``k``.

A prompt file is JSON ``{class name: [sentence, ...]}`` (PointCLIP V2's ``*_1000.json`` files
have this form). Each class's text feature is the mean of its L2-normalised sentence
features, renormalised. ``select_prompts`` is the honest version of V2's greedy prompt search:
per class, in class order, two passes, a single sentence replaces the class's current feature
only when it strictly raises accuracy on the *validation* clouds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch

from pointcalip.errors import ConfigError

#: pointcalip's own templates for depth images, averaged per class by default.
DEPTH_TEMPLATES: Tuple[str, ...] = (
    "point cloud depth map of a {}.",
    "a depth image of a {}.",
    "a grey depth rendering of a {}, seen from one side.",
    "a smooth silhouette of a {} in shades of grey.",
    "a 3D scan of a {} shown as a depth map.",
)

MAX_PROMPT_FILE_BYTES = 64 << 20


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def load_prompt_file(path: str, classes: Sequence[str]) -> List[List[str]]:
    """The sentences of each of ``classes`` (in that order) from a JSON prompt file.

    Class names match after lower-casing and treating ``_`` as a space. Missing or extra
    class names, empty lists and non-string sentences are one-line ``ConfigError``s.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: prompt file not found; give a JSON file {{class: [sentence, ...]}}")
    if file.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise ConfigError(f"{path}: prompt file larger than {MAX_PROMPT_FILE_BYTES >> 20} MiB")
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid UTF-8 JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object {{class: [sentence, ...]}}")
    by_key = {}
    for name, sentences in data.items():
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
            raise ConfigError(f"{path}: class {name!r} needs a non-empty list of sentences")
        by_key[_key(str(name))] = [s.strip() for s in sentences]
    wanted = {_key(c): c for c in classes}
    missing = [c for k, c in wanted.items() if k not in by_key]
    extra = [k for k in by_key if k not in wanted]
    if missing or extra:
        parts = ([f"missing {len(missing)} class(es): {', '.join(missing)}"] if missing else []) + (
            [f"{len(extra)} unknown class(es): {', '.join(extra)}"] if extra else [])
        raise ConfigError(f"{path}: {'; '.join(parts)}; the file must name exactly the {len(classes)} classes")
    return [by_key[_key(c)] for c in classes]


def class_text(
    engine: Any,
    classes: Sequence[str],
    templates: Sequence[str],
    prompt_file: Optional[str] = None,
    *,
    cache_dir: Optional[str] = None,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """``(K, D)`` class text features of an engine: the templates' average per class, or, with a
    prompt file, each class's sentences averaged (both through the text cache)."""
    if not prompt_file:
        return engine.text_features(classes, templates, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    from pointcalip.text import cached_sentence_features

    sentences = load_prompt_file(prompt_file, classes)
    return cached_sentence_features(engine.encoder, sentences, cache_dir=cache_dir, use_cache=use_cache,
                                    progress=progress)


def class_features(sentence_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(K, D)``: per class, the mean of its normalised sentence features ``(P_k, D)``, renormalised."""
    means = torch.stack([f.mean(dim=0) for f in sentence_features])
    return means / means.norm(dim=-1, keepdim=True)


@dataclass(frozen=True)
class PromptSelection:
    """Result of :func:`select_prompts`.

    Attributes:
        chosen: per class, the index of the chosen sentence, or ``-1`` for the mean of all.
        text: ``(K, D)`` the selected text features.
        accuracy_before, accuracy_after: validation top-1 in percent.
        changes: ``(pass, class index, sentence index, accuracy)`` of every accepted change.
    """

    chosen: Tuple[int, ...]
    text: torch.Tensor
    accuracy_before: float
    accuracy_after: float
    changes: Tuple[Tuple[int, int, int, float], ...]


def _view_scores(global_: torch.Tensor, view_weights: Sequence[float]) -> torch.Tensor:
    """``(B, D)``: ``(1/sqrt V) sum_v w_v g_v`` of ``global_: (B, V, D)`` (logits are ``s * this @ T^T``)."""
    w = torch.as_tensor(view_weights, dtype=global_.dtype).view(1, -1, 1)
    return (global_ * w).sum(dim=1) / global_.shape[1] ** 0.5


def select_prompts(
    global_: torch.Tensor,
    labels: torch.Tensor,
    sentence_features: Sequence[torch.Tensor],
    view_weights: Sequence[float],
    passes: int = 2,
) -> PromptSelection:
    """Greedy per-class prompt selection on validation clouds, vectorised over sentences.

    Args:
        global_: ``(B, V, D)`` normalised per-view global image features of the validation clouds.
        labels: ``(B,)`` their classes.
        sentence_features: ``K`` tensors ``(P_k, D)`` of normalised sentence features.
        view_weights: ``V`` weights.
        passes: passes over the classes (two, as in PointCLIP V2).

    The score is the global (CLIP) logit; the logit scale does not change the ranking. Ties in
    the arg-max go to the lowest class index; a change is kept only on a strict gain.
    """
    if global_.dim() != 3:
        raise ValueError(f"global_ must have shape (B, V, D); got {tuple(global_.shape)}")
    x = _view_scores(global_.double(), view_weights)  # (B, D)
    text = class_features([f.double() for f in sentence_features])  # (K, D)
    scores = x @ text.t()  # (B, K)
    labels = labels.long()
    chosen = [-1] * len(sentence_features)
    best = _accuracy(scores, labels)
    before = best
    changes = []
    for pass_ in range(passes):
        for k, feats in enumerate(sentence_features):
            cand = x @ feats.double().t()  # (B, P_k): column k under each sentence
            acc = _accuracy_with_column(scores, k, cand, labels)  # (P_k,)
            p = int(torch.argmax(acc))  # first best sentence
            if acc[p] > best:
                best = float(acc[p])
                chosen[k] = p
                text[k] = feats[p].double()
                scores[:, k] = cand[:, p]
                changes.append((pass_, k, p, 100.0 * best))
    return PromptSelection(tuple(chosen), text.float(), 100.0 * before, 100.0 * best, tuple(changes))


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(dim=1) == labels).double().mean()) if len(labels) else 0.0


def _accuracy_with_column(scores: torch.Tensor, k: int, cand: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy ``(P,)`` when column ``k`` of ``scores: (B, K)`` is replaced by each column of ``cand: (B, P)``.

    ``argmax`` picks the lowest index among equal maxima, so class ``k`` wins against the best
    other class ``o`` when ``c > m`` (``o < k``) or ``c >= m`` (``o > k``).
    """
    others = scores.clone()
    others[:, k] = -torch.inf
    m, o = others.max(dim=1)  # best other class (lowest index on ties)
    wins = torch.where((o < k).unsqueeze(1), cand > m.unsqueeze(1), cand >= m.unsqueeze(1))  # (B, P)
    pred_is_k = wins
    correct = torch.where((labels == k).unsqueeze(1), pred_is_k, ~pred_is_k & (o == labels).unsqueeze(1))
    return correct.double().mean(dim=0) if len(labels) else torch.zeros(cand.shape[1], dtype=torch.float64)


def select_prompts_naive(
    global_: torch.Tensor,
    labels: torch.Tensor,
    sentence_features: Sequence[torch.Tensor],
    view_weights: Sequence[float],
    passes: int = 2,
) -> Tuple[int, ...]:
    """Slow, obviously-correct :func:`select_prompts`: every candidate scored by full logits."""
    x = _view_scores(global_.double(), view_weights)
    feats = [f.double() for f in sentence_features]
    current: List[Optional[int]] = [None] * len(feats)

    def text_of(choice: List[Optional[int]]) -> torch.Tensor:
        rows = [feats[k].mean(0) / feats[k].mean(0).norm() if c is None else feats[k][c] for k, c in enumerate(choice)]
        return torch.stack(rows)

    best = _accuracy(x @ text_of(current).t(), labels.long())
    for _ in range(passes):
        for k in range(len(feats)):
            for p in range(len(feats[k])):
                trial = list(current)
                trial[k] = p
                acc = _accuracy(x @ text_of(trial).t(), labels.long())
                if acc > best:
                    best, current = acc, trial
    return tuple(-1 if c is None else c for c in current)
