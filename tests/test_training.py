"""Training: the VE denoising score-matching loss (Chung & Ye 2022), optimisation, exact resume, kill -9,
NaN handling, torchrun with two processes, evaluation and the command line."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

from score_mri.training import losses  # noqa: E402
from score_mri.training import run_lib  # noqa: E402
import sde_lib  # noqa: E402
from configs.ve.fastmri_knee_320_ncsnpp_continuous import get_config as knee_config  # noqa: E402
from models import utils as mutils  # noqa: E402
from models.ema import ExponentialMovingAverage  # noqa: E402

# Tiny NCSN++ derived from the knee config (attention only at the bottleneck), 16x16 slices.
TINY = {
    "model.nf": 8, "model.ch_mult": (1, 2), "model.num_res_blocks": 1, "model.attn_resolutions": (),
    "model.num_scales": 10, "data.image_size": 16, "data.dataset": "npy_folder",
    "training.batch_size": 2, "training.n_iters": 6, "training.log_freq": 1, "training.eval_freq": 0,
    "training.snapshot_freq": 1000, "training.snapshot_freq_for_preemption": 3, "training.snapshot_minutes": 60.0,
    "training.snapshot_sampling": False, "eval.enable_sampling": False, "optim.warmup": 0, "optim.lr": 2e-3,
}

CONFIG_FILE = '''
from configs.ve.fastmri_knee_320_ncsnpp_continuous import get_config as _knee

def get_config():
    c = _knee()
    for key, value in {overrides!r}.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c
'''


def tiny_config(root: Path, **overrides):
    """The knee config shrunk to TINY (plus overrides, keys 'section.field'), data under ``root``."""
    c = knee_config()
    for key, value in {**TINY, "data.root": str(root), **overrides}.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def write_config(path: Path, root: Path, **overrides) -> Path:
    """A config file for main_fastmri.py with the same content as ``tiny_config``."""
    path.write_text(CONFIG_FILE.format(overrides={**TINY, "data.root": str(root), **overrides}))
    return path


def make_slices(root: Path, n: int = 12, size: int = 18, nan: bool = False, overflow: bool = False) -> Path:
    """Smooth synthetic magnitude slices saved as .npy (``overflow``: finite, but 2x - 1 overflows float32)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2) + 0.05 * rng.standard_normal((size, size))
        if nan:
            img[0, 0] = np.nan
        if overflow:
            img[size // 2, size // 2] = 3e38  # the centre pixel: inside every crop
        np.save(root / f"slice_{i:03d}.npy", img.astype(np.float32))
    return root


def subprocess_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def model_digest(state_dict: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build(config):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mutils.create_model(config, device=torch.device("cpu"))
    sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
    return model, sde


# ----------------------------------------------------------------------------------------------
# Loss and optimisation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduce_mean", [False, True])
def test_loss_is_denoising_score_matching(tmp_path, reduce_mean):
    """loss = mean_b 0.5*sum((sigma*s(x+sigma z, sigma) + z)^2) (or the pixel mean), t ~ U(1e-5, 1)."""
    config = tiny_config(tmp_path)
    model, sde = build(config)
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    loss_fn = losses.get_sde_loss_fn(sde, train=False, reduce_mean=reduce_mean)
    loss = loss_fn(model, x, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)  # same draws, same order: t then z
    t = torch.rand(3, generator=g) * (1 - 1e-5) + 1e-5
    z = torch.randn(x.shape, generator=g)
    sigma = config.model.sigma_min * (config.model.sigma_max / config.model.sigma_min) ** t
    with torch.no_grad():
        score = model(x + sigma[:, None, None, None] * z, sigma)
    r = (sigma[:, None, None, None] * score + z) ** 2
    expected = r.mean(dim=(1, 2, 3)) if reduce_mean else 0.5 * r.sum(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-5)


class SigmaSpy(torch.nn.Module):
    """Records the noise levels it is called with; returns zeros (the loss is then 0.5 * sum z^2)."""

    def __init__(self):
        super().__init__()
        self.sigmas = []

    def forward(self, x, sigma):
        self.sigmas.append(sigma.detach().clone())
        return torch.zeros_like(x)


def test_loss_draws_t_uniform_from_eps_to_1(tmp_path):
    """The noise levels the network sees are sigma(t), t = eps + (1 - eps) u with u the generator's U(0, 1)."""
    config = tiny_config(tmp_path)
    _, sde = build(config)
    spy = SigmaSpy()
    x = torch.rand(4096, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    losses.get_sde_loss_fn(sde, train=False, reduce_mean=False)(spy, x, torch.Generator().manual_seed(3))
    u = torch.rand(4096, generator=torch.Generator().manual_seed(3))  # the loss draws t first
    eps = losses.EPS_T
    assert eps == 1e-5
    t = torch.log(spy.sigmas[0] / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    torch.testing.assert_close(t, u * (1 - eps) + eps, rtol=0, atol=2e-6)  # a shift by eps is 1e-5
    assert eps - 1e-6 <= t.min().item() and t.max().item() <= 1 + 1e-6


def test_unsupported_objectives_raise(tmp_path):
    _, sde = build(tiny_config(tmp_path))
    with pytest.raises(NotImplementedError, match="likelihood"):
        losses.get_sde_loss_fn(sde, train=True, likelihood_weighting=True)
    with pytest.raises(NotImplementedError, match="continuous"):
        losses.get_sde_loss_fn(sde, train=True, continuous=False)


def test_warmup_uses_step_before_increment_and_clips(tmp_path):
    """lr = lr0 * min(step / warmup, 1); gradients clipped to grad_clip; Adam(beta1, 0.999, eps, wd)."""
    config = tiny_config(tmp_path, **{"optim.lr": 0.5, "optim.warmup": 10, "optim.grad_clip": 1.0,
                                      "optim.weight_decay": 3})
    w = torch.nn.Parameter(torch.zeros(4))
    opt = losses.get_optimizer(config, [w])
    g = opt.param_groups[0]
    assert g["betas"] == (config.optim.beta1, 0.999) and g["eps"] == config.optim.eps and g["weight_decay"] == 3
    optimize_fn = losses.optimization_manager(config)
    for step, lr in [(0, 0.0), (3, 0.15), (10, 0.5), (25, 0.5)]:
        w.grad = torch.full((4,), 100.0)
        norm = optimize_fn(opt, [w], step=step)
        assert g["lr"] == pytest.approx(lr)
        assert norm.item() == pytest.approx(200.0)  # the norm before clipping
        assert w.grad.norm().item() == pytest.approx(1.0, rel=1e-4)  # clipped in place
    config.optim.grad_clip = -1.0  # no clipping
    w.grad = torch.full((4,), 100.0)
    losses.optimization_manager(config)(opt, [w], step=20)
    assert w.grad.norm().item() == pytest.approx(200.0)


def test_step_fn_updates_step_ema_and_eval_leaves_weights(tmp_path):
    config = tiny_config(tmp_path)
    model, sde = build(config)
    ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    state = dict(model=model, ema=ema, optimizer=losses.get_optimizer(config, model.parameters()), step=0,
                 generator=torch.Generator().manual_seed(0))
    step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    step_fn(state, x)
    assert state["step"] == 1 and ema.num_updates == 1
    assert not torch.equal(before[0], trainable[0])
    # EMA decay min(0.999, (1+n)/(10+n)) = 2/11 after one update
    for p0, p1, s in zip(before, trainable, ema.shadow_params):
        torch.testing.assert_close(s, p0 - (1 - 2 / 11) * (p0 - p1.detach()))
    eval_fn = losses.get_step_fn(sde, train=False)
    after = [p.detach().clone() for p in model.parameters()]
    eval_fn(state, x)
    assert all(torch.equal(a, p) for a, p in zip(after, model.parameters()))
    assert state["step"] == 1


def test_loss_falls_on_fixed_batch(tmp_path):
    """~30 Adam steps on one batch lower the loss measured with fixed (t, z) draws."""
    config = tiny_config(tmp_path, **{"optim.lr": 3e-3})
    model, sde = build(config)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    state = dict(model=model, ema=ExponentialMovingAverage(model.parameters(), decay=0.999),
                 optimizer=losses.get_optimizer(config, model.parameters()), step=0,
                 generator=torch.Generator().manual_seed(0))
    step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config))
    probe = losses.get_sde_loss_fn(sde, train=False, reduce_mean=False)

    def fixed_loss() -> float:
        with torch.no_grad():
            return sum(probe(model, x, torch.Generator().manual_seed(s)).item() for s in range(4)) / 4

    start = fixed_loss()
    for _ in range(30):
        step_fn(state, x)
    end = fixed_loss()
    assert end < 0.7 * start, (start, end)


def test_bf16_step_is_finite(tmp_path):
    config = tiny_config(tmp_path)
    model, sde = build(config)
    state = dict(model=model, ema=ExponentialMovingAverage(model.parameters(), decay=0.999),
                 optimizer=losses.get_optimizer(config, model.parameters()), step=0,
                 generator=torch.Generator().manual_seed(0))
    step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config), bf16=True)
    loss = step_fn(state, torch.rand(2, 1, 16, 16))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# run_lib.train: snapshots, resume, NaN
