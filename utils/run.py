"""Execute the chapters with papermill and write the run report.

``python -m utils.run --profile fast`` executes every ``notebooks/NN_*.ipynb``
in order, with the ``PROFILE`` parameter injected, and

* writes the executed copies to ``build/book/notebooks/`` (where the book
  reads them; the committed notebooks stay without outputs);
* measures each notebook's wall time and the peak resident memory of its
  kernel (sampled every 0.2 s);
* collects what the notebook reported through :mod:`utils.report` (metrics,
  timings, datasets with checksums, backend and devices);
* writes ``build/run_report.json`` (machine-readable) and
  ``build/book/book/run_report.md`` (included by the book's
  *Reproducibility report* page);
* prepares the executed copies for the page: papermill's injected-parameters
  cell is tagged ``remove-cell`` (the reader sees the chapter's own parameters
  cell) and one line under the title says which profile, run and commit
  produced the page;
* skips a chapter whose inputs are unchanged since its last successful run
  under the same profile and backend (:func:`fingerprint`: the notebook, every
  ``utils`` source, the registry entries it reads, the pinned requirements, the
  package versions and the data directory) and reuses that run's executed copy
  and report entry, saying so; ``--force`` re-runs everything;
* with ``--jobs N`` (or ``JOBS=N``), executes N chapters at a time, each in its
  own worker process and kernel: their numbers are the same as one at a time
  (a test checks), while their wall times and measured throughputs include
  sharing the CPU, and the report says so;
* judges, in the report, every metric that has a target (met / not met / not
  shown, with :func:`utils.stats.judge`, the rule the prose's verdicts use) and
  every chapter's wall time against its budget for the profile;
* exits non-zero if any notebook failed, naming the notebook and the cell
  that broke.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import psutil

from . import files, stats, tables
from .data import DATA_DIR_ENV
from .exercises import STRICT_ENV
from .memory import PeakMemory
from .report import RECORD_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD = REPO_ROOT / "build"
STAGE = BUILD / "book"
REPORT_JSON = BUILD / "run_report.json"
REPORT_MD = STAGE / "book" / "run_report.md"
RUN_CACHE = BUILD / "run-cache"  # executed copies and report entries of earlier runs, for reuse
# Wall-time budget of one chapter, and of the whole run, per profile (seconds, on a 2-core CPU): the
# fast profile must fit a classroom and CI (the whole book in 10 minutes), the full profile the report
# (no chapter above 15 minutes, the whole book within the hour).
CHAPTER_BUDGET_S = {"fast": 100, "full": 900}
TOTAL_BUDGET_S = {"fast": 600, "full": 3600}
PROVENANCE_TAG = "run-provenance"
JOBS_ENV = "JOBS"  # chapters executed at a time, when --jobs is not given
# mybinder.org gives a session between 1 and 2 GB of memory (its user guide, "Usage guidelines"); a
# chapter whose kernel peaks above this does not fit there.
BINDER_MEMORY_MIB = 2048
PACKAGES = (
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "jax",
    "torch",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "matplotlib",
    "pydicom",
    "nibabel",
    "papermill",
    "jupyter-book",
    "jupyterlab",
)


def discover(root: Path = REPO_ROOT, only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order, optionally filtered by name fragments."""
    nbs = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = [o for o in only if not any(o in p.name for p in nbs)]
        if unknown:
            raise SystemExit(f"no notebook matches {unknown}; notebooks are {[p.name for p in nbs]}")
        nbs = [p for p in nbs if any(o in p.name for o in only)]
    return nbs


# cells papermill adds to the executed copy: the injected parameters, and on failure an
# error banner at the top and an anchor before the failing cell
_PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


def _first_line(source: str) -> str:
    return source.strip().splitlines()[0][:120] if source.strip() else ""


