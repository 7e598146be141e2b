"""CALIP parameter-free attention, batched over all views (docs/method.md §4).

Symbols: ``B`` images (here ``B * V`` view images), ``L`` spatial tokens, ``D`` width,
``K`` classes.

Everything downstream is linear in three per-image *components*::

    c_global = s * g . T^T          # zero-shot CLIP
    c_text   = s * g . T_a^T        # visual-guided text      (weighted by beta2)
    c_visual = s * p . T^T          # text-aware visual       (weighted by beta3)

so they are computed once and every beta / view weight is applied afterwards.
``g . T_a^T`` is evaluated as ``softmax_L(A)^T (S g)`` which never materialises the
``(B, K, D)`` tensor ``T_a``; :func:`calip_logits_naive` does it the long way, one image at a
time, and the tests compare the two.
"""

from __future__ import annotations

from typing import Tuple

import torch

DEFAULT_ALPHA = 2.0
DEFAULT_BETA2 = 1.12
DEFAULT_BETA3 = 0.02
METHODS: Tuple[str, ...] = ("pointclip", "calip")


def _check(global_: torch.Tensor, spatial: torch.Tensor, text: torch.Tensor) -> None:
    if global_.dim() != 2:
        raise ValueError(f"global_ must have shape (B, D); got {tuple(global_.shape)}")
    if spatial.dim() != 3 or spatial.shape[0] != global_.shape[0] or spatial.shape[2] != global_.shape[1]:
        raise ValueError(f"spatial must have shape (B, L, D) = ({global_.shape[0]}, L, {global_.shape[1]}); "
                         f"got {tuple(spatial.shape)}")
    if text.dim() != 2 or text.shape[1] != global_.shape[1]:
        raise ValueError(f"text must have shape (K, D) with D = {global_.shape[1]}; got {tuple(text.shape)}")


def calip_components(
    global_: torch.Tensor,
    spatial: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    alpha: float = DEFAULT_ALPHA,
) -> torch.Tensor:
    """The three CALIP logit components of every image.

    Args:
        global_: ``(B, D)`` normalised global features ``g``.
        spatial: ``(B, L, D)`` normalised spatial features ``S``.
        text: ``(K, D)`` normalised text features ``T``.
        logit_scale: ``s``.
        alpha: attention scale.

    Returns:
        components: ``(B, 3, K)`` = ``[s g.T^T, s g.T_a^T, s p.T^T]``.
    """
    _check(global_, spatial, text)
    text = text.to(global_.dtype)
    attn = alpha * spatial @ text.t()  # (B, L, K)
    over_l = attn.softmax(dim=1)  # softmax over L
    over_k = attn.softmax(dim=2)  # softmax over K
    s_dot_g = torch.einsum("bld,bd->bl", spatial, global_)  # (B, L)
    c_text = torch.einsum("blk,bl->bk", over_l, s_dot_g)  # g . T_a^T
    s_a = over_k @ text  # (B, L, D)
    p = s_a.mean(dim=1) + s_a.amax(dim=1)  # (B, D)
    c_global = global_ @ text.t()
    c_visual = p @ text.t()
    return logit_scale * torch.stack([c_global, c_text, c_visual], dim=1)


def combine_betas(components: torch.Tensor, beta2: float, beta3: float) -> torch.Tensor:
    """``c_global + beta2 c_text + beta3 c_visual``: ``(..., 3, K)`` -> ``(..., K)``."""
    return components[..., 0, :] + beta2 * components[..., 1, :] + beta3 * components[..., 2, :]


def calip_logits_naive(
    global_: torch.Tensor,
    spatial: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    alpha: float,
    beta2: float,
    beta3: float,
) -> torch.Tensor:
    """Slow, obviously-correct CALIP logits ``(B, K)``: one image at a time, ``T_a`` materialised.

    Args:
        global_: ``(B, D)``; spatial: ``(B, L, D)``; text: ``(K, D)`` (all normalised).
    """
    out = []
    for g, s in zip(global_, spatial):
        a = alpha * s @ text.T  # (L, K)
        t_a = a.softmax(dim=0).T @ s  # (K, D): visual-guided text
        s_a = a.softmax(dim=1) @ text  # (L, D): text-aware visual
        p = s_a.mean(dim=0) + s_a.max(dim=0).values
        out.append(logit_scale * (g @ text.T + beta2 * g @ t_a.T + beta3 * p @ text.T))
    return torch.stack(out)