# ----------------------------------------------------------------------------------------------

def test_snapshots_resume_and_uninterrupted_run_agree(tmp_path, monkeypatch):
    data = make_slices(tmp_path / "data")
    saved = []
    real_save = run_lib.save_checkpoint

    def recording_save(path, state):
        saved.append((Path(path).relative_to(Path(path).parents[1]).as_posix(), int(state["step"])))
        real_save(path, state)

    monkeypatch.setattr(run_lib, "save_checkpoint", recording_save)
    full = run_lib.train(tiny_config(data, **{"training.n_iters": 7, "training.snapshot_freq": 4}), tmp_path / "a")
    # meta every 3 steps and at the end; numbered every snapshot_freq=4 steps (checkpoint_<step // 4>)
    assert saved == [("checkpoints-meta/checkpoint.pth", 3), ("checkpoints/checkpoint_1.pth", 4),
                     ("checkpoints-meta/checkpoint.pth", 6), ("checkpoints-meta/checkpoint.pth", 7)]
    ckpt = torch.load(tmp_path / "a/checkpoints-meta/checkpoint.pth", weights_only=True)
    assert ckpt["step"] == 7 and set(ckpt) >= {"model", "ema", "optimizer", "step", "rng"}
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert len(ckpt["ema"]["shadow_params"]) == sum(p.requires_grad for p in full["model"].parameters())

    # interrupted after the snapshot at step 3, then resumed to step 7
    run_lib.train(tiny_config(data, **{"training.n_iters": 3}), tmp_path / "b")
    resumed = run_lib.train(tiny_config(data, **{"training.n_iters": 7}), tmp_path / "b")
    assert resumed["step"] == 7
    assert model_digest(resumed["model"].state_dict()) == model_digest(full["model"].state_dict())
    assert all(torch.equal(a, b) for a, b in zip(resumed["ema"].shadow_params, full["ema"].shadow_params))
    assert resumed["ema"].num_updates == full["ema"].num_updates == 7
    log = (tmp_path / "b/stdout.txt").read_text()
    assert "resumed from" in log and "step: 7, training_loss:" in log and "steps/s:" in log