def _failed_cell(exc: Exception, executed: Path) -> dict:
    """Locate the cell that raised, from papermill's error and the executed notebook.

    ``cell`` is the index of the failing cell in the *source* notebook (the cells
    papermill inserts into the executed copy are not counted), so that it points at
    the cell an author has to fix.
    """
    info = {"error": f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"}
    try:
        import nbformat

        nb = nbformat.read(executed, as_version=4)
        index = 0
        for cell in nb.cells:
            if _PAPERMILL_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                info["cell"] = index
                info["cell_source"] = _first_line(cell.source)
                break
            index += 1
    except Exception:  # the notebook may not have been written
        pass
    if "cell_source" not in info and isinstance(getattr(exc, "source", None), str):
        info["cell_source"] = _first_line(exc.source)
    return info


def prepare_page(executed: Path, entry: dict, commit: str) -> None:
    """Make an executed copy ready for the book: hide papermill's plumbing, say what produced it.

    The injected-parameters cell gets the ``remove-cell`` tag (the chapter's own ``parameters``
    cell stays, so the page still shows the defaults a reader would run), and a markdown cell
    tagged ``run-provenance`` after the title states the profile, date, commit and backend.
    Running it twice changes nothing more.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nb.cells = [c for c in nb.cells if PROVENANCE_TAG not in c.get("metadata", {}).get("tags", [])]
    backend = entry.get("environment", {}).get("keras_backend", "no Keras")
    line = (
        f"*This page shows the run of the **{entry['profile']}** profile of {entry.get('started', '?')} (UTC), "
        f"commit `{commit}`, Keras backend {backend}: every number in its text comes from that run"
        + (
            f" (run {entry['jobs']} chapters at a time: its timings and throughputs are those of a shared CPU). "
            if entry.get("jobs", 1) > 1
            else ". "
        )
        + "See the {doc}`reproducibility report <../book/reproducibility>`.*"
    )
    cell = nbformat.v4.new_markdown_cell(line)
    cell.metadata["tags"] = [PROVENANCE_TAG]
    first = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(first, cell)
    nbformat.write(nb, executed)


def execute(nb: Path, profile: str, out_dir: Path, record_dir: Path, timeout: int, jobs: int = 1) -> dict:
    """Execute one notebook; return its report entry (never raises on notebook errors).

    ``jobs``: how many chapters run at the same time (recorded, and said on the page when above 1).
    """
    import papermill as pm

    out = out_dir / nb.name
    record = record_dir / f"{nb.stem}.json"
    record.unlink(missing_ok=True)
    env_backup = {k: os.environ.get(k) for k in (RECORD_ENV, STRICT_ENV)}
    os.environ[RECORD_ENV] = str(record)
    os.environ[STRICT_ENV] = "1"
    entry: dict = {
        "notebook": nb.name,
        "profile": profile,
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "jobs": jobs,
    }
    start = time.perf_counter()
    try:
        with PeakMemory(0.2, children=True) as mem:
            pm.execute_notebook(
                str(nb),
                str(out),
                parameters={"PROFILE": profile},
                cwd=str(nb.parent),
                kernel_name="python3",
                progress_bar=sys.stderr.isatty(),
                request_save_on_cell_execute=True,
                execution_timeout=timeout,
            )
        entry["status"] = "ok"
    except Exception as exc:  # papermill raises PapermillExecutionError for cell errors
        entry["status"] = "failed"
        entry.update(_failed_cell(exc, out))
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    entry["wall_s"] = round(time.perf_counter() - start, 1)
    entry["peak_rss_mb"] = round(mem.peak / 2**20, 1)
    if record.is_file():
        entry.update(json.loads(record.read_text()))
    if out.is_file():
        try:
            prepare_page(out, entry, _commit())
        except Exception as exc:  # the page is still usable; say why it has no provenance line
            print(f"warning: could not prepare {out.name} for the book: {exc}", file=sys.stderr)
    return entry


def _commit() -> str:
    """The checkout's short commit, with ``+local changes`` when notebooks or utils differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "notebooks", "utils"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return commit + ("+local changes" if dirty else "")


def package_versions() -> dict[str, str]:
    """Installed versions of the key packages (:data:`PACKAGES`); those not installed are left out."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def environment() -> dict:
    """Versions and machine facts of the runner's environment."""
    versions = package_versions()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "keras_backend_env": os.environ.get("KERAS_BACKEND", "tensorflow (default)"),
        "git_commit": _commit(),
        "packages": versions,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _cell(text) -> str:
    """Text made safe inside a Markdown table cell (pipes, backticks, newlines)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


_PROFILE_TARGET = re.compile(r"(?:^|[(;]\s*)(fast|full) profile:\s*([^);]+)")


def judge_for_profile(value, target: str, profile: str) -> tuple[str, str]:
    """:func:`utils.stats.judge`, reading a target that names profiles.

    ``"> 0.85 (fast profile: > 0.8)"`` is judged against ``> 0.8`` in a fast run; a target marked
    ``(full profile)`` alone is not judged in a fast run (the fast profile does not promise it).
    """
    text = str(target)
    for prof, sub in _PROFILE_TARGET.findall(text):
        if prof == profile:
            return stats.judge(value, sub.strip())
    if profile != "full" and re.search(r"\(full profile\)", text):
        return stats.NOT_JUDGED, "the target is for the full profile"
    return stats.judge(value, text)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min"


def _budget(seconds: float, budget: float) -> str:
    """``"within 100 s"`` or ``"over 15 min"``: a wall time against its budget."""
    return f"{'within' if seconds <= budget else 'over'} {_duration(budget)}"


def render_markdown(report: dict) -> str:
    """The run report as MyST markdown (tables), included by book/reproducibility.md.

    Status words are plain text (every font has them). Each metric with a target is judged with
    :func:`utils.stats.judge`; each chapter's wall time is set against :data:`CHAPTER_BUDGET_S`.
    """
    env = report["environment"]
    profile = report["profile"]
    chapter_budget = CHAPTER_BUDGET_S.get(profile, CHAPTER_BUDGET_S["full"])
    total_budget = TOTAL_BUDGET_S.get(profile, TOTAL_BUDGET_S["full"])
    chapters_s = sum(nb["wall_s"] for nb in report["notebooks"])
    reused = [nb["notebook"] for nb in report["notebooks"] if nb.get("reused")]
    jobs = int(report.get("jobs", 1))
    if jobs == 1:
        whole = f"The chapters' own wall times add up to **{chapters_s / 60:.1f} min**"
        whole += f" ({_budget(chapters_s, total_budget)})"
    else:  # the chapters overlapped: the elapsed time is the whole run's cost
        whole = (
            f"The chapters ran **{jobs} at a time** (each in its own kernel, sharing the CPU, so each chapter's wall "
            f"time and the throughputs it measured are those of a shared machine); elapsed "
            f"**{report['total_s'] / 60:.1f} min** ({_budget(report['total_s'], total_budget)}), while the chapters' "
            f"own wall times add up to {chapters_s / 60:.1f} min"
        )
    lines = [
        f"Run of **{report['started']}** (UTC), profile **`{profile}`**, "
        f"total **{report['total_s'] / 60:.1f} min**, commit `{env['git_commit']}`. "
        + whole
        + (
            f"; {len(reused)} of {len(report['notebooks'])} chapters were reused from an earlier run with the "
            f"same inputs (marked below)."
            if reused
            else "."
        ),
        "",
        "| notebook | status | wall time | budget | peak memory | fits Binder (2 GiB) | backend | devices |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nb in report["notebooks"]:
        e = nb.get("environment", {})
        status = "ok" if nb["status"] == "ok" else f"**{nb['status'].upper()}**"
        if nb.get("reused"):
            status += f" (reused: run of {nb['reused']['from_run']}, commit {nb['reused']['commit']})"
        lines.append(
            f"| `{nb['notebook']}` | {status} | {nb['wall_s']:.1f} s | {_budget(nb['wall_s'], chapter_budget)} | "
            f"{nb['peak_rss_mb']:.0f} MiB | {'yes' if nb['peak_rss_mb'] <= BINDER_MEMORY_MIB else 'no'} | "
            f"{e.get('keras_backend', '–')} | {', '.join(e.get('devices', [])) or '–'} |"
        )
    for nb in report["notebooks"]:
        lines += ["", f"## `{nb['notebook']}`", ""]
        if nb["status"] != "ok":
            lines += [
                f"Failed in cell {nb.get('cell', '?')} (`{_cell(nb.get('cell_source', ''))}`): "
                f"{_cell(nb.get('error', ''))}",
                "",
            ]
        if nb.get("metrics"):
            lines += ["| metric | value | target | judged |", "|---|---|---|---|"]
            for name, m in nb["metrics"].items():
                unit = f" {m['unit']}" if m.get("unit") else ""
                judged = ""
                if m.get("target"):
                    verdict, why = judge_for_profile(m["value"], str(m["target"]), profile)
                    judged = f"**{verdict}**: {why}" if verdict != stats.NOT_JUDGED else f"{verdict}: {why}"
                lines.append(
                    f"| {_cell(name)} | {_cell(_fmt(m['value']))}{_cell(unit)} | "
                    f"{_cell(m.get('target', ''))} | {_cell(judged)} |"
                )
            lines.append("")
        if nb.get("timings"):
            lines += ["| timing | seconds | throughput |", "|---|---|---|"]
            for name, t in nb["timings"].items():
                thr = f"{t['per_second']:.0f} {t['item']}/s" if t.get("per_second") else ""
                lines.append(f"| {_cell(name)} | {t['seconds']:.1f} | {thr} |")
            lines.append("")
        if nb.get("datasets"):
            lines += ["| dataset | file | source | sha256 |", "|---|---|---|---|"]
            for d in nb["datasets"]:
                lines.append(f"| {d['dataset']} | `{d['file']}` | {d['source']} | `{d['sha256'][:16]}…` |")
            lines.append("")
    lines += [
        "",
        "## Environment",
        "",
        f"- Python {env['python']} on {env['platform']}",
        f"- CPU: {env['cpu']} ({env['cpu_count']} cores), {env['memory_gb']} GiB memory",
        f"- Keras backend: {env['keras_backend_env']}",
        "",
        "| package | version |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in env["packages"].items()]
    return "\n".join(lines) + "\n"


def _backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def fingerprint(nb: Path, profile: str, root: Path = REPO_ROOT) -> str:
    """SHA-256 of everything that can change what ``nb`` computes under ``profile``.

    Covered: the notebook's bytes; every ``utils/*.py`` source (any shared code may be used);
    the entries of ``data/registry.toml`` that list the notebook in ``used_by`` (the files it
    reads are pinned by their checksums there); ``requirements.txt``; the installed versions of
    the key packages; the profile, the Keras backend and the data directory (a mirror may hold
    a different copy of a dataset, as for CIFAR-10). Not covered: hand edits to installed
    packages, and the hardware (a run on another machine is reused as long as the cache is
    there; ``--force`` re-runs).
    """
    h = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + hashlib.sha256(data).digest())

    add("notebook", nb.read_bytes())
    for src in sorted((root / "utils").rglob("*.py")):
        add(src.relative_to(root).as_posix(), src.read_bytes())
    registry_path = root / "data" / "registry.toml"
    if registry_path.is_file():
        reg = tomllib.loads(registry_path.read_text(encoding="utf-8"))
        used = {
            name: entry
            for name, entry in reg.items()
            if isinstance(entry, dict) and nb.stem in entry.get("used_by", [])
        }
        add("registry", json.dumps(used, sort_keys=True, default=str).encode())
    if (root / "requirements.txt").is_file():
        add("requirements.txt", (root / "requirements.txt").read_bytes())
    settings = {
        "profile": profile,
        "backend": _backend(),
        "packages": package_versions(),
        "data_dir": os.environ.get(DATA_DIR_ENV, ""),
        "python": platform.python_version(),
    }
    add("settings", json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _cache_paths(nb: Path, profile: str) -> tuple[Path, Path]:
    stem = f"{nb.stem}.{profile}.{_backend()}"
    return RUN_CACHE / f"{stem}.json", RUN_CACHE / f"{stem}.ipynb"


def reuse(nb: Path, profile: str, out_dir: Path, digest: str) -> dict | None:
    """The report entry of an earlier successful run with the same inputs, its executed copy put back; else None."""
    meta_path, copy_path = _cache_paths(nb, profile)
    if not (meta_path.is_file() and copy_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("fingerprint") != digest or meta.get("entry", {}).get("status") != "ok":
        return None
    shutil.copy2(copy_path, out_dir / nb.name)  # copy2 keeps the mtime: the book build sees no change
    entry = dict(meta["entry"])
    entry["reused"] = {"from_run": entry.get("started", "?"), "commit": meta.get("commit", "?")}
    return entry


def remember(nb: Path, profile: str, out_dir: Path, digest: str, entry: dict) -> None:
    """Keep a successful run's executed copy and report entry for :func:`reuse`."""
    if entry.get("status") != "ok" or not (out_dir / nb.name).is_file():
        return
    meta_path, copy_path = _cache_paths(nb, profile)
    RUN_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out_dir / nb.name, copy_path)
    clean = {k: v for k, v in entry.items() if k != "reused"}
    files.write_text(
        meta_path, json.dumps({"fingerprint": digest, "commit": _commit(), "entry": clean}, ensure_ascii=False)
    )


