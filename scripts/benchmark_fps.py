"""Compare farthest point sampling implementations on this machine (not a test).

    python scripts/benchmark_fps.py [--repeats 5]

For N -> 1024 points with N = 2,048, 10,000 and 100,000 (random normal clouds), prints a
Markdown table of the best wall time of each implementation and whether it picks the
same set of points as the reference rule (start at index 0, ties to the lowest index).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np

from pointcalip.clouds.sampling import _open3d_fps, farthest_point_sample_numpy

SIZES = (2_048, 10_000, 100_000)
K = 1_024


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Best wall time in ms over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3, np.asarray(out)


def implementations(points: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """Name -> zero-argument call returning indices, for one cloud ``points: (N, 3)``."""
    import fpsample
    import torch

    p64 = points.astype(np.float64)
    t = torch.from_numpy(points)[None]
    from pointcalip.clouds.sampling import _torch_fps

    return {
        "open3d farthest_point_down_sample": lambda: _open3d_fps(p64, K),
        "fpsample.fps_sampling": lambda: fpsample.fps_sampling(points, K, start_idx=0),
        "fpsample.bucket_fps_kdline (h=7)": lambda: fpsample.bucket_fps_kdline_sampling(points, K, h=7, start_idx=0),
        "numpy loop (vectorised over N)": lambda: farthest_point_sample_numpy(points, K),
        "torch loop, CPU (B=1)": lambda: _torch_fps(t, K)[0].numpy(),
    }


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import open3d
    import torch

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch threads {torch.get_num_threads()}")
    print(f"open3d {open3d.__version__}, numpy {np.__version__}, torch {torch.__version__}\n")
    rng = np.random.default_rng(0)
    clouds = {n: rng.normal(size=(n, 3)).astype(np.float32) for n in SIZES}
    refs = {n: set(farthest_point_sample_numpy(c.astype(np.float64), K).tolist()) for n, c in clouds.items()}
    print("| implementation | " + " | ".join(f"{n:,} -> {K:,}" for n in SIZES) + " | same set as reference |")
    print("|---|" + "---:|" * len(SIZES) + "---|")
    for name in implementations(clouds[SIZES[0]]):
        cells, exact = [], True
        for n in SIZES:
            repeats = max(1, args.repeats if n <= 10_000 else args.repeats // 2)
            ms, idx = best_time(implementations(clouds[n])[name], repeats)
            cells.append(f"{ms:.1f} ms")
            exact &= set(idx.astype(np.int64).tolist()) == refs[n]
        print(f"| {name} | " + " | ".join(cells) + f" | {'yes' if exact else 'no'} |")


if __name__ == "__main__":
    main()
