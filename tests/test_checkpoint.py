"""Checkpoints in the released layout (the original's checkpoint_95.pth) and the EMA helper."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from configs.ve import fastmri_knee_320_ncsnpp_continuous as knee_config
from models import utils as mutils
from models.checkpoint import CheckpointError, load_checkpoint, load_model_weights, save_checkpoint
from models.ema import ExponentialMovingAverage


def _tiny_config(nf: int = 8, num_scales: int = 10):
    """Knee config structure, CPU-sized."""
    config = knee_config.get_config()
    config.data.image_size = 16
    config.model.nf = nf
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (8,)
    config.model.num_scales = num_scales
    return config


def _trained_state(seed: int = 0, num_scales: int = 10):
    """A model, its EMA (shadows differ from the weights) and an Adam state after one step."""
    torch.manual_seed(seed)
    model = mutils.create_model(_tiny_config(num_scales=num_scales))
    ema = ExponentialMovingAverage(model.parameters(), decay=0.999)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8)
    x = torch.rand(2, 1, 16, 16)
    loss = model(x, torch.tensor([1.0, 5.0])).square().mean()
    loss.backward()
    optimizer.step()
    ema.update(model.parameters())
    with torch.no_grad():
        for s in ema.shadow_params:
            s.add_(0.01)  # make shadows clearly different from the raw weights
    return model, ema, optimizer


def _released_layout(model, ema, optimizer, step: int = 7) -> dict:
    """What the original wrote: DataParallel 'module.' keys, numpy lr in the optimizer state."""
    opt_state = optimizer.state_dict()
    for group in opt_state["param_groups"]:
        group["lr"] = np.float64(group["lr"])
    return {"model": {f"module.{k}": v for k, v in model.state_dict().items()},
            "ema": ema.state_dict(), "optimizer": opt_state, "step": step}


def _fresh_model(seed: int = 123, **kw):
    torch.manual_seed(seed)
    return mutils.create_model(_tiny_config(**kw))


def test_released_layout_round_trip(tmp_path):
    src, ema, optimizer = _trained_state()
    path = tmp_path / "checkpoint_95.pth"
    torch.save(_released_layout(src, ema, optimizer), path)

    model = _fresh_model()
    assert not torch.equal(model.all_modules[0].W, src.all_modules[0].W)
    ema2 = ExponentialMovingAverage(model.parameters(), decay=0.5)
    opt2 = torch.optim.Adam(model.parameters(), lr=1.0)
    out = load_checkpoint(path, model, ema=ema2, optimizer=opt2, copy_ema_to_model=False)

    assert out["step"] == 7
    for (k, v), (k2, v2) in zip(src.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k  # strict load of the stripped keys
    assert ema2.decay == 0.999 and ema2.num_updates == 1
    assert all(torch.equal(a, b) for a, b in zip(ema2.shadow_params, ema.shadow_params))
    group = opt2.state_dict()["param_groups"][0]
    assert group["lr"] == 2e-4 and type(group["lr"]) is float
    assert len(opt2.state_dict()["state"]) == len(optimizer.state_dict()["state"])

    # Default: with an EMA given, the EMA weights are also copied into the model.
    model3 = _fresh_model(seed=5)
    load_checkpoint(path, model3, ema=ExponentialMovingAverage(model3.parameters(), 0.999))
    trainable = [p for p in model3.parameters() if p.requires_grad]
    assert all(torch.equal(p, s) for p, s in zip(trainable, ema.shadow_params))


def test_load_model_weights_uses_ema_and_loads_frozen_W(tmp_path):
    """Fix: the frozen Fourier W comes from the file (the original kept a fresh random draw)."""
    src, ema, optimizer = _trained_state()
    path = tmp_path / "released.pth"
    torch.save(_released_layout(src, ema, optimizer), path)
    model = _fresh_model()
    out = load_model_weights(path, model)
    assert out["step"] == 7
    assert torch.equal(model.all_modules[0].W, src.all_modules[0].W)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(ema.shadow_params)
    assert all(torch.equal(p, s) for p, s in zip(trainable, ema.shadow_params))
    assert not torch.equal(trainable[0], [p for p in src.parameters() if p.requires_grad][0])


def test_save_checkpoint_writes_loadable_layout(tmp_path):
    src, ema, optimizer = _trained_state()
    path = tmp_path / "sub" / "checkpoint.pth"
    save_checkpoint(path, {"model": src, "ema": ema, "optimizer": optimizer, "step": 3})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "ema", "optimizer", "step"} and raw["step"] == 3
    assert list(raw["model"]) == list(src.state_dict())
    assert set(raw["ema"]) == {"decay", "num_updates", "shadow_params"}
    assert isinstance(raw["ema"]["shadow_params"], list)
    assert os.listdir(path.parent) == ["checkpoint.pth"]  # no temporary left behind
    model = _fresh_model()
    assert load_checkpoint(path, model)["step"] == 3
    assert torch.equal(model.all_modules[1].weight, src.all_modules[1].weight)


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    """A failing save leaves neither a partial target nor a temporary file; an old file survives."""
    src, ema, optimizer = _trained_state()
    path = tmp_path / "checkpoint.pth"
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": src, "step": 1})
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(torch, "save", real_save)
    save_checkpoint(path, {"model": src, "step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": src, "step": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_wrong_config_raises_checkpoint_error(tmp_path):
    src, ema, optimizer = _trained_state()
    path = tmp_path / "ckpt.pth"
    torch.save(_released_layout(src, ema, optimizer), path)
    wider = _fresh_model(nf=16)
    with pytest.raises(CheckpointError, match="does not match") as info:
        load_checkpoint(path, wider)
    msg = str(info.value)
    assert "\n" not in msg and "all_modules." in msg and "shape" in msg and len(msg) < 1000
    deeper_config = _tiny_config()
    deeper_config.model.num_res_blocks = 2
    deeper = mutils.create_model(deeper_config)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model_weights(path, deeper)
    # EMA of the wrong length.
    bad = _released_layout(src, ema, optimizer)
    bad["ema"]["shadow_params"] = bad["ema"]["shadow_params"][:-1]
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="EMA"):
        load_model_weights(path, _fresh_model())


def test_non_checkpoint_files_raise_checkpoint_error(tmp_path):
    model = _fresh_model()
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.txt is not a readable checkpoint \(a text file"):
        load_checkpoint(text, model)
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(CheckpointError, match="not a score-MRI checkpoint"):
        load_model_weights(lst, model)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth", model)
    assert issubclass(CheckpointError, ValueError)


class _Exploit:
    """A pickle that would run code under weights_only=False."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused_naming_the_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="weights_only") as info:
        load_checkpoint(path, _fresh_model())
    msg = str(info.value)
    assert f"the global {os.system.__module__}.system (os.system)" in msg and "\n" not in msg
    # a class that is not on the allow-list is named too
    import argparse
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError, match=r"needs the global argparse\.Namespace"):
        load_model_weights(path, _fresh_model())


