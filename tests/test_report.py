"""Tests of utils.report: what a notebook reports reaches the JSON record, atomically."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from utils import report


@pytest.fixture
def record(tmp_path, monkeypatch):
    path = tmp_path / "records" / "nb.json"  # the folder does not exist yet
    monkeypatch.setenv(report.RECORD_ENV, str(path))
    return path


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_without_record_env_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report.metric("acc", 0.5) == 0.5
    assert report.current()["metrics"] == {"acc": {"value": 0.5}}
    assert list(tmp_path.iterdir()) == []


def test_metric_writes_the_record(record):
    value = np.float32(0.875)
    assert report.metric("accuracy", value, unit="%", target=">= 0.8", split="test") is value
    assert read(record) == {
        "metrics": {"accuracy": {"value": 0.875, "unit": "%", "target": ">= 0.8", "split": "test"}},
        "timings": {},
        "datasets": [],
        "environment": {},
        "glued": {},
    }
    report.metric("loss", 1)
    on_disk = read(record)
    assert on_disk == report.current() and set(on_disk["metrics"]) == {"accuracy", "loss"}
    assert on_disk["metrics"]["loss"] == {"value": 1}  # only the keys that were given


def test_numpy_values_are_converted(record):
    report.metric("i", np.int64(7))
    report.metric("b", np.bool_(True))
    report.metric("arr", np.array([[1, 2], [3, 4]], dtype=np.uint8))
    report.metric("nan", np.float64("nan"))
    report.metric("mixed", [np.float32(0.5), float("inf"), (np.int32(2), -np.inf)])
    report.metric("d", {"a": np.float16(0.25), 3: np.array([1.5])})
    metrics = read(record)["metrics"]
    assert metrics["i"]["value"] == 7 and type(metrics["i"]["value"]) is int
    assert metrics["b"]["value"] is True
    assert metrics["arr"]["value"] == [[1, 2], [3, 4]]
    assert metrics["nan"]["value"] == "nan"
    assert metrics["mixed"]["value"] == [0.5, "inf", [2, "-inf"]]
    assert metrics["d"]["value"] == {"a": 0.25, "3": [1.5]}
    assert "NaN" not in record.read_text() and "Infinity" not in record.read_text()  # strict JSON


def test_tensor_like_values_are_converted(record):
    class FakeTensor:  # like a TensorFlow EagerTensor: .numpy() but no .tolist()
        def numpy(self):
            return np.array([0.25, 0.75])

    report.metric("t", FakeTensor())
    assert read(record)["metrics"]["t"]["value"] == [0.25, 0.75]


def test_unserialisable_value_raises_and_does_not_poison_the_record(record):
    report.metric("ok", 1.0)
    before = record.read_text()
    with pytest.raises(TypeError, match=r"cannot record .*object"):
        report.metric("bad", object())
    with pytest.raises(TypeError):
        report.environment(thing={1, 2})
    assert record.read_text() == before
    assert "bad" not in report.current()["metrics"]
    report.metric("after", 2.0)  # later calls still work
    assert set(read(record)["metrics"]) == {"ok", "after"}
    assert [p.name for p in record.parent.iterdir()] == ["nb.json"]


@pytest.mark.parametrize("name", ["", None, 3])
def test_metric_name_must_be_a_string(name):
    with pytest.raises(ValueError, match="metric name"):
        report.metric(name, 1)


def test_writes_are_atomic(record, monkeypatch):
    report.metric("first", 1)
    good = record.read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        report.metric("second", 2)
    assert record.read_text() == good  # the previous record is intact ...
    assert [p.name for p in record.parent.iterdir()] == ["nb.json"]  # ... and no temporary file is left


def test_record_file_mode_follows_the_umask(record):
    old = os.umask(0o022)
    try:
        report.metric("x", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(record.stat().st_mode) == 0o644


def test_timing_throughput(record):
    entry = report.timing("train", 2.0, n_items=1000)
    assert entry == {"seconds": 2.0, "n_items": 1000, "item": "images", "per_second": 500.0}
    report.timing("eval", np.float64(0.12345), n_items=np.int64(10), item="volumes")
    report.timing("setup", 1.5)
    report.timing("instant", 0, n_items=5)
    timings = read(record)["timings"]
    assert timings["train"] == entry
    assert timings["eval"] == {"seconds": 0.123, "n_items": 10, "item": "volumes", "per_second": 81.0}
    assert timings["setup"] == {"seconds": 1.5}
    assert timings["instant"]["per_second"] is None


@pytest.mark.parametrize("seconds", [-0.001, -5, float("nan"), float("inf")])
def test_timing_rejects_invalid_seconds(record, seconds):
    with pytest.raises(ValueError, match=r"'train': seconds must be a finite number >= 0"):
        report.timing("train", seconds, n_items=10)
    assert report.current()["timings"] == {} and not record.exists()


def test_timing_rejects_negative_items():
    with pytest.raises(ValueError, match="n_items"):
        report.timing("train", 1.0, n_items=-1)


def test_record_dataset_deduplicates(record):
    report.record_dataset("tiny", "tiny/a.bin", "ab" * 32, "cache")
    report.record_dataset("tiny", "tiny/a.bin", "ab" * 32, "cache")
    report.record_dataset("tiny", "tiny/a.bin", "ab" * 32, "download")
    assert read(record)["datasets"] == [
        {"dataset": "tiny", "file": "tiny/a.bin", "sha256": "ab" * 32, "source": "cache"},
        {"dataset": "tiny", "file": "tiny/a.bin", "sha256": "ab" * 32, "source": "download"},
    ]


def test_environment_merges_and_converts(record):
    report.environment(backend="jax", cpu_count=np.int64(2))
    report.environment(devices=["cpu:0"], backend="torch")
    assert read(record)["environment"] == {"backend": "torch", "cpu_count": 2, "devices": ["cpu:0"]}


def test_current_is_a_copy_and_reset_forgets(record):
    report.metric("m", 1)
    report.timing("t", 1.0)
    report.record_dataset("d", "f", "0" * 64, "cache")
    report.environment(a=1)
    snapshot = report.current()
    snapshot["metrics"]["m"]["value"] = 99
    assert report.current()["metrics"]["m"]["value"] == 1
    report.reset()
    assert report.current() == {"metrics": {}, "timings": {}, "datasets": [], "environment": {}, "glued": {}}
    report.metric("fresh", 2)
    assert read(record)["metrics"] == {"fresh": {"value": 2}}


# ------------------------------------------------------------------ values inserted into the prose
def test_glue_formats_records_and_returns_the_text(record):
    assert report.glue("dice", np.float32(0.98712)) == "0.987"
    assert report.glue("diff", -0.0084, signed=True) == "\u22120.008"
    assert report.glue("share", 0.1834, digits=1, percent=True) == "18.3 %"
    assert report.glue("n_train", np.int64(48)) == "48"
    assert report.glue("n_big", 500100) == "500,100"
    assert report.glue("ratio", 2.04, ".1f") == "2.0"
    assert report.glue("verdict_text", "no detectable difference") == "no detectable difference"
    assert read(record)["glued"]["diff"] == "\u22120.008"


def test_glue_refuses_bad_keys_and_booleans(record):
    for key in ("", "1dice", "dice-score", "a b", None):
        with pytest.raises(ValueError, match="glue name"):
            report.glue(key, 0.5)
    with pytest.raises(TypeError, match="boolean"):
        report.glue("flag", True)


def test_glue_interval_glues_the_parts(record):
    text = report.glue_interval("ph", (0.002, -0.002, 0.005), signed=True)
    assert text == "+0.002 [\u22120.002, +0.005]"
    glued = read(record)["glued"]
    assert glued["ph_est"] == "+0.002" and glued["ph_lo"] == "\u22120.002" and glued["ph_hi"] == "+0.005"


def test_glue_verdict_follows_the_interval(record):
    assert report.glue_verdict("v1", (0.002, -0.002, 0.005)) == "no detectable difference"
    assert report.glue_verdict("v2", -0.008, -0.016, -0.002) == "below"
    assert (
        report.glue_verdict(
            "v3",
            (0.97, 0.96, 0.98),
            reference=0.944,
            above="higher than",
            none="not detectably different from",
            below="lower than",
        )
        == "above"
    )
    glued = read(record)["glued"]
    assert glued["v1"] == "no detectable difference" and glued["v2"] == "below" and glued["v3"] == "higher than"
    with pytest.raises(ValueError, match="all three wordings"):
        report.glue_verdict("v4", (0.1, 0.0, 0.2), above="higher")


def test_glued_text_is_a_string_that_the_notebook_does_not_echo(record):
    text = report.glue("k", 0.5)
    assert text == "0.500" and isinstance(text, str) and f"{text}" == "0.500"
    assert text._ipython_display_() is None  # IPython calls this instead of echoing the value


def test_timer_records_the_block(monkeypatch, tmp_path):
    import json

    record = tmp_path / "record.json"
    monkeypatch.setenv(report.RECORD_ENV, str(record))
    with report.timer("a block", n_items=10) as t:
        sum(range(1000))
    assert t.seconds is not None and t.seconds >= 0
    entry = json.loads(record.read_text())["timings"]["a block"]
    assert entry["n_items"] == 10 and entry["seconds"] == round(t.seconds, 3)
    with pytest.raises(ZeroDivisionError):
        with report.timer("failed block"):
            1 / 0
    assert "failed block" not in json.loads(record.read_text())["timings"]
    with pytest.raises(ValueError, match="non-empty"):
        report.timer("")
