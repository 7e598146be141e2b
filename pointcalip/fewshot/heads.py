"""Trainable few-shot heads on frozen CLIP view features (docs/method.md §6).

Symbols: ``B`` clouds, ``V`` views, ``L`` spatial tokens, ``D`` width, ``K`` classes.

* :class:`InterViewAdapter` — PointCLIP's inter-view adapter on the un-normalised global
  features ``global_raw (B, V, D)``.
* :class:`CALIPFewShot` — CALIP-FS: CALIP's attention with identity-initialised learnable
  ``D -> D`` maps and learnable ``beta2, beta3`` on ``global_ (B, V, D)`` and
  ``spatial (B, V, L, D)``.
* :class:`FewShotHead` — one of them or both (``both``: the sum of the two heads' logits).

The class text features ``T (K, D)`` (frozen, from the CLIP text encoder) and the logit
scale ``s`` are stored in the head as buffers, so a saved head is self-contained.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pointcalip import distributed
from pointcalip.attention import DEFAULT_ALPHA, DEFAULT_BETA2, DEFAULT_BETA3
from pointcalip.encoders import DenseFeatures

HEAD_KINDS = ("adapter", "calip_fs", "both")


def repeated_text(text: torch.Tensor, num_views: int) -> torch.Tensor:
    """The V-fold repeated, L2-normalised text ``(K, V*D)`` of ``text: (K, D)``."""
    return F.normalize(text.repeat(1, num_views), dim=-1)


class InterViewAdapter(nn.Module):
    """PointCLIP's inter-view adapter (docs/method.md §6).

    With ``f = global_raw (B, V, D)`` and fusion ratios ``r (V,)``::

        g    = Drop(ReLU(BN_D(Linear_{VD->D}(flatten(Drop(BN_D(f * r)))))))   # (B, D)
        view = ReLU(Linear_{D->VD}(ReLU(Linear_{D->D}(g))))                    # (B, V*D)
        x    = normalize(0.6 * view + 0.4 * flatten(f))                       # (B, V*D)
        logits = s * x @ normalize(repeat_V(T))^T                              # (B, K)

    The first BatchNorm normalises each view feature ``(D,)`` with statistics shared over
    ``B * V`` (the reference's 3-D BatchNorm).
    """

    def __init__(self, num_views: int, dim: int, dropout: float = 0.075, fusion_init: float = 0.5,
                 view_ratio: float = 0.6) -> None:
        super().__init__()
        self.num_views, self.dim, self.view_ratio = num_views, dim, view_ratio
        self.fusion_ratio = nn.Parameter(torch.full((num_views,), float(fusion_init)))
        self.bn_view = nn.BatchNorm1d(dim)
        self.drop_in = nn.Dropout(dropout)
        self.global_fc = nn.Linear(num_views * dim, dim)
        self.bn_global = nn.BatchNorm1d(dim)
        self.drop_out = nn.Dropout(dropout)
        self.view_fc1 = nn.Linear(dim, dim)
        self.view_fc2 = nn.Linear(dim, num_views * dim)

    def global_branch(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, V, D)`` -> ``(B, D)``: the fused global feature of every cloud."""
        b, v, d = f.shape
        x = f * self.fusion_ratio.view(1, v, 1)
        x = self.bn_view(x.reshape(b * v, d)).view(b, v * d)
        x = self.global_fc(self.drop_in(x))
        return self.drop_out(F.relu(self.bn_global(x)))

    def view_branch(self, g: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` -> ``(B, V*D)``: adapted per-view features."""
        return F.relu(self.view_fc2(F.relu(self.view_fc1(g))))

    def embed(self, global_raw: torch.Tensor) -> torch.Tensor:
        """L2-normalised adapted features ``(B, V*D)`` of ``global_raw: (B, V, D)``."""
        if global_raw.dim() != 3 or global_raw.shape[1:] != (self.num_views, self.dim):
            raise ValueError(f"global_raw must have shape (B, V, D) = (B, {self.num_views}, {self.dim}); "
                             f"got {tuple(global_raw.shape)}")
        view = self.view_branch(self.global_branch(global_raw))
        mixed = self.view_ratio * view + (1.0 - self.view_ratio) * global_raw.flatten(1)
        return F.normalize(mixed, dim=-1)

    def forward(self, global_raw: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of ``global_raw: (B, V, D)`` against ``text: (K, D)``."""
        return logit_scale * self.embed(global_raw) @ repeated_text(text, self.num_views).t()


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


class CALIPFewShot(nn.Module):
    """CALIP-FS: CALIP with learnable maps and betas (pointcalip's definition, docs/method.md §6).

    Per view, with ``g (D,)``, ``S (L, D)`` normalised image features, ``T (K, D)``
    normalised text, learnable ``M_S, M_T, M_Ta, M_p`` (``x -> x W^T + b``, initialised
    ``W = I, b = 0``) and learnable ``beta2, beta3`` (initialised to the zero-shot values)::

        S'   = M_S(S)                     T' = M_T(T)                  # before the attention
        A    = alpha * S' T'^T                                          # (L, K)
        T_a  = softmax_L(A)^T S'                                        # (K, D)
        S_a  = softmax_K(A) T'                                          # (L, D)
        p    = mean_L(S_a) + max_L(S_a)                                 # (D,)
        logits_v = s * ( g T^T + beta2 * g M_Ta(T_a)^T + beta3 * M_p(p) T^T )   # (K,)

    and over the views ``logits = (1/sqrt(V)) * sum_v logits_v`` (docs/method.md §5, weights 1).
    The first and last terms use the *unmapped* ``T`` (and ``g``), so the zero-shot CLIP
    term stays the anchor. At identity initialisation this is exactly the zero-shot CALIP
    logit ``logits_from_components(components, ones(V), beta2, beta3)``.
    """

    def __init__(self, num_views: int, dim: int, alpha: float = DEFAULT_ALPHA, beta2: float = DEFAULT_BETA2,
                 beta3: float = DEFAULT_BETA3) -> None:
        super().__init__()
        self.num_views, self.dim, self.alpha = num_views, dim, alpha
        self.map_spatial = _identity_linear(dim)
        self.map_text = _identity_linear(dim)
        self.map_text_a = _identity_linear(dim)
        self.map_p = _identity_linear(dim)
        self.beta2 = nn.Parameter(torch.tensor(float(beta2)))
        self.beta3 = nn.Parameter(torch.tensor(float(beta3)))

    def view_logits(self, global_: torch.Tensor, spatial: torch.Tensor, text: torch.Tensor,
                    logit_scale: torch.Tensor) -> torch.Tensor:
        """Per-view logits ``(B, V, K)`` of ``global_: (B, V, D)``, ``spatial: (B, V, L, D)``."""
        if spatial is None or spatial.dim() != 4 or global_.dim() != 3 or spatial.shape[:2] != global_.shape[:2]:
            raise ValueError("CALIP-FS needs global_ (B, V, D) and spatial (B, V, L, D) features; got "
                             f"{tuple(global_.shape)} and {None if spatial is None else tuple(spatial.shape)}")
        s_map = self.map_spatial(spatial)  # (B, V, L, D)
        t_map = self.map_text(text)  # (K, D)
        attn = self.alpha * torch.einsum("bvld,kd->bvlk", s_map, t_map)
        text_a = torch.einsum("bvlk,bvld->bvkd", attn.softmax(dim=2), s_map)  # (B, V, K, D)
        s_a = attn.softmax(dim=3) @ t_map  # (B, V, L, D)
        p = s_a.mean(dim=2) + s_a.amax(dim=2)  # (B, V, D)
        c_global = global_ @ text.t()  # (B, V, K)
        c_text = torch.einsum("bvd,bvkd->bvk", global_, self.map_text_a(text_a))
        c_visual = self.map_p(p) @ text.t()
        return logit_scale * (c_global + self.beta2 * c_text + self.beta3 * c_visual)

    def forward(self, global_: torch.Tensor, spatial: torch.Tensor, text: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)``: ``(1/sqrt(V)) * sum_v view_logits``."""
        v = self.view_logits(global_, spatial, text, logit_scale)
        return v.sum(dim=1) / math.sqrt(v.shape[1])


class FewShotHead(nn.Module):
    """``adapter``, ``calip_fs`` or ``both`` (logits of the two heads summed) on frozen features.

    Buffers: ``text (K, D)`` the normalised class text features, ``logit_scale ()`` = ``s``.
    """

    def __init__(self, kind: str, text: torch.Tensor, logit_scale: float, num_views: int,
                 alpha: float = DEFAULT_ALPHA, beta2: float = DEFAULT_BETA2, beta3: float = DEFAULT_BETA3,
                 dropout: float = 0.075, fusion_init: float = 0.5, view_ratio: float = 0.6) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head {kind!r}; valid: {', '.join(HEAD_KINDS)}")
        dim = int(text.shape[1])
        self.kind, self.num_views, self.dim, self.num_classes = kind, num_views, dim, int(text.shape[0])
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1).clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.adapter: Optional[InterViewAdapter] = (
            InterViewAdapter(num_views, dim, dropout, fusion_init, view_ratio) if kind in ("adapter", "both") else None)
        self.calip_fs: Optional[CALIPFewShot] = (
            CALIPFewShot(num_views, dim, alpha, beta2, beta3) if kind in ("calip_fs", "both") else None)

    @property
    def needs_spatial(self) -> bool:
        """Whether the head reads ``spatial`` features (CALIP-FS does, the adapter does not)."""
        return self.calip_fs is not None

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """Logits ``(B, K)`` of per-view features (``global_, global_raw: (B, V, D)``, ``spatial: (B, V, L, D)``)."""
        logits = None
        if self.adapter is not None:
            logits = self.adapter(features.global_raw, self.text, self.logit_scale)
        if self.calip_fs is not None:
            fs = self.calip_fs(features.global_, features.spatial, self.text, self.logit_scale)
            logits = fs if logits is None else logits + fs
        return logits

    def betas(self) -> Dict[str, float]:
        """Current ``beta2, beta3`` of CALIP-FS (empty for the adapter alone)."""
        if self.calip_fs is None:
            return {}
        return {"beta2": float(self.calip_fs.beta2.detach()), "beta3": float(self.calip_fs.beta3.detach())}


# --------------------------------------------------------------------------- several processes


class SyncedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span every rank's part of the batch (docs/method.md §10).

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so CPU runs under ``torchrun`` (gloo) use
    this module: per channel, the mean and the biased variance of ``x: (B_r, D)`` are taken
    over the rows of all ranks (two differentiable all-reduces of sums: ``sum x``, then
    ``sum (x - mean)^2``), so the gradient is that of one batch norm over the whole batch.
    Running statistics follow ``BatchNorm1d`` (unbiased variance, ``momentum``). Outside
    training, or in one process, it is exactly ``BatchNorm1d``; its state-dict keys are the
    same, so heads trained with it load into plain heads.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"SyncedBatchNorm1d expects x of shape (B, D); got {tuple(x.shape)}")
        from torch.distributed.nn.functional import all_reduce

        d = x.shape[1]
        first = all_reduce(torch.cat([x.sum(dim=0), x.new_tensor([float(x.shape[0])])]))
        count = first[d].detach()
        if float(count) < 2:
            raise ValueError(f"batch norm in training needs more than one value per channel; got {int(count)}")
        mean = first[:d] / count
        var = all_reduce(((x - mean) ** 2).sum(dim=0)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1)), alpha=m)
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


def sync_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module`` with every ``BatchNorm1d`` synchronised over the ranks of a ``torchrun`` launch.

    On CUDA: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; on the CPU (gloo), where
    ``SyncBatchNorm`` cannot run, each ``BatchNorm1d`` becomes a :class:`SyncedBatchNorm1d`
    that shares its parameters and buffers. Returns ``module`` (changed in place) or the
    converted root.
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm1d:
            synced = SyncedBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            if child.track_running_stats:
                synced.running_mean, synced.running_var = child.running_mean, child.running_var
                synced.num_batches_tracked = child.num_batches_tracked
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device)
    return module
