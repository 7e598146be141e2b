"""How the image tower runs (docs/method.md §3): eager torch, ``torch.compile`` or OpenVINO,
in fp32 / bf16 / fp16, all computing the same dense-feature function.

Symbols: ``B`` images, ``S`` input size, ``L`` spatial tokens, ``D`` embedding width.

A *runner* maps images ``(B, 3, S, S)`` to the raw tokens ``(B, 1 + L, D)`` of
:func:`dense_tokens` (global token first), for any ``B``. Converted models are cached on
disk under ``<pointcalip cache>/runtimes/``, keyed by weights fingerprint, tower
architecture, runtime, library versions, input size and precision; entries are written to a
temp path and renamed into place, and a cache entry that does not load or does not
reproduce eager torch is deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from pointcalip.errors import ConfigError, WeightsError

RUNTIMES: Tuple[str, ...] = ("auto", "torch", "compile", "openvino")
PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Largest relative difference (max |a - b| / max |b|) accepted between a converted tower
#: and eager torch on the load-time check image; fp32 runtimes agree to ~1e-6.
CHECK_TOLERANCE = 1e-4
RUNTIME_FORMAT = 1

log = logging.getLogger("pointcalip")


# ---------------------------------------------------------------------------------------------
# The dense-feature function (docs/method.md §3), shared by every runtime
# ---------------------------------------------------------------------------------------------

def visual_family(visual: torch.nn.Module) -> str:
    """``"resnet"`` (ModifiedResNet) or ``"vit"`` (class-token VisionTransformer)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False) \
                or visual.pool_type != "tok":
            raise ConfigError("this VisionTransformer variant (attention/avg pooling) has no CLIP class token; "
                              "use a standard CLIP ViT (ViT-B-16, ViT-B-32, ViT-L-14, ...) or a ResNet")
        return "vit"
    raise ConfigError(f"unsupported image tower {type(visual).__name__}; valid: ModifiedResNet (RN50, RN101, ...) "
                      f"or VisionTransformer (ViT-B-16, ...)")


