"""Notebook set-up shared by every chapter: profiles, seeds, determinism.

Each notebook starts with a ``parameters`` cell (``PROFILE = "full"``,
``SEED = 0``) that papermill can override, then calls::

    cfg = course.setup(PROFILE, SEED, fast=dict(epochs=2), full=dict(epochs=30))

which validates the profile, seeds Python/NumPy/the Keras backend, turns on
deterministic ops where the backend supports them, quiets TensorFlow's log
noise, records backend and device in the run report, and returns the chosen
profile's settings as an attribute-access namespace.
"""

from __future__ import annotations

import os
import platform
import random
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import report

PROFILES = ("fast", "full")


def select_profile(profile: str, fast: dict[str, Any], full: dict[str, Any]) -> SimpleNamespace:
    """Return the settings of ``profile`` ("fast" or "full") as a namespace.

    Both dictionaries must have the same keys, so that a setting cannot exist
    in one profile only.
    """
    if profile not in PROFILES:
        raise ValueError(
            f"PROFILE must be one of {PROFILES}, got {profile!r}; set it in the notebook's "
            f"parameters cell or pass -p PROFILE fast to papermill"
        )
    if set(fast) != set(full):
        raise ValueError(f"fast and full profiles define different settings: {sorted(set(fast) ^ set(full))}")
    reserved = sorted({"profile", "seed"} & set(fast))
    if reserved:
        raise ValueError(f"{reserved} are set by course.setup itself; rename these profile settings")
    return SimpleNamespace(profile=profile, **(fast if profile == "fast" else full))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"SEED must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def seed_everything(seed: int, *, with_keras: bool = True) -> None:
    """Seed Python, NumPy and (if ``with_keras`` and Keras is importable) the Keras backend.

    ``with_keras=False`` does not import Keras (and its backend), for chapters that do not use it.
    """
    seed = _check_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if not with_keras:
        return
    try:
        import keras
    except ImportError:
        return
    keras.utils.set_random_seed(int(seed))


def _enable_determinism() -> str:
    """Turn on deterministic kernels for the active backend; return the backend name."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError:
        return "none"
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    return backend


def devices() -> list[str]:
    """Names of the compute devices the active Keras backend sees."""
    try:
        import keras
    except ImportError:
        return ["cpu"]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        return ["cuda:0"] if torch.cuda.is_available() else ["cpu"]
    return ["cpu"]


def interactive() -> bool:
    """True in a notebook or IPython session that a person watches; False under the runner and in scripts.

    The runner (``python -m utils.run``) sets ``MEDIMG_RUN_RECORD``; there, and wherever no
    interactive IPython shell is running, progress output would only be noise in the book.
    ``MEDIMG_PROGRESS=0`` or ``1`` overrides the guess.
    """
    forced = os.environ.get("MEDIMG_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get(report.RECORD_ENV):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the course
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "TerminalInteractiveShell")


def fit_verbose() -> int:
    """``verbose`` for ``model.fit``: Keras' progress bar where a person watches (1), silence in the book (0)."""
    return 1 if interactive() else 0


def progress(iterable, desc: str | None = None, total: int | None = None):
    """``iterable`` with a progress bar (``tqdm``) where a person watches, unchanged in the book and in tests.

    For the long loops of the chapters: bootstrap replicates, seeds, sweeps, federated rounds.
    """
    if not interactive():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def setup(
    profile: str, seed: int = 0, *, fast: dict | None = None, full: dict | None = None, keras_needed: bool = True
) -> SimpleNamespace:
    """Prepare a chapter: validate the profile, seed, make it deterministic, record the environment."""
    cfg = select_profile(profile, fast or {}, full or {})
    seed = _check_seed(seed)  # before the slow backend import
    backend = _enable_determinism() if keras_needed else "not used"
    seed_everything(seed, with_keras=keras_needed)
    facts = {
        "profile": profile,
        "seed": int(seed),
        "python": platform.python_version(),
        "keras_backend": backend,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if keras_needed:
        import keras

        facts["keras"] = keras.__version__
        facts["devices"] = devices()
    report.environment(**facts)
    cfg.seed = int(seed)
    return cfg
