"""The data layer's loaders of named datasets: the nuclei image of the stardist wheel and the pyradiomics NRRD scans.

(The MedMNIST and CIFAR-10 loaders are tested in ``test_data.py`` with the registry and downloads they rely on.)
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import BASE_META, digests, resolve_real_sample

from utils import data

# ---------------------------------------------------------------------------
# the nuclei image of the stardist wheel
# ---------------------------------------------------------------------------


def _tiff_bytes(array) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def test_load_nuclei_reads_the_wheel_members_through_the_data_layer(write_registry, monkeypatch, isolated_environment):
    img = (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint16)
    inst = np.zeros((64, 64), np.uint16)
    inst[5:15, 5:15], inst[30:40, 20:35] = 1, 2
    members = {"stardist/data/images/img2d.tif": _tiff_bytes(img), "stardist/data/images/mask2d.tif": _tiff_bytes(inst)}
    calls = []

    def fake_pip_download(spec, workdir):
        calls.append(spec)
        wheel = workdir / "stardist-0.9.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for name, payload in members.items():
                zf.writestr(name, payload)
        return wheel

    monkeypatch.setattr(data, "_pip_download", fake_pip_download)
    write_registry(
        {
            data.NUCLEI_DATASET: {
                **BASE_META,
                "pypi": "stardist==0.9.2",
                "files": [
                    {
                        "path": "stardist/img2d.tif",
                        "member": "stardist/data/images/img2d.tif",
                        **digests(members["stardist/data/images/img2d.tif"]),
                    },
                    {
                        "path": "stardist/mask2d.tif",
                        "member": "stardist/data/images/mask2d.tif",
                        **digests(members["stardist/data/images/mask2d.tif"]),
                    },
                ],
            }
        }
    )
    nuc = data.load_nuclei()
    np.testing.assert_array_equal(nuc.image, img)
    np.testing.assert_array_equal(nuc.instances, inst)
    assert nuc.instances.dtype == np.int32 and nuc.mask.dtype == np.uint8
    assert nuc.mask.sum() == 100 + 150 and nuc.n_nuclei == 2
    assert nuc.paths[0] == isolated_environment / "stardist" / "img2d.tif"
    assert calls == ["stardist==0.9.2"]  # one download serves both files


def test_real_registry_entry_for_the_nuclei():
    ds = data.load_registry()[data.NUCLEI_DATASET]
    assert ds.pypi == "stardist==0.9.2" and "03_attention_segmentation" in ds.extra["used_by"]
    assert [f.member for f in ds.files] == ["stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"]
    assert all(f.size == 524544 for f in ds.files)


def test_real_nuclei_from_pypi():
    """The real files, fetched from the stardist wheel on PyPI (skipped offline)."""
    try:
        nuc = data.load_nuclei()
    except data.DatasetNotFoundError as exc:
        pytest.skip(f"PyPI not reachable: {exc}")
    assert nuc.image.shape == (512, 512) and nuc.image.dtype == np.uint16
    assert nuc.n_nuclei == 125
    assert 0.1 < nuc.mask.mean() < 0.3


# ---------------------------------------------------------------------------
# NRRD volumes (pyradiomics test cases)
# ---------------------------------------------------------------------------


def _write_nrrd(path, array_zyx, spacing_zyx=(5.0, 0.5, 0.25), origin=(-10.0, 20.0, 30.0), directions=None):
    import nrrd

    if directions is None:
        directions = np.diag(spacing_zyx[::-1])  # rows: x, y, z
    header = {"space": "left-posterior-superior", "space directions": directions, "space origin": np.array(origin)}
    nrrd.write(str(path), array_zyx, header, index_order="C")
    return path


def test_read_nrrd_returns_slices_first_and_the_voxel_size(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    vol = data.read_nrrd(_write_nrrd(tmp_path / "v.nrrd", arr))
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.spacing_mm == (5.0, 0.5, 0.25) and vol.origin_mm == (-10.0, 20.0, 30.0)
    assert vol.space == "left-posterior-superior"


def test_read_nrrd_flips_axes_that_run_against_the_world_axes(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    vol = data.read_nrrd(
        _write_nrrd(tmp_path / "v.nrrd", arr, origin=(0.0, 10.0, 0.0), directions=np.diag([0.78, -0.5, 6.5]))
    )
    assert vol.spacing_mm == pytest.approx((6.5, 0.5, 0.78))
    np.testing.assert_array_equal(vol.array, arr[:, ::-1, :])  # rows now run along +y
    assert vol.origin_mm == pytest.approx((0.0, 9.0, 0.0))  # the old last row, 10 - 2 * 0.5


def test_read_nrrd_errors_name_the_file(tmp_path):
    bad = tmp_path / "scan.nrrd"
    bad.write_bytes(b"not an nrrd file at all")
    with pytest.raises(ValueError, match=r"scan\.nrrd: pynrrd cannot read it"):
        data.read_nrrd(bad)
    oblique = np.array([[0.5, 0.5, 0.0], [-0.5, 0.5, 0.0], [0.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match=r"ob\.nrrd: oblique"):
        data.read_nrrd(_write_nrrd(tmp_path / "ob.nrrd", np.zeros((2, 2, 2)), directions=oblique))


def test_load_radiomics_case_rejects_unknown_cases():
    with pytest.raises(ValueError, match=r"case='liver1'.*brain1"):
        data.load_radiomics_case("liver1")


def test_load_radiomics_case_rejects_a_mask_on_another_grid(tmp_path, monkeypatch):
    files = {
        "lung1_image.nrrd": _write_nrrd(tmp_path / "i.nrrd", np.zeros((3, 4, 4), np.int16)),
        "lung1_label.nrrd": _write_nrrd(
            tmp_path / "l.nrrd", np.zeros((3, 4, 4), np.int16), spacing_zyx=(2.5, 0.5, 0.25)
        ),
    }
    monkeypatch.setattr(data, "sample", lambda name, file: files[file])
    with pytest.raises(ValueError, match=r"lung1: image and label geometry differ"):
        data.load_radiomics_case("lung1")


def test_real_radiomics_lung_case(tmp_path, monkeypatch):
    paths = {
        f: resolve_real_sample("pyradiomics-samples", f, tmp_path) for f in ("lung1_image.nrrd", "lung1_label.nrrd")
    }
    monkeypatch.setattr(data, "sample", lambda name, file: paths[file])  # resolved above, once
    image, mask = data.load_radiomics_case("lung1")
    assert image.array.shape == mask.array.shape == (48, 512, 512)
    assert image.spacing_mm == pytest.approx((5.0, 0.5703125, 0.5703125), rel=1e-3)
    assert image.array.min() == -1024  # CT in Hounsfield units, air at the padding value
    assert set(np.unique(mask.array)) == {0, 1} and int(mask.array.sum()) == 837
    # the lesion is denser than lung parenchyma (around -800 HU): a soft-tissue nodule
    assert np.median(image.array[mask.array > 0]) > -400
