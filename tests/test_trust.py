"""A batch never lies about what it holds, and every bad setting is refused (issue 19, items 1-9 and part of 10).

A tiny random-weight NCSN++ (32 x 32, N = 2) reconstructs synthetic single-coil fastMRI files with the real-valued
algorithm in-process; resume keys, failures inside a batch, the completion marker, the save_dir lock, flag checks
and the README's example settings are checked.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_model
from test_volumes import ENV, ROOT, cli_cmd, make_volume, run_inproc

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config file and a random-weight checkpoint for it (dds, no corrector, as the embedded config)."""
    cfg, ckpt = write_tiny_model(tmp_path_factory.mktemp("tiny"), sampling={"predictor": "dds", "corrector": "none"})
    return {"config": cfg, "ckpt": ckpt}


@pytest.fixture
def own_tiny(tmp_path, tiny):
    """A private copy of the tiny model (a test may replace its checkpoint in place)."""
    d = tmp_path / "model"
    d.mkdir()
    return {k: Path(shutil.copy(v, d / Path(v).name)) for k, v in tiny.items()}


def _volume(save: Path, stem: str) -> tuple[np.ndarray, list[int]]:
    """The reconstruction of a volume file and the slices it holds."""
    import h5py
    with h5py.File(save / ROOT / "reconstructions" / f"{stem}.h5", "r") as f:
        return np.asarray(f["reconstruction"]), [int(i) for i in f.attrs["slices"]]


# ---------------------------------------------------------------------------------------------- item 1

def test_resume_is_keyed_by_checkpoint_and_input_content(tmp_path, own_tiny, capsys):
    import torch
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 3, seed=0)
    args = ("--data", str(vol), "--slice", "all", "--save_dir", str(save))
    status, _, err = run_inproc(own_tiny, *args, capsys=capsys)
    assert status == 0, err
    first, _ = _volume(save, "v")

    state = torch.load(own_tiny["ckpt"], weights_only=False)            # other weights, same path and size
    for v in [*state["model"].values(), *state["ema"]["shadow_params"]]:
        if v.is_floating_point():
            v.mul_(1.5)
    torch.save(state, own_tiny["ckpt"])
    status, out, err = run_inproc(own_tiny, *args, capsys=capsys)
    assert status == 2 and "ckpt_id" in err and "done already" not in err + out, err
    status, _, err = run_inproc(own_tiny, *args, "--overwrite", capsys=capsys)
    assert status == 0, err
    second, _ = _volume(save, "v")
    assert not np.array_equal(first, second), "the replaced checkpoint's reconstruction"

    make_volume(vol, 3, seed=5)                                         # the input replaced in place
    status, out, err = run_inproc(own_tiny, *args, capsys=capsys)
    assert status == 2 and "input_id" in err, err


# ---------------------------------------------------------------------------------------------- item 2

def _poison(path: Path, index: int, value: float) -> None:
    """Set slice ``index`` of a file's k-space to ``value`` (NaN or 0)."""
    import h5py
    with h5py.File(path, "r+") as f:
        k = f["kspace"][...]
        k[index] = value
        f["kspace"][...] = k


@pytest.mark.parametrize("value", [np.nan, 0.0], ids=["nan", "zero"])
def test_a_bad_slice_does_not_stop_the_batch(tmp_path, tiny, capsys, value):
    folder, save = tmp_path / "in", tmp_path / "o"
    folder.mkdir()
    make_volume(folder / "a.h5", 3, seed=1)
    make_volume(folder / "b.h5", 2, seed=2)
    _poison(folder / "a.h5", 1, value)
    args = ("--data", str(folder), "--save_dir", str(save))
    status, out, err = run_inproc(tiny, *args, capsys=capsys)
    assert status == 2, err
    assert "a.h5 slice 1" in err and "1 of 5 slice(s) failed" in err, err
    root = save / ROOT
    for name in ("a_s0", "a_s2", "b_s0", "b_s1"):
        assert (root / f"{name}_metrics.json").is_file(), name
    assert not (root / "a_s1_metrics.json").exists()
    assert _volume(save, "b")[1] == [0, 1]
    assert not (root / "reconstructions" / "a.h5").exists(), "no volume file for a file with a failed slice"
    assert not (root / "reconstructions" / "a.nii.gz").exists()
    summary = json.loads((root / "summary.json").read_text())
    assert [(f["volume"], f["slice"]) for f in summary["failed"]] == [("a", 1)]
    assert summary["mean"] is not None and "failed" in (root / "summary.md").read_text()

    status, out, err = run_inproc(tiny, *args, capsys=capsys)          # a rerun redoes only the failed slice
    assert status == 2 and "4 done already, 1 to do" in err + out, err
    assert _volume(save, "b")[1] == [0, 1]