def resnet_tokens(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ModifiedResNet: attention pool with every token as a query -> ``(B, 1 + hw, D)``."""
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    pool = visual.attnpool
    b, c, h, w = x.shape
    seq = x.reshape(b, c, h * w).permute(2, 0, 1)  # (hw, B, C)
    seq = torch.cat([seq.mean(dim=0, keepdim=True), seq], dim=0)
    pos = pool.positional_embedding
    if pos.shape[0] != h * w + 1:
        raise ConfigError(f"image size gives a {h}x{w} feature map but the attention pool expects "
                          f"{pos.shape[0] - 1} positions; use the model's input size")
    seq = seq + pos[:, None, :].to(seq.dtype)
    out, _ = F.multi_head_attention_forward(
        query=seq, key=seq, value=seq, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False,
    )
    return out.permute(1, 0, 2)  # (B, 1 + hw, D)


def vit_tokens(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """VisionTransformer: ``ln_post`` on every token, then ``proj`` -> ``(B, 1 + L, D)``."""
    x = visual.transformer(visual._embeds(x))
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


class DenseTower(torch.nn.Module):
    """The image tower as one module: ``(B, 3, S, S)`` -> raw tokens ``(B, 1 + L, D)``."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.family = visual_family(visual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_tokens(self.visual, x) if self.family == "resnet" else vit_tokens(self.visual, x)


# ---------------------------------------------------------------------------------------------
# Choosing and building a runner
# ---------------------------------------------------------------------------------------------

Runner = Callable[[torch.Tensor], torch.Tensor]


def check_choice(runtime: str, precision: str, device: torch.device) -> None:
    """Raise ConfigError for an unknown runtime/precision or a pair the device cannot run."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 needs a CUDA device; on the CPU use --precision bf16 or fp32")
    if runtime == "openvino" and device.type != "cpu":
        raise ConfigError(f"runtime openvino runs on the CPU only, not on {device}; use --runtime torch or compile")
    if runtime == "openvino" and precision != "fp32":
        raise ConfigError(f"runtime openvino runs in fp32 only, not {precision}; use --precision fp32 "
                          f"or --runtime torch")


def auto_runtime(device: torch.device, precision: str) -> str:
    """The fastest exact runtime for a device (measured by scripts/benchmark.py): OpenVINO on
    the CPU in fp32, eager torch elsewhere (CUDA kernels are already fast; bf16 uses autocast)."""
    if device.type == "cpu" and precision == "fp32":
        return "openvino"
    return "torch"


def runtime_cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    """``<cache_dir>/runtimes``; ``cache_dir`` defaults to the pointcalip cache directory."""
    from pointcalip.cache import default_cache_dir

    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "runtimes"


def build_runner(
    tower: DenseTower,
    device: torch.device,
    *,
    runtime: str = "auto",
    precision: str = "fp32",
    fingerprint: str = "",
    image_size: int = 224,
    cache_dir: Optional[os.PathLike] = None,
) -> Tuple[Runner, str]:
    """``(runner, runtime actually used)`` for a tower already on ``device``.

    ``auto`` falls back to eager torch with one warning when its choice is not installed or
    fails to convert; an explicit runtime that cannot be built raises a PointcalipError.
    """
    check_choice(runtime, precision, device)
    chosen = auto_runtime(device, precision) if runtime == "auto" else runtime
    if chosen == "torch":
        return TorchRunner(tower, device, precision), "torch"
    key = _cache_key(tower, chosen, precision, fingerprint, image_size)
    root = runtime_cache_root(cache_dir)
    try:
        if chosen == "openvino":
            return OpenVINORunner(tower, image_size, root / key), "openvino"
        return CompileRunner(tower, device, precision, image_size, root / key), "compile"
    except _RuntimeUnavailable as exc:
        if runtime == "auto":
            warnings.warn(f"pointcalip: runtime {chosen} unavailable ({exc}); running eager torch", stacklevel=3)
            return TorchRunner(tower, device, precision), "torch"
        raise WeightsError(f"runtime {chosen} cannot run this model: {exc}; use --runtime torch") from exc


class _RuntimeUnavailable(Exception):
    """A runtime's package is missing or its conversion failed (internal)."""


def import_openvino() -> Any:
    """``import openvino`` without its usage telemetry.

    OpenVINO's model converter reports usage to Google Analytics over HTTPS unless a consent
    file in the user's home says otherwise; with no network that report blocks the process
    at exit (a forked sender waits on DNS). pointcalip makes no network requests of its own
    choosing: before OpenVINO is first imported, ``openvino_telemetry`` is marked unavailable
    for this process, and OpenVINO then uses its built-in no-op stub (docs/method.md §3.4).
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def _cache_key(tower: DenseTower, runtime: str, precision: str, fingerprint: str, image_size: int) -> str:
    try:
        ov_version = import_openvino().__version__
    except ImportError:
        ov_version = None
    arch = hashlib.sha256(repr(tower.visual).encode()).hexdigest()[:16]
    parts = {"format": RUNTIME_FORMAT, "runtime": runtime, "precision": precision, "weights": fingerprint,
             "arch": arch, "family": tower.family, "size": image_size, "torch": torch.__version__,
             "openvino": ov_version if runtime == "openvino" else None}
    return f"{runtime}-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``: the exactness measure of every runtime check."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def _check_image(image_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.rand(2, 3, image_size, image_size, generator=g) * 2.5  # depth values 0..2.5


class TorchRunner:
    """Eager torch, under autocast for bf16/fp16; ResNets use channels_last on CUDA."""

    def __init__(self, tower: DenseTower, device: torch.device, precision: str = "fp32") -> None:
        self.tower, self.device, self.precision = tower, device, precision
        self.channels_last = device.type == "cuda" and tower.family == "resnet"
        if self.channels_last:
            tower.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.precision):
            return self.tower(x).float()


class CompileRunner:
    """``torch.compile`` (inductor, dynamic batch). The compiled artefacts are stored in the
    cache folder and loaded back by a later process, which then skips most of the compile."""

    def __init__(self, tower: DenseTower, device: torch.device, precision: str, image_size: int, folder: Path) -> None:
        self.tower, self.device, self.precision = tower, device, precision
        artifacts = folder.with_suffix(".bin")
        if artifacts.is_file():
            try:
                torch.compiler.load_cache_artifacts(artifacts.read_bytes())
            except Exception as exc:  # noqa: BLE001 - a damaged file is a miss
                log.warning("runtime cache %s is unreadable (%s); deleting it and compiling again", artifacts, exc)
                artifacts.unlink(missing_ok=True)
        try:
            self.fn = torch.compile(tower, dynamic=True)
            x = _check_image(image_size).to(device)
            got = self(x)
            with torch.no_grad(), _autocast(device, precision):
                want = tower(x).float()
        except Exception as exc:  # noqa: BLE001 - inductor raises many types
            raise _RuntimeUnavailable(f"torch.compile failed: {str(exc).strip().splitlines()[0][:200]}") from exc
        diff = _rel_diff(got, want)
        if diff > (CHECK_TOLERANCE if precision == "fp32" else 5e-2):
            raise _RuntimeUnavailable(f"compiled tower differs from eager torch by {diff:.1e}")
        if not artifacts.is_file():
            saved = torch.compiler.save_cache_artifacts()
            if saved is not None:
                from pointcalip.atomic import atomic_open

                with atomic_open(artifacts) as f:
                    f.write(saved[0])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device, self.precision):
            return self.fn(x).float()


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_DISABLE = 2  # Linux


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to talk to
        return None


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Leave the calling thread's alternate signal stack as the block found it (Linux).

    OpenVINO's CPU plugin installs an alternate signal stack of its own on the thread that
    creates it and, when it is destroyed, puts back the one it found then. Two plugins
    destroyed in another order than they were created leave the thread pointing at freed
    memory, and the next signal that thread takes (a child process exiting, Ctrl-C) kills the
    process with SIGSEGV (docs/method.md §3). Creating and releasing every OpenVINO object
    inside this block keeps the thread's own stack (Python's faulthandler's, or none) in place.
    """
    libc = _libc()
    saved = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        if saved.ss_flags & _SS_DISABLE:
            saved.ss_flags, saved.ss_sp, saved.ss_size = _SS_DISABLE, None, 0
        else:
            saved.ss_flags = 0  # SS_ONSTACK is reported, never set
        libc.sigaltstack(ctypes.byref(saved), None)


class OpenVINORunner:
    """OpenVINO on the CPU, fp32 inference precision, dynamic batch.

    The converted model (``model.xml`` + ``model.bin``, uncompressed fp32 weights) lives in
    the cache folder; conversion is paid once per weights/architecture/version. OpenVINO
    objects are created and released under :func:`keep_signal_stack`.
    """

    def __init__(self, tower: DenseTower, image_size: int, folder: Path) -> None:
        self.core = self.compiled = None
        with keep_signal_stack():
            self._load(tower, image_size, folder)

    def __del__(self) -> None:
        with contextlib.suppress(Exception), keep_signal_stack():
            self.compiled = self.core = None

    def _load(self, tower: DenseTower, image_size: int, folder: Path) -> None:
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise _RuntimeUnavailable("the openvino package is not installed (pip install openvino)") from exc
        self._ov = ov
        self.core = ov.Core()
        self.tower = tower
        x = _check_image(image_size)
        with torch.no_grad():
            want = tower(x).float()
        if (folder / "model.xml").is_file():
            try:
                self.compiled = self._compile(self.core.read_model(str(folder / "model.xml")))
                diff = _rel_diff(self(x), want)
                if not diff <= CHECK_TOLERANCE:
                    raise ValueError(f"it differs from eager torch by {diff:.1e}")
            except Exception as exc:  # noqa: BLE001 - any damage makes the entry a miss
                log.warning("runtime cache %s is damaged (%s); deleting it and converting again",
                            folder, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                shutil.rmtree(folder, ignore_errors=True)
                self.compiled = None
        if self.compiled is None:
            model = self._convert(tower, image_size)
            self.compiled = self._compile(model)
            diff = _rel_diff(self(x), want)
            if not diff <= CHECK_TOLERANCE:
                raise _RuntimeUnavailable(f"the converted model differs from eager torch by {diff:.1e}")
            self._save(model, folder)

    def _convert(self, tower: DenseTower, image_size: int):
        ov = self._ov
        example = _check_image(image_size)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ov.convert_model(tower, example_input=example,
                                        input=[ov.PartialShape([-1, 3, image_size, image_size])])
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise _RuntimeUnavailable(f"OpenVINO conversion failed: {first}") from exc

    def _compile(self, model):
        return self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def _save(self, model, folder: Path) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            self._ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process stored it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.compiled(arr)[0]
        return torch.from_numpy(out.copy())


RUNNERS: Dict[str, type] = {"torch": TorchRunner, "compile": CompileRunner, "openvino": OpenVINORunner}