def compare_backends(reports: Sequence[Path]) -> str:
    """A Markdown table of each chapter's wall time in several run reports, with the ratio to the first.

    ``make backends`` runs the same chapters on TensorFlow, JAX and PyTorch into ``build/backends/<name>``
    and prints this table; a report's column is named by the Keras backend it ran on.
    """
    loaded = [json.loads(Path(p).read_text()) for p in reports]
    names = [r["environment"].get("keras_backend_env", str(p)).split()[0] for r, p in zip(loaded, reports)]
    walls = [{e["notebook"]: e for e in r["notebooks"]} for r in loaded]
    rows = []
    for nb in sorted(set().union(*walls)):
        cells, first = [nb], walls[0].get(nb, {}).get("wall_s")
        for w in walls:
            e = w.get(nb)
            if e is None or e.get("status") != "ok":
                cells.append("–" if e is None else e.get("status", "?"))
                continue
            ratio = f" ({e['wall_s'] / first:.2f}×)" if first and w is not walls[0] else ""
            cells.append(f"{e['wall_s']:.0f} s{ratio}")
        rows.append(cells)
    return tables.markdown_table(["notebook", *names], rows)


def _jobs(value: int | None, parser: argparse.ArgumentParser) -> int:
    """``--jobs``, else the ``JOBS`` environment variable, else 1; anything but a positive integer is an error."""
    if value is None:
        text = os.environ.get(JOBS_ENV, "").strip() or "1"
        try:
            value = int(text)
        except ValueError:
            parser.error(f"{JOBS_ENV}={text!r} is not a number of chapters to run at a time (e.g. {JOBS_ENV}=2)")
    if value < 1:
        parser.error(f"--jobs must be at least 1 (got {value}); 1 runs the chapters one after another")
    return value