# ---------------------------------------------------------------------------------------------- item 3

def _fail_moves_after(monkeypatch, n: int) -> None:
    """Make ``os.replace`` in the result writer raise after ``n`` successful moves."""
    from score_mri.io import outputs
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > n:
            raise OSError("forced failure of a move")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)


def _run_script(tiny: dict, *args: str):
    """inference_real.py's run() in-process (exceptions propagate)."""
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import REAL
    return ic.run(REAL, ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu",
                         "--N", "2", "--acc_factor", "2", "--quiet", *args])


def test_overwrite_removes_the_old_marker_before_moving(tmp_path, tiny, capsys, monkeypatch):
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 2, seed=0)
    args = ("--data", str(vol), "--slice", "0", "--save_dir", str(save))
    _run_script(tiny, *args)
    marker = save / ROOT / "v_s0_metrics.json"
    assert marker.is_file()
    _fail_moves_after(monkeypatch, 2)
    with pytest.raises(OSError, match="forced failure"):
        _run_script(tiny, *args, "--overwrite", "--seed", "7")
    assert not marker.exists(), "a half-replaced result set must not keep a completion marker"


def test_a_failed_move_of_a_new_result_leaves_no_marker(tmp_path, tiny, monkeypatch):
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 2, seed=0)
    for n in (0, 3, 7):
        _fail_moves_after(monkeypatch, n)
        with pytest.raises(OSError, match="forced failure"):
            _run_script(tiny, "--data", str(vol), "--slice", "0", "--save_dir", str(save / str(n)))
        assert not (save / str(n) / ROOT / "v_s0_metrics.json").exists(), n
        assert not list((save / str(n) / ROOT).glob(".tmp-*")), "scratch removed"


def test_result_files_are_written_with_the_marker_last(tmp_path, tiny, monkeypatch):
    from score_mri.io import outputs
    moved, real = [], os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda s, d: (moved.append(Path(d).name), real(s, d))[1])
    vol = tmp_path / "v.h5"
    make_volume(vol, 2, seed=0)
    _run_script(tiny, "--data", str(vol), "--slice", "0", "--save_dir", str(tmp_path / "o"))
    assert len(moved) > 5 and moved[-1] == "v_s0_metrics.json" and moved.count("v_s0_metrics.json") == 1


# ---------------------------------------------------------------------------------------------- item 4

def test_a_second_run_into_a_busy_save_dir_is_refused(tmp_path, tiny, capsys):
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 4, seed=0)
    first = subprocess.Popen([sys.executable, *cli_cmd(tiny, "--data", str(vol), "--slice", "all", "--N", "4",
                                                       "--save_dir", str(save), "--quiet")],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (save / ROOT / "v_s0_metrics.json").exists():      # the first run is mid-volume
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        try:
            status, _, err = run_inproc(tiny, "--data", str(vol), "--slice", "all", "--seed", "7", "--overwrite",
                                        "--save_dir", str(save), "--quiet", capsys=capsys)
        finally:
            first.send_signal(signal.SIGCONT)
        assert status == 2 and "another run" in err, err
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    keys = {json.loads((save / ROOT / f"v_s{i}_metrics.json").read_text())["run_key"]["seed"] for i in range(4)}
    assert keys == {42}, "one run's slices only"


def test_a_slice_replaced_by_another_run_is_not_put_in_the_volume(tmp_path, tiny, capsys, monkeypatch):
    from score_mri.cli import batch
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 3, seed=0)
    real = batch.ic.reconstruct_problem

    def and_another_run(job, model, problem, **kw):
        """Reconstruct, then let 'another run' rewrite slice 0's result with other settings."""
        record = real(job, model, problem, **kw)
        marker = save / ROOT / "v_s0_metrics.json"
        if problem.name == "v_s2":
            other = json.loads(marker.read_text())
            other["run_key"]["seed"] = 7
            marker.write_text(json.dumps(other))
        return record

    monkeypatch.setattr(batch.ic, "reconstruct_problem", and_another_run)
    status, _, err = run_inproc(tiny, "--data", str(vol), "--slice", "all", "--save_dir", str(save), "--quiet",
                                capsys=capsys)
    assert status == 2 and "v.h5 slice 0: its result was replaced by another run" in err, err
    assert not (save / ROOT / "reconstructions" / "v.h5").exists()
    summary = json.loads((save / ROOT / "summary.json").read_text())
    assert [(f["volume"], f["slice"]) for f in summary["failed"]] == [("v", 0)]


