"""Volume and batch runs: ``--slice all`` / ``a:b``, folders and globs of fastMRI ``.h5``, resume, torchrun.

A tiny random-weight NCSN++ (32 x 32, N = 2) reconstructs synthetic single-coil fastMRI files with the
real-valued algorithm (the cheapest); the volume files, metrics, resume and the 2-process split are checked.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_model

REPO = Path(__file__).resolve().parents[1]
SIZE = 32

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config file and a random-weight checkpoint for it."""
    cfg, ckpt = write_tiny_model(tmp_path_factory.mktemp("tiny"), sampling={"predictor": "dds", "corrector": "none"})
    return {"config": cfg, "ckpt": ckpt}


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centered orthonormal FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def make_volume(path: Path, slices: int, seed: int, target: bool = True) -> np.ndarray:
    """A single-coil fastMRI-like file (k-space [S, 40, 36], scanner units); returns the cropped magnitudes."""
    import h5py
    rng = np.random.RandomState(seed)
    h, w = SIZE + 8, SIZE + 4
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    imgs = []
    for s in range(slices):
        r = 0.5 + 0.3 * rng.rand()
        imgs.append(((x ** 2 + y ** 2 < r) * (1 + s) + 0.2 * rng.rand(h, w)) * np.exp(0.3j * x) * 1e-4)
    imgs = np.stack(imgs).astype(np.complex64)                               # [S, h, w]
    crop = np.abs(imgs[:, 4:4 + SIZE, 2:2 + SIZE]).astype(np.float32)        # [S, 32, 32]
    with h5py.File(path, "w") as f:
        f["kspace"] = fft2c(imgs).astype(np.complex64)
        if target:
            f["reconstruction_esc"] = crop
    return crop


def run_inproc(tiny: dict, *args: str, capsys=None) -> tuple[int, str, str]:
    """inference_real.py's main() in-process; (exit status, stdout, stderr)."""
    from score_mri.cli import common as ic
    spec = importlib.util.spec_from_file_location("_vol_real", REPO / "inference_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu", "--N", "2",
            "--acc_factor", "2", *args]
    status = 0
    try:
        ic.main(module.ALGORITHM, argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return status, out, err


def cli_cmd(tiny: dict, *args: str) -> list[str]:
    """The command line of inference_real.py with the tiny model."""
    return [str(REPO / "inference_real.py"), "--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]),
            "--device", "cpu", "--acc_factor", "2", *args]


ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
ROOT = Path("real") / "retrospective"


def psnr_fastmri(gt: np.ndarray, pred: np.ndarray) -> float:
    """fastMRI evaluate.py's PSNR of a volume: data_range = the volume's maximum."""
    return float(10 * np.log10(gt.max() ** 2 / np.mean((gt.astype(np.float64) - pred) ** 2)))


# ---------------------------------------------------------------------------------------------- units

def test_parse_slices_and_indices():
    from score_mri.io.readers import UserError, parse_slices, slice_indices
    assert parse_slices(None) is None and parse_slices("3") == 3 and parse_slices("-1") == -1
    assert slice_indices(parse_slices("all"), 5, Path("f")) == [0, 1, 2, 3, 4]
    assert slice_indices(parse_slices("1:3"), 5, Path("f")) == [1, 2]
    assert slice_indices(parse_slices("3:"), 5, Path("f")) == [3, 4]
    assert slice_indices(parse_slices("-2"), 5, Path("f")) == [3]
    assert slice_indices(None, 5, Path("f")) == [2]
    for bad in ("x", "1:y", "1:2:3"):
        with pytest.raises(UserError):
            parse_slices(bad)
    with pytest.raises(UserError):
        slice_indices(parse_slices("7:9"), 5, Path("f"))
    with pytest.raises(UserError):
        slice_indices(5, 5, Path("f"))


def test_default_threads_shares_idle_cores(monkeypatch):
    from score_mri.cli import batch
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert batch.default_threads({}) == 8
    assert batch.default_threads({"LOCAL_WORLD_SIZE": "2"}) == 4
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 0.0, 0.0))    # a loaded machine: the 2 idle cores
    assert batch.default_threads({}) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (20.0, 0.0, 0.0))
    assert batch.default_threads({"LOCAL_WORLD_SIZE": "2"}) == 1