def test_failed_resume_lists_numbered_checkpoints(tmp_path):
    """An unreadable snapshot: the error names the numbered checkpoints, and resuming from one of them works."""
    data = make_slices(tmp_path / "data")
    workdir = tmp_path / "r"
    run_lib.train(tiny_config(data, **{"training.n_iters": 2, "training.snapshot_freq": 1}), workdir)
    meta = workdir / "checkpoints-meta" / "checkpoint.pth"
    meta.write_bytes(b"not a checkpoint")
    config = tiny_config(data, **{"training.n_iters": 3, "training.snapshot_freq": 1})
    with pytest.raises(run_lib.UserError) as info:
        run_lib.train(config, workdir)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(meta) in message
    assert "checkpoints/checkpoint_1.pth, checkpoints/checkpoint_2.pth" in message
    (workdir / "checkpoints" / "checkpoint_1.pth").replace(meta)     # fall back as the message says
    (workdir / "checkpoints" / "checkpoint_2.pth").unlink()
    assert run_lib.train(config, workdir)["step"] == 3
    assert f"resumed from {meta} at step 1" in (workdir / "stdout.txt").read_text()
    meta.write_bytes(b"")
    for p in (workdir / "checkpoints").glob("*.pth"):
        p.unlink()
    with pytest.raises(run_lib.UserError, match="no numbered checkpoint to fall back to"):
        run_lib.train(config, workdir)