# ---------------------------------------------------------------------------------------------- items 5-7

def _main(script_name: str, argv: list[str], capsys) -> tuple[int, str]:
    """A script's main() in-process; (exit status, stderr)."""
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import SCRIPTS
    try:
        ic.main(SCRIPTS[script_name], argv)
        status = 0
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def test_sense_without_cg_iterations_is_refused(tmp_path, capsys):
    status, err = _main("sense", ["--data", "001", "--cg_iters", "0", "--save_dir", str(tmp_path)], capsys)
    assert status == 2 and err.startswith("error: --cg_iters must be >= 1"), err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["json", "dict", "raises", "none"])
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, capsys, case):
    path = tmp_path / ("cfg.json" if case == "json" else "cfg.py")
    path.write_text({"json": "{}\n", "dict": "def get_config():\n    return {'model': 1}\n",
                     "raises": "def get_config():\n    raise RuntimeError('boom')\n",
                     "none": "def get_config():\n    pass\n"}[case])
    status, err = _main("real", ["--data", "001", "--config", str(path), "--save_dir", str(tmp_path / "o")], capsys)
    assert status == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_threads_are_capped_to_the_cores(tmp_path, tiny, capsys):
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    make_volume(tmp_path / "v.h5", 1, seed=0)
    status, _, err = run_inproc(tiny, "--data", str(tmp_path / "v.h5"), "--slice", "0", "--threads", "999",
                                "--save_dir", str(tmp_path / "o"), "--quiet", capsys=capsys)
    assert status == 0, err
    assert f"--threads 999 is more than the {cpus} CPU core(s)" in err
    assert json.loads((tmp_path / "o" / ROOT / "v_s0_metrics.json").read_text())["threads"] == cpus


# ---------------------------------------------------------------------------------------------- item 8

def test_faithful_with_the_embedded_dds_default_runs_the_original_sampler(tmp_path, tiny, capsys):
    make_volume(tmp_path / "v.h5", 1, seed=0)
    status, _, err = run_inproc(tiny, "--data", str(tmp_path / "v.h5"), "--slice", "0", "--faithful",
                                "--save_dir", str(tmp_path / "o"), "--quiet", capsys=capsys)
    assert status == 0, err
    record = json.loads((tmp_path / "o" / ROOT / "v_s0_metrics.json").read_text())
    assert (record["predictor"], record["corrector"], record["faithful"]) == ("reverse_diffusion", "langevin", True)
    status, _, err = run_inproc(tiny, "--data", str(tmp_path / "v.h5"), "--slice", "0", "--faithful",
                                "--predictor", "dds", "--save_dir", str(tmp_path / "p"), capsys=capsys)
    assert status == 2 and "--faithful" in err and "Traceback" not in err, err


def _readme() -> str:
    """The README's text."""
    return (REPO / "README.md").read_text()


def test_readme_faithful_example_resolves_to_the_original_settings():
    from score_mri.cli.job import prepare
    from score_mri.cli.scripts import REAL
    line = next(ln for ln in _readme().splitlines() if ln.startswith("python inference_real.py") and "--faithful" in ln)
    job = prepare(REAL, line.split("#")[0].split()[2:])
    s = job.settings
    assert (s.predictor, s.corrector, s.N, s.n_steps, s.snr, s.faithful) == \
        ("reverse_diffusion", "langevin", 2000, 1, 0.16, True)


def test_readme_hybrid_m_steps_sentence_matches_the_configs():
    from score_mri.cli.flags import DEFAULT_CONFIG, load_config
    text = " ".join(_readme().split())
    sentence = re.search(r"\*\*Hybrid flags\*\*: `--m_steps` \((.*?)\),", text)
    assert sentence, "the hybrid flags sentence"
    embedded = load_config(DEFAULT_CONFIG).sampling
    knee = load_config(REPO / "configs" / "ve" / "fastmri_knee_320_ncsnpp_continuous.py").sampling
    said = sentence.group(1)
    assert f"{knee.m_steps} in the paper's knee config" in said, said
    assert f"{embedded.m_steps} in the embedded config" in said, said
    assert f"default N is {embedded.N_multi_coil}" in said, said