def test_threads_flag_applies_to_the_run_only(tmp_path, tiny, capsys):
    import torch
    make_volume(tmp_path / "v.h5", 2, seed=0)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    status, _, err = run_inproc(tiny, "--data", str(tmp_path / "v.h5"), "--slice", "0", "--threads", str(want),
                                "--save_dir", str(tmp_path / "o"), "--quiet", capsys=capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "o" / ROOT / "v_s0_metrics.json").read_text())["threads"] == want
    assert torch.get_num_threads() == before, "an in-process caller keeps its thread count"


def test_progress_lines_off_a_terminal():
    import io

    from score_mri.cli.progress import Progress
    stream = io.StringIO()
    bar = Progress(100, "vol_s3", stream=stream)
    for _ in range(100):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "vol_s3: 100 steps"
    assert [ln.split()[2] for ln in lines[1:]] == [f"{k}/100" for k in range(10, 100, 10)]
    quiet = io.StringIO()
    bar = Progress(100, "vol_s3", stream=quiet, quiet=True)
    bar.update(100)
    assert quiet.getvalue() == ""


def test_assemble_volume_scores_like_fastmri_evaluate(tmp_path):
    """Non-square slices: target and reconstruction are centre-cropped to W x W, then scored as a volume."""
    import h5py

    from score_mri.cli import batch
    from score_mri import metrics
    rng = np.random.RandomState(0)
    target = rng.rand(3, 40, 24).astype(np.float32) * 7
    root = tmp_path / "r"
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["kspace"] = np.zeros((3, 40, 24), np.complex64)
        f["reconstruction_rss"] = target
    recon = target + rng.randn(3, 40, 24).astype(np.float32)
    for sub, arr in (("recon", -recon), ("input", target * 0.5)):  # a real-valued recon may be negative
        (root / sub).mkdir(parents=True)
        for i in (1, 2):
            np.save(root / sub / f"f_s{i}.npy", arr[i])
    record = batch.assemble_volume(tmp_path / "f.h5", root, [1, 2])
    assert record["target"] == "reconstruction_rss" and record["slices"] == [1, 2]
    with h5py.File(root / "reconstructions" / "f.h5", "r") as f:
        np.testing.assert_array_equal(f["reconstruction"][()], np.abs(recon[1:3]))
    gt, pred = target[1:3, 8:32], np.abs(recon[1:3, 8:32])
    assert record["recon"]["psnr"] == pytest.approx(psnr_fastmri(gt, pred), rel=1e-6)
    assert record["recon"] == pytest.approx(metrics.evaluate(gt.astype(np.float64), pred.astype(np.float64)))
    assert record["zero_filled"]["nmse"] == pytest.approx(0.25, rel=1e-6)


# ---------------------------------------------------------------------------------------------- volumes