def test_wall_clock_snapshots(tmp_path, monkeypatch):
    """snapshot_minutes=0: a preemption snapshot after every step even when the step period is large."""
    data = make_slices(tmp_path / "data")
    steps = []
    real_save = run_lib.save_checkpoint
    monkeypatch.setattr(run_lib, "save_checkpoint", lambda p, s: (steps.append(int(s["step"])), real_save(p, s)))
    run_lib.train(tiny_config(data, **{"training.n_iters": 3, "training.snapshot_freq_for_preemption": 100,
                                       "training.snapshot_minutes": 0.0}), tmp_path / "w")
    assert steps == [1, 2, 3]


def test_nan_loss_stops_without_checkpoint(tmp_path):
    from score_mri.training import datasets
    with pytest.raises(datasets.DatasetError, match=r"slice_\d{3}\.npy contains NaN or Inf"):  # data: named
        run_lib.train(tiny_config(make_slices(tmp_path / "nan_data", nan=True)), tmp_path / "nan_data_run")
    data = make_slices(tmp_path / "data", overflow=True)  # finite data (as stored), non-finite loss
    workdir = tmp_path / "nan"
    with pytest.raises(losses.NonFiniteLossError, match="non-finite loss"):
        run_lib.train(tiny_config(data), workdir)
    assert not any(p.is_file() for p in workdir.rglob("*.pth"))
    assert "non-finite loss" in (workdir / "stdout.txt").read_text()


def test_evaluate_writes_held_out_loss_and_samples(tmp_path):
    data = make_slices(tmp_path / "data", n=20)
    config = tiny_config(data, **{"training.n_iters": 2, "eval.enable_sampling": True})
    config.eval.grid_samples = 4
    run_lib.train(config, tmp_path / "e")
    from score_mri.training import eval_lib
    results = eval_lib.evaluate(config, tmp_path / "e", "ev")
    assert len(results) == 1 and results[0]["step"] == 2 and results[0]["n_slices"] == 2  # slices 0 and 10
    assert np.isfinite(results[0]["eval_loss"])
    assert (tmp_path / "e/ev/eval_results.json").is_file()
    x = np.load(tmp_path / "e/ev/checkpoint/sample.npy")
    assert x.shape == (4, 1, 16, 16) and np.isfinite(x).all()
    assert (tmp_path / "e/ev/checkpoint/sample.png").is_file()


# ----------------------------------------------------------------------------------------------
# Processes: command line, kill -9, torchrun
# ----------------------------------------------------------------------------------------------

