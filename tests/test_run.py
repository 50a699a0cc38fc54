"""Tests of utils.run: discovery, the markdown report, and executing small notebooks."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils import run
from utils.exercises import STRICT_ENV
from utils.report import RECORD_ENV


def report_dict():
    return {
        "profile": "fast",
        "started": "2026-01-02 03:04",
        "total_s": 90.0,
        "environment": {
            "python": "3.11.7",
            "platform": "Linux-x86_64",
            "cpu": "Test CPU",
            "cpu_count": 2,
            "memory_gb": 8.0,
            "keras_backend_env": "jax",
            "git_commit": "abc1234+local changes",
            "packages": {"keras": "3.15.1", "numpy": "2.4.6"},
        },
        "notebooks": [
            {
                "notebook": "01_ok.ipynb",
                "profile": "fast",
                "status": "ok",
                "wall_s": 12.34,
                "peak_rss_mb": 612.4,
                "environment": {"keras_backend": "jax", "devices": ["cpu:0", "gpu:0"]},
                "metrics": {
                    "accuracy": {"value": 0.912345, "target": ">= 0.9"},
                    "auc": {"value": [0.93, 0.89, 0.96], "target": ">= 0.944 (ResNet-18)"},
                    "auc_low": {"value": [0.80, 0.75, 0.85], "target": ">= 0.90"},
                    "files": {"value": 7, "target": "all 7"},
                    "dice": {"value": [0.5, 0.25], "unit": "per class"},
                    "n": {"value": 3},
                },
                "timings": {
                    "train": {"seconds": 2.0, "n_items": 1000, "item": "images", "per_second": 500.0},
                    "setup": {"seconds": 0.5},
                },
                "datasets": [
                    {
                        "dataset": "breastmnist",
                        "file": "medmnist/breastmnist.npz",
                        "sha256": "3a22d2a4" * 8,
                        "source": "data_dir",
                    }
                ],
            },
            {
                "notebook": "02_broken.ipynb",
                "profile": "fast",
                "status": "failed",
                "wall_s": 3.0,
                "peak_rss_mb": 100.0,
                "error": "ValueError: boom",
                "cell": 2,
                "cell_source": "raise ValueError('boom')",
            },
        ],
    }


def test_render_markdown():
    md = run.render_markdown(report_dict())
    lines = md.splitlines()
    assert md.endswith("\n")
    assert lines[0] == (
        "Run of **2026-01-02 03:04** (UTC), profile **`fast`**, total **1.5 min**, "
        "commit `abc1234+local changes`. The chapters' own wall times add up to **0.3 min** "
        "(within 10 min)."
    )
    assert "| `01_ok.ipynb` | ok | 12.3 s | within 100 s | 612 MiB | yes | jax | cpu:0, gpu:0 |" in lines
    assert "| `02_broken.ipynb` | **FAILED** | 3.0 s | within 100 s | 100 MiB | yes | – | – |" in lines
    assert "Failed in cell 2 (`raise ValueError('boom')`): ValueError: boom" in lines
    assert "| accuracy | 0.9123 | >= 0.9 | **met**: point value, no interval |" in lines
    assert (
        "| auc | [0.93, 0.89, 0.96] | >= 0.944 (ResNet-18) | **not shown**: the interval contains the reference |"
    ) in lines
    assert "| auc_low | [0.8, 0.75, 0.85] | >= 0.90 | **not met**: the whole interval is below the reference |" in lines
    assert "| files | 7 | all 7 | not judged: the target states no number to compare with |" in lines
    assert "| dice | [0.5, 0.25] per class |  |  |" in lines
    assert "| n | 3 |  |  |" in lines
    # status marks are words that every font has, not pictographs
    assert "✅" not in md and "❌" not in md
    assert "| train | 2.0 | 500 images/s |" in lines and "| setup | 0.5 |  |" in lines
    assert f"| breastmnist | `medmnist/breastmnist.npz` | data_dir | `{'3a22d2a4' * 2}…` |" in lines
    assert "- CPU: Test CPU (2 cores), 8.0 GiB memory" in lines and "- Keras backend: jax" in lines
    assert "| numpy | 2.4.6 |" in lines
    broken = md.index("## `02_broken.ipynb`")
    assert md.index("## `01_ok.ipynb`") < md.index("| accuracy") < broken  # each notebook's own section
    assert "| metric |" not in md[broken:]  # the failed notebook reported no metrics


def make_root(tmp_path, names):
    (tmp_path / "notebooks").mkdir()
    for name in names:
        (tmp_path / "notebooks" / name).write_text("{}")
    return tmp_path


def test_discover(tmp_path):
    root = make_root(tmp_path, ["10_c.ipynb", "02_b.ipynb", "01_a.ipynb", "notes.ipynb", "1_x.ipynb", "03_d.md"])
    assert [p.name for p in run.discover(root)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in run.discover(root, ["02"])] == ["02_b.ipynb"]
    assert [p.name for p in run.discover(root, ["c", "01_"])] == ["01_a.ipynb", "10_c.ipynb"]
    assert [p.name for p in run.discover(root, [])] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]


def test_discover_unknown_name(tmp_path):
    root = make_root(tmp_path, ["01_a.ipynb", "02_b.ipynb"])
    with pytest.raises(SystemExit) as info:
        run.discover(root, ["02", "99_nope"])
    assert str(info.value) == "no notebook matches ['99_nope']; notebooks are ['01_a.ipynb', '02_b.ipynb']"


def test_discover_the_real_chapters():
    assert all(p.name[:2].isdigit() and p.suffix == ".ipynb" for p in run.discover())


def write_nb(path, sources, title=True):
    cells = [new_markdown_cell("# A test chapter")] if title else []
    cells += [new_code_cell('PROFILE = "full"\nSEED = 0', metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def dirs(tmp_path):
    for d in ("nbs", "out", "records"):
        (tmp_path / d).mkdir()
    return tmp_path


def test_execute_a_notebook_that_succeeds(dirs):
    nb = write_nb(
        dirs / "nbs" / "01_ok.ipynb",
        [
            "import os\nfrom utils import report\n"
            "report.metric('profile_seen', PROFILE)\n"
            "report.metric('strict', os.environ.get('MEDIMG_STRICT_EXERCISES'))\n"
            "report.timing('work', 2.0, n_items=10)\n"
            "report.environment(cwd=os.getcwd())",
            "print('done')",
        ],
    )
    entry = run.execute(nb, "fast", dirs / "out", dirs / "records", timeout=120)
    assert entry["status"] == "ok", entry
    assert entry["notebook"] == "01_ok.ipynb" and entry["profile"] == "fast"
    assert entry["wall_s"] > 0 and entry["peak_rss_mb"] > 0
    assert entry["metrics"]["profile_seen"] == {"value": "fast"}  # the parameter was injected
    assert entry["metrics"]["strict"] == {"value": "1"}  # exercises are strict under the runner
    assert entry["timings"]["work"]["per_second"] == 5.0
    assert entry["environment"]["cwd"] == str(nb.parent)
    executed = nbformat.read(dirs / "out" / "01_ok.ipynb", as_version=4)
    assert any(o.get("text") == "done\n" for c in executed.cells for o in c.get("outputs", []))
    assert nbformat.read(nb, as_version=4).cells[-1].outputs == []  # the source stays clean
    assert RECORD_ENV not in os.environ and STRICT_ENV not in os.environ  # restored


def test_execute_a_notebook_that_fails_in_its_third_cell(dirs):
    # cells: 0 parameters, 1 metric, 2 the failing cell, 3 never runs
    nb = write_nb(
        dirs / "nbs" / "02_bad.ipynb",
        [
            "from utils import report\nreport.metric('before', 1)",
            "value = 1 / 1\nraise ValueError('boom in the third cell')",
            "report.metric('after', 2)",
        ],
        title=False,
    )
    stale = dirs / "records" / "02_bad.json"
    stale.write_text('{"metrics": {"stale": {"value": 0}}}')  # a record from an earlier run is not reused
    entry = run.execute(nb, "fast", dirs / "out", dirs / "records", timeout=120)
    assert entry["status"] == "failed"
    assert entry["cell"] == 2, "the index of the failing cell in the source notebook"
    assert nbformat.read(nb, as_version=4).cells[entry["cell"]].source.startswith("value = 1 / 1")
    assert entry["cell_source"] == "value = 1 / 1"
    assert entry["error"] == "ValueError: boom in the third cell"
    assert entry["metrics"] == {"before": {"value": 1}}  # what ran before the error is kept
    assert entry["wall_s"] > 0 and entry["peak_rss_mb"] > 0
    assert RECORD_ENV not in os.environ and STRICT_ENV not in os.environ


def test_failed_cell_ignores_cells_papermill_inserts(tmp_path):
    nb = new_notebook(
        cells=[
            new_markdown_cell("error banner", metadata={"tags": ["papermill-error-cell-tag"]}),
            new_code_cell('PROFILE = "full"', metadata={"tags": ["parameters"]}),
            new_code_cell('PROFILE = "fast"', metadata={"tags": ["injected-parameters"]}),
            new_code_cell("ok = 1"),
            new_markdown_cell("anchor", metadata={"tags": ["papermill-error-cell-tag"]}),
            new_code_cell(
                "\n\n1 / 0\nmore",
                outputs=[
                    nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])
                ],
            ),
        ]
    )
    nbformat.write(nb, tmp_path / "x.ipynb")
    exc = RuntimeError("kernel said no")
    info = run._failed_cell(exc, tmp_path / "x.ipynb")
    assert info == {"error": "RuntimeError: kernel said no", "cell": 2, "cell_source": "1 / 0"}
    assert run._failed_cell(exc, tmp_path / "missing.ipynb") == {"error": "RuntimeError: kernel said no"}


def test_render_markdown_escapes_table_breaking_text():
    report = {
        "profile": "fast",
        "started": "2026-01-01 00:00",
        "total_s": 1.0,
        "environment": {
            "git_commit": "abc",
            "python": "3.11",
            "platform": "linux",
            "cpu": "x",
            "cpu_count": 2,
            "memory_gb": 1.0,
            "keras_backend_env": "tensorflow",
            "packages": {},
        },
        "notebooks": [
            {
                "notebook": "01_x.ipynb",
                "status": "failed",
                "wall_s": 1.0,
                "peak_rss_mb": 10.0,
                "cell": 3,
                "cell_source": "x = a | b",
                "error": "ValueError: `bad` | worse\nmore",
                "metrics": {"AUC | test": {"value": 0.9, "target": ">= 0.8 | 0.85"}},
            }
        ],
    }
    text = run.render_markdown(report)
    metric_rows = [line for line in text.splitlines() if line.startswith("| AUC")]
    assert len(metric_rows) == 1
    # an unescaped pipe would add columns: the row must still have exactly 4 cells
    assert len([c for c in metric_rows[0].replace("\\|", "").split("|")[1:-1]]) == 4
    assert "\nmore" not in text


def test_prepare_page_hides_the_injected_cell_and_states_the_run(tmp_path):
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title"),
            new_code_cell("PROFILE = 'full'"),
            new_code_cell("PROFILE = 'fast'"),
            new_code_cell("1 + 1"),
        ]
    )
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    entry = {"profile": "fast", "started": "2026-12-01 10:00", "environment": {"keras_backend": "jax"}}
    for _ in range(2):  # twice: still one provenance line
        run.prepare_page(path, entry, "abc1234")
    done = nbformat.read(path, as_version=4)
    assert [c.metadata.get("tags", []) for c in done.cells] == [
        [],
        [run.PROVENANCE_TAG],
        ["parameters"],
        ["injected-parameters", "remove-cell"],
        [],
    ]
    line = done.cells[1].source
    assert "**fast** profile" in line and "abc1234" in line and "jax" in line


def test_a_chapter_with_unchanged_inputs_is_reused(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "data").mkdir()
    nb_path = root / "notebooks" / "01_x.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), nb_path)
    (root / "utils" / "a.py").write_text("x = 1\n")
    (root / "data" / "registry.toml").write_text('[d1]\nused_by = ["01_x"]\n[d2]\nused_by = ["02_y"]\n')
    (root / "requirements.txt").write_text("numpy==2.4.6\n")
    base = run.fingerprint(nb_path, "fast", root)
    assert run.fingerprint(nb_path, "fast", root) == base  # deterministic
    assert run.fingerprint(nb_path, "full", root) != base
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert run.fingerprint(nb_path, "fast", root) != base
    monkeypatch.delenv("KERAS_BACKEND")
    # what does not feed the chapter does not matter; what does, does
    (root / "data" / "registry.toml").write_text('[d1]\nused_by = ["01_x"]\n[d2]\nused_by = ["02_y"]\nx = 1\n')
    assert run.fingerprint(nb_path, "fast", root) == base
    for path, text in (
        (root / "utils" / "a.py", "x = 2\n"),
        (root / "requirements.txt", "numpy==2.4.7\n"),
        (root / "data" / "registry.toml", '[d1]\nused_by = ["01_x"]\nsha256 = "ab"\n'),
    ):
        old = path.read_text()
        path.write_text(text)
        assert run.fingerprint(nb_path, "fast", root) != base, path.name
        path.write_text(old)

    monkeypatch.setattr(run, "RUN_CACHE", tmp_path / "cache")
    out = tmp_path / "out"
    out.mkdir()
    assert run.reuse(nb_path, "fast", out, base) is None  # nothing cached yet
    (out / nb_path.name).write_text("executed")
    entry = {"notebook": "01_x.ipynb", "status": "ok", "wall_s": 5.0, "started": "2026-12-01 10:00"}
    run.remember(nb_path, "fast", out, base, entry)
    (out / nb_path.name).unlink()
    again = run.reuse(nb_path, "fast", out, base)
    assert again["reused"]["from_run"] == "2026-12-01 10:00" and again["wall_s"] == 5.0
    assert (out / nb_path.name).read_text() == "executed"
    assert run.reuse(nb_path, "fast", out, "other digest") is None
    assert run.reuse(nb_path, "full", out, base) is None
    run.remember(nb_path, "fast", out, "d2", {**entry, "status": "failed"})  # a failed run is never kept
    assert run.reuse(nb_path, "fast", out, "d2") is None
    md = run.render_markdown({**report_dict(), "notebooks": [{**again, "peak_rss_mb": 10.0, "profile": "fast"}]})
    assert "ok (reused: run of 2026-12-01 10:00" in md and "1 of 1 chapters were reused" in md


@pytest.mark.parametrize(
    "value, target, profile, status",
    [
        (0.82, "> 0.85 (fast profile: > 0.8)", "fast", "met"),
        (0.82, "> 0.85 (fast profile: > 0.8)", "full", "not met"),
        (0.5, ">= 0.90 (full profile)", "fast", "not judged"),
        (0.95, ">= 0.90 (full profile)", "full", "met"),
        (0.3, "about 0.70 (TensorFlow tutorial CNN); > 0.25 (fast profile)", "full", "not judged"),
    ],
)
def test_targets_that_name_a_profile(value, target, profile, status):
    assert run.judge_for_profile(value, target, profile)[0] == status


def test_a_second_backend_runs_into_its_own_build_dir(dirs, monkeypatch):
    """`--build-dir` keeps a second backend's run (make test's JAX lane) away from the book's build/."""
    nb = write_nb(dirs / "nbs" / "01_ok.ipynb", ["print('done')"])
    monkeypatch.setattr(run, "discover", lambda only=None: [nb])
    monkeypatch.setattr(run, "RUN_CACHE", dirs / "cache")
    before = run.REPORT_JSON.stat().st_mtime if run.REPORT_JSON.is_file() else None
    assert run.main(["--profile", "fast", "--build-dir", str(dirs / "jax")]) == 0
    report = json.loads((dirs / "jax" / "run_report.json").read_text())
    assert [e["notebook"] for e in report["notebooks"]] == ["01_ok.ipynb"]
    assert (dirs / "jax" / "book" / "notebooks" / "01_ok.ipynb").is_file()
    assert (dirs / "jax" / "book" / "book" / "run_report.md").is_file()
    assert (run.REPORT_JSON.stat().st_mtime if run.REPORT_JSON.is_file() else None) == before
    # the same inputs again: reused from the shared cache, not re-executed
    assert run.main(["--profile", "fast", "--build-dir", str(dirs / "jax")]) == 0
    again = json.loads((dirs / "jax" / "run_report.json").read_text())
    assert "reused" in again["notebooks"][0]


