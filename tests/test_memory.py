"""Tests of utils.memory: the peak of this process and of its children."""

from __future__ import annotations

import subprocess
import sys

from utils.memory import PeakMemory


def test_the_peak_of_this_process_sees_a_large_array():
    # in a fresh interpreter: a long test session may reuse freed memory that is still resident
    code = (
        "import numpy as np; from utils.memory import PeakMemory\n"
        "with PeakMemory(0.005) as mem:\n"
        "    block = np.ones(64 * 2**20 // 8); block.sum()\n"
        "print(mem.peak - mem.start)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert int(out.stdout.strip()) > 48 * 2**20


def test_children_counts_a_child_process_only():
    code = "import numpy as np, time; a = np.ones(96 * 2**20 // 8); a.sum(); time.sleep(0.6)"
    with PeakMemory(0.05, children=True) as mem:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert mem.peak - mem.start > 90 * 2**20