def run_cli(args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "main_fastmri.py"), *map(str, args)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def test_cli_user_errors_exit_2(tmp_path):
    cfg = write_config(tmp_path / "cfg.py", tmp_path / "missing")
    r = run_cli(["--config", cfg, "--workdir", tmp_path / "wd"])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: data folder {tmp_path / 'missing'} does not exist "
                                             "(config.data.root)"]
    (tmp_path / "empty").mkdir()
    r = run_cli(["--config", cfg, "--workdir", tmp_path / "wd", f"--config.data.root={tmp_path / 'empty'}",
                 "--config.training.no_such_field=1"])
    assert r.returncode == 2 and "no field 'no_such_field'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["--config", tmp_path / "nope.py", "--workdir", tmp_path / "wd"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope.py" in r.stderr


def test_kill9_loses_only_steps_since_last_snapshot(tmp_path):
    """A SIGKILLed run restarts from its last snapshot and ends exactly where an uninterrupted run ends."""
    data = make_slices(tmp_path / "data")
    cfg = write_config(tmp_path / "cfg.py", data, **{"training.n_iters": 100000})
    workdir = tmp_path / "killed"
    meta = workdir / "checkpoints-meta" / "checkpoint.pth"
    proc = subprocess.Popen([sys.executable, str(REPO / "main_fastmri.py"), "--config", str(cfg),
                             "--workdir", str(workdir)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            log = (workdir / "stdout.txt").read_text() if (workdir / "stdout.txt").exists() else ""
            if meta.exists() and "step: 7," in log:
                break
            assert proc.poll() is None, "training process exited early"
            time.sleep(0.05)
        else:
            pytest.fail("no snapshot within 90 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last_logged = max(int(line.split(",")[0].split()[1]) for line in (workdir / "stdout.txt").read_text().splitlines()
                      if line.startswith("step: "))
    snap = torch.load(meta, weights_only=True)["step"]
    assert snap % 3 == 0 and 0 <= last_logged - snap <= 3  # only the steps after the last snapshot are lost
    # a kill mid-write may leave a hidden temporary file, never a partial checkpoint.pth (it loaded above)

    target = snap + 2
    r = run_cli(["--config", cfg, "--workdir", workdir, f"--config.training.n_iters={target}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from {meta} at step {snap}" in (workdir / "stdout.txt").read_text()
    assert not list(meta.parent.glob("*.tmp"))  # the resumed run's saves removed any leftover temporary file
    r = run_cli(["--config", cfg, "--workdir", tmp_path / "straight", f"--config.training.n_iters={target}"])
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(meta, weights_only=True)
    b = torch.load(tmp_path / "straight/checkpoints-meta/checkpoint.pth", weights_only=True)
    assert a["step"] == b["step"] == target
    assert model_digest(a["model"]) == model_digest(b["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]))


WORKER = '''
import hashlib, json, os, sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {here!r})
import torch
from score_mri.training import run_lib
from test_training import tiny_config
from pathlib import Path
real_save = run_lib.save_checkpoint


def late_save(path, state):  # rank 0 writes slowly, as on a loaded machine: the other rank is done first
    time.sleep(0.5)
    real_save(path, state)
    Path({workdir!r}, "saved_at").write_text(repr(time.time()))


run_lib.save_checkpoint = late_save
out = run_lib.train(tiny_config(Path({data!r}), **{{"training.n_iters": 4, "training.log_freq": 2}}), {workdir!r})
left = time.time()
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in out["model"].parameters())).hexdigest()
tasks = "/proc/self/task"
threads = [open(os.path.join(tasks, t, "comm")).read().strip() for t in os.listdir(tasks)] if os.path.isdir(tasks) else []
with open(os.path.join({workdir!r}, "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump({{"sha": h, "left": left, "threads": threads}}, f)
'''


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    data = make_slices(tmp_path / "data", n=12)
    workdir = tmp_path / "ddp"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), here=str(Path(__file__).parent), data=str(data),
                                    workdir=str(workdir)))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((workdir / f"rank{k}.json").read_text()) for k in (0, 1)]
    h0, h1 = ranks[0]["sha"], ranks[1]["sha"]
    assert h0 == h1
    # teardown: no rank leaves before rank 0's last write, and the process group's threads are gone when
    # train() returns (they used to outlive it and race with the other rank at interpreter exit: SIGABRT)
    assert ranks[1]["left"] >= float((workdir / "saved_at").read_text())
    for k in (0, 1):
        assert not [t for t in ranks[k]["threads"] if "gloo" in t], ranks[k]["threads"]
    ckpt = torch.load(workdir / "checkpoints-meta/checkpoint.pth", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["rng"]["world_size"] == 2
    # both ranks' random states are in the snapshot, and they differ (seed + rank)
    g0, g1 = ckpt["rng"]["generators"]
    assert not torch.equal(g0, g1)
    # the snapshot holds the ranks' weights (state_dict order = parameters() order plus the sigmas buffer)
    h = hashlib.sha256(b"".join(v.numpy().tobytes() for k, v in ckpt["model"].items() if k != "sigmas")).hexdigest()
    assert h == h0
    log = (workdir / "stdout.txt").read_text()
    assert log.count("step: 2, training_loss") == 1 and log.count("step: 4, training_loss") == 1  # rank 0 only
    assert "x2" in log


def test_resumed_run_follows_the_ema_rate_of_its_config(tmp_path):
    """A finishing run with a longer EMA (``--config.model.ema_rate``) uses it, not the snapshot's rate."""
    data = make_slices(tmp_path / "data")
    run_lib.train(tiny_config(data, **{"training.n_iters": 2, "model.ema_rate": 0.9}), tmp_path / "w")
    resumed = run_lib.train(tiny_config(data, **{"training.n_iters": 3, "model.ema_rate": 0.99}), tmp_path / "w")
    assert resumed["ema"].decay == 0.99
    ckpt = torch.load(tmp_path / "w/checkpoints-meta/checkpoint.pth", weights_only=True)
    assert ckpt["ema"]["decay"] == 0.99
    assert "EMA rate 0.9 of the snapshot -> 0.99 of the config" in (tmp_path / "w/stdout.txt").read_text()


def test_resume_logs_how_the_config_changed(tmp_path):
    """Each start records its config in <workdir>/config.json; a resume logs every setting that changed."""
    import json

    data = make_slices(tmp_path / "data")
    run_lib.train(tiny_config(data, **{"training.n_iters": 2, "optim.lr": 2e-4}), tmp_path / "w")
    first = json.loads((tmp_path / "w/config.json").read_text())
    assert first["optim.lr"] == 2e-4 and first["training.n_iters"] == 2 and first["data.root"] == str(data)
    run_lib.train(tiny_config(data, **{"training.n_iters": 3, "optim.lr": 1e-4}), tmp_path / "w")
    log = (tmp_path / "w/stdout.txt").read_text()
    changed = [line for line in log.splitlines() if line.startswith("config differs from the previous start")]
    assert changed == ["config differs from the previous start: optim.lr: 0.0002 -> 0.0001",
                       "config differs from the previous start: training.n_iters: 2 -> 3"]
    assert json.loads((tmp_path / "w/config.json").read_text())["optim.lr"] == 1e-4


def test_config_changes_lists_added_removed_and_changed_keys():
    """Key-level difference of two flattened configs, sorted; equal records give none."""
    from score_mri.training.state import config_changes, flat_config

    old = flat_config({"a": {"x": 1, "y": (1, 2)}, "b": "s"})
    assert old == {"a.x": 1, "a.y": [1, 2], "b": "s"}
    assert config_changes(old, dict(old)) == []
    assert config_changes(old, {"a.x": 2, "a.y": [1, 2], "c": None}) == [
        "a.x: 1 -> 2", "b: 's' -> (unset)", "c: (unset) -> None"]