def test_damaged_files_say_why_they_are_unreadable(tmp_path):
    """Truncated, empty, text and other non-checkpoint files: 'is not a readable checkpoint (reason)'."""
    src, ema, optimizer = _trained_state()
    good = tmp_path / "good.pth"
    torch.save(_released_layout(src, ema, optimizer), good)
    data = good.read_bytes()
    legacy = tmp_path / "legacy.pth"
    torch.save(_released_layout(src, ema, optimizer), legacy, _use_new_zipfile_serialization=False)
    cases = {
        "empty.pth": (b"", "the file is empty"),
        "readme.pth": (b"model weights: see the link in the README\n", "a text file"),
        "lfs.pth": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", "Git LFS pointer"),
        "page.pth": (b"<!DOCTYPE html>\n<html><body>Dropbox</body></html>\n", "HTML page"),
        "noise.pth": (bytes(range(7, 250)) * 3, "neither a zip archive nor a pickle"),
        "legacy_cut.pth": (legacy.read_bytes()[: len(legacy.read_bytes()) // 2], "truncated"),
    }
    for frac in (0.05, 0.5, 0.99):
        cases[f"cut{frac}.pth"] = (data[: int(len(data) * frac)], "truncated or damaged")
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for load in (load_checkpoint, load_model_weights):
            with pytest.raises(CheckpointError) as info:
                load(path, _fresh_model())
            msg = str(info.value)
            assert msg.startswith(f"{path} is not a readable checkpoint (") and reason in msg, (name, msg)
            assert "\n" not in msg and "does not match" not in msg and len(msg) < 300
    load_model_weights(legacy, _fresh_model())  # the legacy (non-zip) format itself loads


def test_numpy1_scalar_names_are_accepted(tmp_path):
    """Checkpoints pickled under numpy 1.x name 'numpy.core.multiarray.scalar' for the numpy lr."""
    src, ema, optimizer = _trained_state()
    path = tmp_path / "np2.pth"
    torch.save(_released_layout(src, ema, optimizer), path)
    old = tmp_path / "np1.pth"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("data.pkl") and b"numpy._core.multiarray" in data:
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(name, data)
    model = _fresh_model()
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    load_checkpoint(old, model, optimizer=opt)
    assert opt.param_groups[0]["lr"] == 2e-4


def test_sigmas_of_another_length_are_rebuilt(tmp_path):
    src, ema, optimizer = _trained_state(num_scales=2000)
    path = tmp_path / "ckpt.pth"
    torch.save(_released_layout(src, ema, optimizer), path)
    model = _fresh_model(num_scales=10)
    load_model_weights(path, model)
    assert model.sigmas.shape == (10,) and model.sigmas.dtype == torch.float64
    torch.testing.assert_close(model.sigmas, torch.tensor(mutils.get_sigmas(_tiny_config())))
    assert torch.equal(model.all_modules[0].W, src.all_modules[0].W)


def test_bare_state_dict_is_accepted(tmp_path):
    src, _, _ = _trained_state()
    path = tmp_path / "weights.pth"
    torch.save(src.state_dict(), path)
    model = _fresh_model()
    load_model_weights(path, model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 src.state_dict().values()))


# --------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------

def test_ema_update_rule_and_state():
    p = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    ema = ExponentialMovingAverage([frozen, p], decay=0.999)
    assert len(ema.shadow_params) == 1  # frozen parameters are not tracked
    expected = torch.zeros(3)
    for n in range(1, 4):
        with torch.no_grad():
            p.add_(1.0)
        ema.update([frozen, p])
        decay = min(0.999, (1 + n) / (10 + n))
        expected = expected - (1 - decay) * (expected - p.detach())
        torch.testing.assert_close(ema.shadow_params[0], expected)
    state = ema.state_dict()
    assert state["num_updates"] == 3 and state["decay"] == 0.999

    no_count = ExponentialMovingAverage([p], decay=0.9, use_num_updates=False)
    before = no_count.shadow_params[0].clone()
    with torch.no_grad():
        p.add_(10.0)
    no_count.update([p])
    torch.testing.assert_close(no_count.shadow_params[0], before + 0.1 * (p.detach() - before))
    with pytest.raises(ValueError):
        ExponentialMovingAverage([p], decay=1.5)


def test_ema_copy_store_restore_and_load():
    p = torch.nn.Parameter(torch.arange(4.0))
    ema = ExponentialMovingAverage([p], decay=0.9)
    ema.shadow_params[0].fill_(7.0)
    ema.store([p])
    ema.copy_to([p])
    assert torch.equal(p.detach(), torch.full((4,), 7.0))
    ema.restore([p])
    assert torch.equal(p.detach(), torch.arange(4.0))
    other = ExponentialMovingAverage([p], decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and torch.equal(other.shadow_params[0], ema.shadow_params[0])
    assert other.shadow_params[0] is not ema.shadow_params[0]
    with pytest.raises(ValueError):
        other.load_state_dict({"decay": 0.9, "num_updates": 0, "shadow_params": [torch.zeros(5)]})