def _last_wall_time(nb: Path, profile: str) -> float:
    """The wall time of the chapter's last remembered run under this profile and backend (0 if none)."""
    meta_path, _ = _cache_paths(nb, profile)
    try:
        return float(json.loads(meta_path.read_text(encoding="utf-8"))["entry"]["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def _announce_and_execute(label: str, args, nb: Path, out_dir: Path, record_dir: Path) -> dict:
    """In a worker process: say that the chapter starts, then :func:`execute` it."""
    print(f"{label} (profile {args.profile}, {args.jobs} at a time) ...", flush=True)
    return execute(nb, args.profile, out_dir, record_dir, args.timeout, args.jobs)


def run_chapters(to_run, n_total: int, args, out_dir: Path, record_dir: Path):
    """Execute the chapters in ``to_run`` (``(index, notebook, fingerprint)``), ``args.jobs`` at a time.

    Yields ``(index, notebook, fingerprint, entry)`` as each chapter finishes.  One job runs them in order
    in this process; several run each in a worker process of its own (a chapter already runs in its own
    kernel, so nothing is shared but the CPU), the longest first by the last remembered wall time, so that
    the last chapter to start is a short one.
    """
    if args.jobs == 1 or len(to_run) <= 1:
        for i, nb, digest in to_run:
            print(f"[{i}/{n_total}] {nb.name} (profile {args.profile}) ...", flush=True)
            yield i, nb, digest, execute(nb, args.profile, out_dir, record_dir, args.timeout)
        return
    order = sorted(to_run, key=lambda item: -_last_wall_time(item[1], args.profile))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state forked from this one
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_announce_and_execute, f"[{i}/{n_total}] {nb.name}", args, nb, out_dir, record_dir): (
                i,
                nb,
                digest,
            )
            for i, nb, digest in order
        }
        for future in concurrent.futures.as_completed(futures):
            i, nb, digest = futures[future]
            yield i, nb, digest, future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("fast", "full"), default=os.environ.get("PROFILE", "full"))
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name contains one of these")
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    parser.add_argument(
        "--force",
        action="store_true",
        help="execute every chapter, even those whose inputs are unchanged since their last run",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=BUILD,
        help="where the executed copies and the run report go (default build/, which the book reads; "
        "a second backend's run goes beside it, e.g. build/jax)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="print each chapter's wall time in these run reports side by side (the first is the reference) and exit",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="execute this many chapters at a time (default: $JOBS, else 1). Each chapter runs in its own "
        "kernel and its numbers do not change; its wall time and the throughputs it measures include sharing "
        "the CPU, which the run report says",
    )
    args = parser.parse_args(argv)
    args.jobs = _jobs(args.jobs, parser)
    if args.compare:
        print(compare_backends(args.compare))
        return 0

    nbs = discover(only=args.only)
    build = args.build_dir.resolve()
    report_json, report_md = build / REPORT_JSON.relative_to(BUILD), build / REPORT_MD.relative_to(BUILD)
    out_dir = build / (STAGE / "notebooks").relative_to(BUILD)
    record_dir = build / "records"
    for d in (out_dir, record_dir, report_md.parent):
        d.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    entries: dict[Path, dict] = {}
    to_run: list[tuple[int, Path, str]] = []
    for i, nb in enumerate(nbs, 1):
        digest = fingerprint(nb, args.profile)
        entry = None if args.force else reuse(nb, args.profile, out_dir, digest)
        if entry is None:
            to_run.append((i, nb, digest))
            continue
        entries[nb] = entry
        print(
            f"[{i}/{len(nbs)}] {nb.name}: inputs unchanged since the run of {entry['reused']['from_run']} "
            f"(commit {entry['reused']['commit']}); reusing it (--force re-runs)",
            flush=True,
        )
    for i, nb, digest, entry in run_chapters(to_run, len(nbs), args, out_dir, record_dir):
        entries[nb] = entry
        remember(nb, args.profile, out_dir, digest, entry)
        if entry["status"] == "ok":
            print(
                f"[{i}/{len(nbs)}] {nb.name}: ok in {entry['wall_s']:.1f} s, peak {entry['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
        else:
            print(
                f"[{i}/{len(nbs)}] {nb.name}: FAILED in cell {entry.get('cell', '?')} "
                f"({entry.get('cell_source', '')!r}): {entry.get('error', '')}",
                file=sys.stderr,
                flush=True,
            )
    entries = [entries[nb] for nb in nbs]  # the report keeps the chapters' order
    report = {
        "profile": args.profile,
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "total_s": round(time.perf_counter() - t0, 1),
        "jobs": args.jobs,
        "environment": environment(),
        "notebooks": entries,
    }
    if args.only:  # keep the entries of notebooks not re-run this time
        if report_json.is_file():
            old = json.loads(report_json.read_text())
            if old.get("profile") == args.profile:
                ran = {e["notebook"] for e in entries}
                report["notebooks"] = sorted(
                    [e for e in old["notebooks"] if e["notebook"] not in ran] + entries, key=lambda e: e["notebook"]
                )
    report_json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    report_md.write_text(render_markdown(report))
    failed = [e["notebook"] for e in entries if e["status"] != "ok"]
    print(
        f"run report: {report_json} ({len(entries) - len(failed)}/{len(entries)} ok, {report['total_s'] / 60:.1f} min)"
    )
    if failed:
        print(f"failed notebooks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