# ---------------------------------------------------------------------------------------------- item 9

def test_a_sub_range_rerun_keeps_the_volume_whole(tmp_path, tiny, capsys):
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 3, seed=0)
    status, _, err = run_inproc(tiny, "--data", str(vol), "--slice", "all", "--save_dir", str(save), "--quiet",
                                capsys=capsys)
    assert status == 0, err
    whole, slices = _volume(save, "v")
    status, _, err = run_inproc(tiny, "--data", str(vol), "--slice", "0:1", "--save_dir", str(save), "--quiet",
                                capsys=capsys)
    assert status == 0, err
    again, slices_again = _volume(save, "v")
    assert slices_again == slices == [0, 1, 2] and np.array_equal(again, whole)


def test_a_default_passed_explicitly_is_the_same_setting(tmp_path, tiny, capsys):
    from score_mri.cli.flags import load_config
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 2, seed=0)
    config = load_config(tiny["config"])
    base = ("--data", str(vol), "--slice", "all", "--save_dir", str(save))
    assert run_inproc(tiny, *base, capsys=capsys)[0] == 0
    for explicit in (("--seed", str(config.seed)), ("--predictor", "dds"), ("--snr", str(config.sampling.snr))):
        status, out, err = run_inproc(tiny, *base, *explicit, capsys=capsys)
        assert status == 0 and "2 done already" in err + out, (explicit, err)


def test_tmp_files_of_killed_volume_and_summary_writes_are_removed(tmp_path, tiny, capsys):
    vol, save = tmp_path / "v.h5", tmp_path / "o"
    make_volume(vol, 2, seed=0)
    dead = 2 ** 22 + 12345                       # above any pid_max: no such process
    stale = [save / ROOT / f".summary.json.{dead}.tmp", save / ROOT / f".summary.md.{dead}.tmp",
             save / ROOT / "reconstructions" / f".v.h5.{dead}.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
    status, _, err = run_inproc(tiny, "--data", str(vol), "--slice", "all", "--save_dir", str(save), "--quiet",
                                capsys=capsys)
    assert status == 0, err
    assert not [p for p in stale if p.exists()]
    assert not list((save / ROOT).rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- item 10 (CLI)

def test_summary_zero_filled_mean_is_the_mean_of_the_volumes(tmp_path, tiny, capsys):
    from score_mri import metrics
    folder, save = tmp_path / "in", tmp_path / "o"
    folder.mkdir()
    targets = {s: make_volume(folder / f"{s}.h5", 2, seed=i) for i, s in enumerate(("a", "b"))}
    status, _, err = run_inproc(tiny, "--data", str(folder), "--save_dir", str(save), "--quiet", capsys=capsys)
    assert status == 0, err
    summary = json.loads((save / ROOT / "summary.json").read_text())
    by_hand = []
    for stem, target in targets.items():
        zf = np.stack([np.abs(np.load(save / ROOT / "input" / f"{stem}_s{i}.npy")) for i in range(2)])
        by_hand.append(metrics.evaluate(target.astype(np.float64), zf.astype(np.float64)))
    for key in ("psnr", "ssim", "nmse"):
        assert summary["mean_zero_filled"][key] == pytest.approx(np.mean([m[key] for m in by_hand]), rel=1e-6)
    assert summary["mean_zero_filled"]["psnr"] != pytest.approx(summary["mean"]["psnr"])


def test_seed_changes_the_simulated_mask(tmp_path, tiny, capsys):
    make_volume(tmp_path / "v.h5", 1, seed=0)
    masks = []
    for seed in ("1", "2", "1"):
        save = tmp_path / f"o{len(masks)}"
        status, _, err = run_inproc(tiny, "--data", str(tmp_path / "v.h5"), "--slice", "0", "--seed", seed,
                                    "--mask_type", "uniform1d", "--save_dir", str(save), "--quiet", capsys=capsys)
        assert status == 0, err
        masks.append(np.load(save / ROOT / "input" / "v_s0_mask.npy"))
    assert not np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])