def test_compare_backends_puts_wall_times_side_by_side(tmp_path):
    def write(name, backend, entries):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"environment": {"keras_backend_env": backend}, "notebooks": entries}))
        return path

    tf = write("tf", "tensorflow (default)", [{"notebook": "02_x.ipynb", "status": "ok", "wall_s": 100.0}])
    jx = write(
        "jax",
        "jax",
        [
            {"notebook": "02_x.ipynb", "status": "ok", "wall_s": 150.0},
            {"notebook": "03_y.ipynb", "status": "failed", "wall_s": 3.0},
        ],
    )
    table = run.compare_backends([tf, jx])
    assert table.splitlines()[0] == "| notebook | tensorflow | jax |"
    assert "| 02_x.ipynb | 100 s | 150 s (1.50×) |" in table
    assert "| 03_y.ipynb | – | failed |" in table
    assert run.main(["--compare", str(tf), str(jx)]) == 0


def test_chapters_run_two_at_a_time_give_the_numbers_of_one_at_a_time(dirs, monkeypatch, capsys):
    """`--jobs 2`: every chapter still runs (a failure is still named), in the report's order, with the same numbers."""
    seeded = (
        "import numpy as np\nfrom utils import report\nreport.metric('draw', float(np.random.default_rng({}).random()))"
    )
    nbs = [
        write_nb(dirs / "nbs" / "01_a.ipynb", [seeded.format(1)]),
        write_nb(dirs / "nbs" / "02_b.ipynb", ["raise ValueError('chapter b breaks')"]),
        write_nb(dirs / "nbs" / "03_c.ipynb", [seeded.format(3)]),
    ]
    monkeypatch.setattr(run, "discover", lambda only=None: nbs)
    monkeypatch.setattr(run, "RUN_CACHE", dirs / "cache")
    reports = {}
    for jobs in ("1", "2"):
        assert run.main(["--profile", "fast", "--force", "--jobs", jobs, "--build-dir", str(dirs / jobs)]) == 1
        reports[jobs] = json.loads((dirs / jobs / "run_report.json").read_text())
    assert "failed notebooks: 02_b.ipynb" in capsys.readouterr().err
    one, two = reports["1"], reports["2"]
    assert one["jobs"] == 1 and two["jobs"] == 2
    assert [e["notebook"] for e in two["notebooks"]] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert [e["status"] for e in two["notebooks"]] == ["ok", "failed", "ok"]
    assert two["notebooks"][1]["error"] == "ValueError: chapter b breaks"
    assert [e.get("metrics") for e in two["notebooks"]] == [e.get("metrics") for e in one["notebooks"]]
    md = (dirs / "2" / "book" / "book" / "run_report.md").read_text()
    assert "ran **2 at a time**" in md and "elapsed" in md
    assert "at a time" not in (dirs / "1" / "book" / "book" / "run_report.md").read_text()
    page = nbformat.read(dirs / "2" / "book" / "notebooks" / "01_a.ipynb", as_version=4)
    assert "run 2 chapters at a time" in page.cells[1].source  # the page says its timings shared the CPU


@pytest.mark.parametrize("argv, env, message", [(["--jobs", "0"], None, "at least 1"), ([], "two", "JOBS='two'")])
def test_a_bad_number_of_jobs_is_refused_with_the_fix(argv, env, message, monkeypatch, capsys):
    if env is not None:
        monkeypatch.setenv(run.JOBS_ENV, env)
    with pytest.raises(SystemExit):
        run.main(["--profile", "fast", *argv])
    assert message in capsys.readouterr().err