def test_slice_all_writes_fastmri_volume_and_metrics(tmp_path, tiny, capsys):
    crop = make_volume(tmp_path / "vol.h5", 3, seed=0)
    out = tmp_path / "o"
    status, stdout, err = run_inproc(tiny, "--data", str(tmp_path / "vol.h5"), "--slice", "all",
                                     "--save_dir", str(out), capsys=capsys)
    assert status == 0, err
    root = out / ROOT
    import h5py

    from score_mri import metrics
    with h5py.File(root / "reconstructions" / "vol.h5", "r") as f:
        rec = f["reconstruction"][()]
        assert list(f.attrs["slices"]) == [0, 1, 2]
    assert rec.dtype == np.float32 and rec.shape == (3, SIZE, SIZE)
    per_slice = np.stack([np.abs(np.load(root / "recon" / f"vol_s{i}.npy")) for i in range(3)])
    np.testing.assert_array_equal(rec, per_slice.astype(np.float32))
    for i in range(3):  # the per-slice outputs as for one slice, labels in the input's units
        np.testing.assert_allclose(np.load(root / "label" / f"vol_s{i}.npy"), crop[i], rtol=1e-4, atol=1e-9)
    summary = json.loads((root / "summary.json").read_text())
    (vol,) = summary["volumes"]
    assert vol["target"] == "reconstruction_esc" and vol["slices"] == [0, 1, 2]
    assert vol["recon"]["psnr"] == pytest.approx(psnr_fastmri(crop, rec), rel=1e-6)
    # SSIM: per slice with the volume's maximum as data range, averaged (not the per-slice maxima)
    from skimage.metrics import structural_similarity
    ssim = np.mean([structural_similarity(crop[i].astype(np.float64), rec[i].astype(np.float64),
                                          data_range=float(crop.max())) for i in range(3)])
    assert vol["recon"]["ssim"] == pytest.approx(ssim, rel=1e-6)
    assert vol["recon"] == pytest.approx(metrics.evaluate(crop, rec))
    assert summary["mean"]["psnr"] == pytest.approx(vol["recon"]["psnr"])
    table = (root / "summary.md").read_text()
    assert "| vol | 3 | reconstruction_esc |" in table and "**mean**" in table
    assert "1 volume(s)" in stdout and "dB" in stdout
    assert "vol_s0: 2 steps" in err, "plain progress lines off a terminal"


def test_folder_range_glob_resume_and_refusal(tmp_path, tiny, capsys):
    data = tmp_path / "data"
    data.mkdir()
    crops = {name: make_volume(data / f"{name}.h5", 3, seed=k, target=False) for k, name in enumerate(("a", "b"))}
    out = tmp_path / "o"
    root = out / ROOT
    status, _, err = run_inproc(tiny, "--data", str(data), "--slice", "0:2", "--save_dir", str(out), "--seed", "1",
                                capsys=capsys)
    assert status == 0, err
    summary = json.loads((root / "summary.json").read_text())
    assert [v["volume"] for v in summary["volumes"]] == ["a", "b"]
    import h5py
    for v in summary["volumes"]:  # no stored target: the fully sampled slices are the target
        assert v["target"] == "fully sampled" and v["slices"] == [0, 1]
        with h5py.File(root / "reconstructions" / f"{v['volume']}.h5", "r") as f:
            rec = f["reconstruction"][()]
        assert rec.shape == (2, SIZE, SIZE)
        assert v["recon"]["psnr"] == pytest.approx(psnr_fastmri(crops[v["volume"]][:2], rec), rel=1e-5)
    assert (root / "summary.md").read_text().count("\n") == 5  # header, rule, 2 volumes, mean
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("recon/*.npy")}

    # a glob of the same files with all slices: the 4 done slices are skipped, 2 are new
    status, _, err = run_inproc(tiny, "--data", str(data / "*.h5"), "--slice", "all", "--save_dir", str(out),
                                "--seed", "1", "--quiet", capsys=capsys)
    assert status == 0, err
    assert err == "", "--quiet: no progress"
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "done slices are not recomputed"
    assert len(list(root.glob("recon/*.npy"))) == 6
    assert [v["slices"] for v in json.loads((root / "summary.json").read_text())["volumes"]] == [[0, 1, 2]] * 2

    # other settings into the same folder: refused in one line, nothing changed; --overwrite replaces
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    status, _, err = run_inproc(tiny, "--data", str(data), "--save_dir", str(out), "--seed", "2", capsys=capsys)
    assert status == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    status, _, err = run_inproc(tiny, "--data", str(data), "--slice", "0", "--save_dir", str(out), "--seed", "2",
                                "--overwrite", "--quiet", capsys=capsys)
    assert status == 0, err
    assert json.loads((root / "a_s0_metrics.json").read_text())["seed"] == 2
    assert json.loads((root / "a_s1_metrics.json").read_text())["seed"] == 1


