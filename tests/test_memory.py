"""Tests of utils.memory: the peak of this process and of its children."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from utils.memory import PeakMemory


def test_the_peak_of_this_process_sees_a_large_array():
    with PeakMemory(0.005) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB
        block.sum()
    assert mem.peak - mem.start > 48 * 2**20
    del block


def test_children_counts_a_child_process_only():
    code = "import numpy as np, time; a = np.ones(96 * 2**20 // 8); a.sum(); time.sleep(0.6)"
    with PeakMemory(0.05, children=True) as mem:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert mem.start == 0 and mem.peak > 90 * 2**20
