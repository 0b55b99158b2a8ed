"""A long run does not leak: the training process's RSS stays flat over many steps.

A real training process (resnet8, batches of 4, 256 MNIST images, checkpoints every 50 steps,
an evaluation every 64 steps) samples its own resident set size (``VmRSS`` in
``/proc/self/status``) at every metrics line. After the first quarter of the run (allocator
and caches warming up) the median of the last quarter may exceed that of the second quarter by
less than ``RSS_GROWTH_MIB``.

The CI run is short; the full one (``RSS_STEPS[1]`` steps, a few minutes) is
``SDNET_RELIABILITY_FULL=1 pytest tests/test_reliability_memory.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reliability_cases import RSS_GROWTH_MIB, RSS_SAMPLES, RSS_STEPS, count

CHILD = Path(__file__).with_name("reliability_child.py")
BATCH, IMAGES = 4, 256


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_rss_stays_flat_over_many_steps(tmp_path, mnist_dir):
    steps = count(*RSS_STEPS)
    per_epoch = IMAGES // BATCH
    options = dict(
        model="resnet8",
        epochs=math.ceil(steps / per_epoch),
        batch_size=BATCH,
        limit_train=IMAGES,
        limit_test=64,
        eval_batch_size=64,
        device="cpu",
        progress=False,
        download=False,
        log_every=max(steps // RSS_SAMPLES, 1),
        checkpoint_every=50,
        data_dir=str(mnist_dir),
    )
    samples = tmp_path / "rss.txt"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", SDNET_TEST_RSS=str(samples))
    args = [sys.executable, str(CHILD), str(tmp_path / "run"), json.dumps(options)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = np.loadtxt(samples, dtype=np.int64).reshape(-1, 2)  # (samples, [step, rss bytes])
    assert len(rows) >= RSS_SAMPLES and rows[-1, 0] >= steps
    rss = rows[:, 1] / 2**20  # MiB
    q = len(rss) // 4
    growth = float(np.median(rss[-q:]) - np.median(rss[q : 2 * q]))
    print(f"RSS over {rows[-1, 0]} steps: first sample {rss[0]:.1f} MiB, second-quarter median "
          f"{np.median(rss[q : 2 * q]):.1f}, last-quarter median {np.median(rss[-q:]):.1f}, "
          f"max {rss.max():.1f}; growth {growth:+.2f} MiB")  # fmt: skip
    assert growth < RSS_GROWTH_MIB, (
        f"RSS grew by {growth:.1f} MiB over {rows[-1, 0]} steps: {np.round(rss, 1).tolist()}"
    )