def test_bad_batch_inputs_exit_2(tmp_path, tiny, capsys):
    np.save(tmp_path / "x.npy", np.ones((SIZE, SIZE), np.float32))
    (tmp_path / "empty").mkdir()
    make_volume(tmp_path / "v.h5", 2, seed=0)
    for args in (["--data", str(tmp_path / "x.npy"), "--slice", "all"], ["--data", str(tmp_path / "empty")],
                 ["--data", str(tmp_path / "v.h5"), "--slice", "5:9"], ["--data", str(tmp_path / "v.h5"),
                                                                         "--slice", "a:b"],
                 ["--data", str(tmp_path / "v.h5"), "--threads", "0"]):
        status, _, err = run_inproc(tiny, *args, "--save_dir", str(tmp_path / "o"), capsys=capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists()


def test_killed_run_resumes(tmp_path, tiny):
    make_volume(tmp_path / "vol.h5", 3, seed=3)
    out = tmp_path / "o"
    root = out / ROOT
    cmd = [sys.executable, *cli_cmd(tiny, "--data", str(tmp_path / "vol.h5"), "--slice", "all", "--N", "16",
                                    "--save_dir", str(out))]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not list(root.glob("*_metrics.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = sorted(root.glob("*_metrics.json"))
    assert done, "the first slice was written before the kill"
    for m in done:  # every marker has its whole result set
        assert (root / "recon" / m.name.replace("_metrics.json", ".npy")).is_file()
    stamps = {m: m.stat().st_mtime_ns for m in done}
    proc = subprocess.run([sys.executable, *cli_cmd(tiny, "--data", str(tmp_path / "vol.h5"), "--slice", "all",
                                                    "--N", "16", "--save_dir", str(out))],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(done)} done already" in proc.stderr
    assert {m: m.stat().st_mtime_ns for m in done} == stamps
    assert len(list(root.glob("*_metrics.json"))) == 3 and not list(root.glob(".tmp-*"))
    import h5py
    with h5py.File(root / "reconstructions" / "vol.h5", "r") as f:
        assert f["reconstruction"].shape == (3, SIZE, SIZE)


def test_torchrun_two_processes_split_the_slices(tmp_path, tiny):
    data = tmp_path / "data"
    data.mkdir()
    for k, name in enumerate(("a", "b")):
        make_volume(data / f"{name}.h5", 2, seed=k)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *cli_cmd(tiny, "--data", str(data), "--N", "2", "--save_dir", str(out))]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr and "Traceback" not in proc.stderr
    assert "rank 0: [1/2]" in proc.stderr and "rank 1: [1/2]" in proc.stderr, "each rank did two slices"
    root = out / ROOT
    summary = json.loads((root / "summary.json").read_text())
    assert [v["slices"] for v in summary["volumes"]] == [[0, 1], [0, 1]]
    assert proc.stdout.count("volume(s)") == 1, "rank 0 alone assembles"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    refused = subprocess.run([*cmd, "--seed", "5"], env=ENV, capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)  # other settings: every rank stops with rank 0's one-line error
    assert refused.returncode != 0 and refused.stderr.count("--overwrite") == 2, refused.stderr[-3000:]
    assert "terminate called" not in refused.stderr
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    # the same slice in one process gives the same image (each slice has its own seeded generator)
    status, _, err = run_inproc(tiny, "--data", str(data / "a.h5"), "--slice", "1", "--N", "2",
                                "--save_dir", str(tmp_path / "single"), "--quiet")
    assert status == 0, err
    split = np.load(root / "recon" / "a_s1.npy")
    np.testing.assert_allclose(np.load(tmp_path / "single" / ROOT / "recon" / "a_s1.npy"), split, rtol=1e-4,
                               atol=1e-5 * float(np.abs(split).max()))
