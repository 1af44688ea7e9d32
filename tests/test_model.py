"""NCSN++: structure of the full knee model, small-model golden vectors, attention fix, score wrapper."""
from __future__ import annotations

import copy

import ml_collections
import numpy as np
import pytest
import torch

import models
from configs.ve import fastmri_knee_320_ncsnpp_continuous as knee_config
from models import layerspp
from models import utils as mutils
from models.ncsnpp import NCSNpp


def _golden_model(golden) -> NCSNpp:
    """The small golden model with its stored (re-randomised) weights, in eval mode."""
    model = mutils.create_model(ml_collections.ConfigDict(golden["config"]))
    model.load_state_dict(golden["state_dict"], strict=True)
    return model.eval()


def _small_config(**model_overrides) -> ml_collections.ConfigDict:
    """The knee config scaled down to a CPU-sized network (structure of the full model)."""
    config = knee_config.get_config()
    config.data.image_size = 32
    config.model.nf = 8
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 1
    config.model.num_scales = 10
    for k, v in model_overrides.items():
        setattr(config.model, k, v)
    return config


# --------------------------------------------------------------------------------------------------
# Full knee model: keys, shapes, dtypes, counts (built on the meta device: no memory, no forward)
# --------------------------------------------------------------------------------------------------

def test_full_model_state_dict_matches_reference(reference):
    ref = reference("ncsnpp_fastmri_knee_320_keys.json")
    with torch.device("meta"):
        model = mutils.create_model(knee_config.get_config())
    state = model.state_dict()
    mine = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in ref["model_state_dict"]]
    assert mine == theirs  # names, order, shapes and dtypes
    assert len(state) == ref["num_state_dict_entries"] == 522
    assert len(model.all_modules) == ref["num_all_modules"] == 54
    assert sum(p.numel() for p in model.parameters()) == ref["param_count_total"] == 61_433_601
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == ref["param_count_trainable"]
    assert [n for n, _ in trainable] == [e["param_name"] for e in ref["ema_state_dict"]["shadow_params"]]
    assert model.all_modules[0].W.requires_grad is False
    classes = [type(m).__name__ for m in model.all_modules]
    assert classes == [e["class"] for e in ref["all_modules_index_map"]]
    # Only the bottleneck attends at 320 (widths 320/160/80/40 never equal 16).
    assert model.attn_levels == [False, False, False, False]
    assert [i for i, c in enumerate(classes) if c == "AttnBlockpp"] == [27]


def test_sigmas_buffer_is_float64_geometric():
    config = knee_config.get_config()
    sigmas = torch.tensor(mutils.get_sigmas(config))
    assert sigmas.dtype == torch.float64 and sigmas.shape == (2000,)
    assert sigmas[0].item() == pytest.approx(378.0, rel=1e-14)
    assert sigmas[-1].item() == pytest.approx(0.01, rel=1e-14)
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 378) ** (1 / 1999)))


def test_knee_config_values(reference):
    """The full config equals the original's (golden config) except the small-model fields."""
    ours = knee_config.get_config().to_dict()
    golden = copy.deepcopy(reference("ncsnpp_small_golden.pt")["config"])
    for k in ("nf", "ch_mult", "num_res_blocks"):
        golden["model"].pop(k)
        ours["model"].pop(k)
    golden["data"].pop("image_size")
    assert ours["data"].pop("image_size") == 320
    golden["data"].pop("root")  # an absolute path on the authors' machine
    assert ours["data"].pop("root") == ""

    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return list(v) if isinstance(v, (list, tuple)) else v

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", norm(v)

    ours, golden = dict(flat(ours)), dict(flat(golden))
    # Deliberate departures from the original config file, each toward the original's behaviour:
    # its scripts sample with snr 0.16 (hard-coded, the file's 0.075 is never used), and its knee
    # loader never flips (random_flip is read only by the TF loaders of other datasets).
    departures = {"sampling.snr": (0.075, 0.16), "data.random_flip": (True, False)}
    for k, (theirs, mine) in departures.items():
        assert (golden.pop(k), ours.pop(k)) == (theirs, mine), k
    # Every other original field is present with the original value (this project may add fields).
    assert {k: ours.get(k, "<missing>") for k in golden} == golden
    config = knee_config.get_config()
    assert (config.model.nf, tuple(config.model.ch_mult), config.model.num_res_blocks) \
        == (128, (1, 2, 2, 2), 4)
    assert "device" not in config


def test_knee_config_samples_with_the_papers_settings():
    """The knee config holds what the original inference scripts hard-code (Chung & Ye 2022, Sec. 4)."""
    s = knee_config.get_config().sampling
    assert (s.predictor, s.corrector, s.n_steps_each) == ("reverse_diffusion", "langevin", 1)
    assert s.snr == 0.16  # not the 0.075 inherited from default_lsun_configs
    assert (s.N, s.N_multi_coil, s.m_steps) == (2000, 500, 50)  # real/single-coil, multi-coil, SENSE period
    assert s.get("fast", False) is False  # from t = 1, as the original


# --------------------------------------------------------------------------------------------------
# Small golden model (original code, re-randomised weights)
# --------------------------------------------------------------------------------------------------

def test_small_golden_structure(reference):
    golden = reference("ncsnpp_small_golden.pt")
    model = _golden_model(golden)
    assert sum(p.numel() for p in model.parameters()) == golden["param_count"]
    attn = [f"all_modules.{i}" for i, m in enumerate(model.all_modules)
            if isinstance(m, layerspp.AttnBlockpp)]
    assert attn == golden["attn_block_modules"]
    groups = {n: m.num_groups for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == golden["group_norm_num_groups"]


def test_small_golden_output_float32(reference):
    golden = reference("ncsnpp_small_golden.pt")
    model = _golden_model(golden)
    captured = {}
    hooks = [model.all_modules[i].register_forward_hook(
        lambda mod, inp, out, name=name: captured.__setitem__(name, out.detach()))
        # 'temb_dense1' of the reference is the noise embedding leaving the dense stack
        # (output of all_modules.2, [B, 4 * nf]); it equals that tensor exactly.
        for i, name in ((0, "fourier_embedding"), (2, "temb_dense1"), (3, "conv_in"))]
    with torch.no_grad():
        out = model(golden["x"], golden["sigmas"])
    for h in hooks:
        h.remove()
    ref = golden["output"]
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    for name, value in golden["intermediates_f32"].items():
        torch.testing.assert_close(captured[name], value, rtol=0,
                                   atol=1e-5 * max(value.abs().max().item(), 1.0))


def test_small_golden_output_float64(reference):
    """Fix: model.double() runs (FIR kernels follow the dtype) and matches to ~1e-10."""
    golden = reference("ncsnpp_small_golden.pt")
    model = _golden_model(golden).double()
    with torch.no_grad():
        out = model(golden["x_f64"], golden["sigmas_f64"])
    ref = golden["output_f64"]
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


def test_small_golden_score(reference):
    """score(x, t) = model(x, sigma(t)) for the continuous VE-SDE (sigma_min 0.01, sigma_max 378)."""
    import sde_lib

    golden = reference("ncsnpp_small_golden.pt")
    model = _golden_model(golden)
    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=378, N=2000)
    score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
    with torch.no_grad():
        score = score_fn(golden["x"], golden["t"])
    ref = golden["score"]
    torch.testing.assert_close(score, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    model = model.double()
    with torch.no_grad():
        score64 = score_fn(golden["x_f64"], golden["t_f64"])
    ref64 = golden["score_f64"]
    torch.testing.assert_close(score64, ref64, rtol=1e-10, atol=1e-10 * ref64.abs().max().item())
    assert model.training is False


# --------------------------------------------------------------------------------------------------
# Attention decided from the config (fix)
# --------------------------------------------------------------------------------------------------

def test_attention_levels_from_config(reference):
    golden = reference("ncsnpp_small_golden.pt")
    model = _golden_model(golden)
    assert model.attn_levels == [False, True, False]  # image_size 32: widths 32/16/8, attn at 16
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for size in (64, 128):
        # The original decides attention from the run-time width and crashes here.
        x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            out = model(x, torch.tensor([1.0]))
        assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 34, 32), torch.tensor([1.0]))


def test_knee_structure_runs_on_inputs_passing_width_16():
    """The 320-structured model (attention only at the bottleneck) runs at 64x64 and 80x80."""
    config = knee_config.get_config()
    config.model.nf = 8
    config.model.num_res_blocks = 1
    config.model.num_scales = 10
    model = mutils.create_model(config).eval()
    assert model.attn_levels == [False] * 4
    for size in (64, 80):
        x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            out = model(x, torch.tensor([3.0]))
        assert out.shape == x.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# output_skip / input_skip: the original's module indices (checkpoint keys)
# --------------------------------------------------------------------------------------------------

# Parameter names of each module class, in registration order (score_sde_pytorch models/layerspp.py).
_RES = ("GroupNorm_0.weight", "GroupNorm_0.bias", "Conv_0.weight", "Conv_0.bias", "Dense_0.weight",
        "Dense_0.bias", "GroupNorm_1.weight", "GroupNorm_1.bias", "Conv_1.weight", "Conv_1.bias")
_RES_SKIP = _RES + ("Conv_2.weight", "Conv_2.bias")  # in_ch != out_ch, up or down: 1x1 skip conv
_ATTN = ("GroupNorm_0.weight", "GroupNorm_0.bias") + tuple(f"NIN_{i}.{p}" for i in range(4) for p in "Wb")
_WB = ("weight", "bias")

# Written from a reading of score_sde_pytorch models/ncsnpp.py (NCSNpp.__init__, the same in score-MRI)
# for nf 8, ch_mult (1, 2), 1 res block, image 16, attention at 8, BigGAN blocks, progressive
# 'output_skip', progressive_input 'input_skip', combine 'sum'. The original keeps the parameter-free
# pyramid resamplers in self.pyramid_upsample / self.pyramid_downsample, so they take no index here.
_SKIP_GOLDEN = [
    ("GaussianFourierProjection", ("W",)),          # 0
    ("Linear", _WB), ("Linear", _WB),                # 1-2 noise embedding
    ("Conv2d", _WB),                                 # 3 input conv 1 -> 8
    ("ResnetBlockBigGANpp", _RES),                   # 4 level 0 (16 px): 8 -> 8
    ("ResnetBlockBigGANpp", _RES_SKIP),              # 5 down
    ("Combine", ("Conv_0.weight", "Conv_0.bias")),   # 6 input_skip: pyramid (1 ch) into 8 ch
    ("ResnetBlockBigGANpp", _RES_SKIP),              # 7 level 1 (8 px): 8 -> 16
    ("AttnBlockpp", _ATTN),                          # 8
    ("ResnetBlockBigGANpp", _RES), ("AttnBlockpp", _ATTN), ("ResnetBlockBigGANpp", _RES),  # 9-11 bottleneck
    ("ResnetBlockBigGANpp", _RES_SKIP), ("ResnetBlockBigGANpp", _RES_SKIP),  # 12-13 up level 1: 32, 24 -> 16
    ("AttnBlockpp", _ATTN),                          # 14
    ("GroupNorm", _WB), ("Conv2d", _WB),             # 15-16 output_skip head of the coarsest level
    ("ResnetBlockBigGANpp", _RES_SKIP),              # 17 up
    ("ResnetBlockBigGANpp", _RES_SKIP), ("ResnetBlockBigGANpp", _RES_SKIP),  # 18-19 up level 0: 24, 16 -> 8
    ("GroupNorm", _WB), ("Conv2d", _WB),             # 20-21 output_skip head (no separate final head)
]


def test_output_skip_input_skip_keys_match_the_original():
    config = _small_config(progressive="output_skip", progressive_input="input_skip",
                           progressive_combine="sum", attn_resolutions=(8,))
    config.data.image_size = 16
    config.model.ch_mult = (1, 2)
    model = mutils.create_model(config).eval()
    assert [type(m).__name__ for m in model.all_modules] == [c for c, _ in _SKIP_GOLDEN]
    expected = ["sigmas"] + [f"all_modules.{i}.{k}" for i, (_, keys) in enumerate(_SKIP_GOLDEN) for k in keys]
    assert list(model.state_dict()) == expected
    state = model.state_dict()
    assert state["all_modules.6.Conv_0.weight"].shape == (8, 1, 1, 1)  # combine: 1x1 conv 1 -> 8 channels
    assert state["all_modules.16.weight"].shape == (1, 16, 3, 3)  # output_skip heads: 3x3 conv to 1 channel
    assert state["all_modules.21.weight"].shape == (1, 8, 3, 3)
    # the resamplers are stateless attributes; the model runs at its size and at twice its size
    assert not list(model.pyramid_upsample.state_dict()) and not list(model.pyramid_downsample.state_dict())
    for size in (16, 32):
        x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            out = model(x, torch.tensor([0.5, 20.0]))
        assert out.shape == x.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# Model behaviour and the registry / score wrapper
# --------------------------------------------------------------------------------------------------

def test_scale_by_sigma_and_centering():
    """Output is net(2x - 1, sigma) / sigma: doubling sigma's divisor is visible, centered skips 2x-1."""
    torch.manual_seed(0)
    config = _small_config()
    model = mutils.create_model(config).eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        out = model(x, sigma)
        model.scale_by_sigma = False
        raw = model(x, sigma)
        model.centered = True
        raw_centered = model(2 * x - 1, sigma)
    torch.testing.assert_close(out, raw / sigma[:, None, None, None])
    torch.testing.assert_close(raw_centered, raw)


def test_create_model_registry_and_device():
    config = _small_config()
    model = mutils.create_model(config)
    assert type(model) is NCSNpp and not isinstance(model, torch.nn.DataParallel)
    assert next(model.parameters()).device.type == "cpu"
    assert mutils.get_model("ncsnpp") is NCSNpp
    with pytest.raises(ValueError):
        mutils.get_model("no-such-model")
    with pytest.raises(ValueError):
        mutils.register_model(NCSNpp, name="ncsnpp")


class _LabelRecorder(torch.nn.Module):
    """Stand-in network that records the labels it is called with."""

    def __init__(self):
        super().__init__()
        self.labels = None

    def forward(self, x, labels):
        self.labels = labels
        return torch.zeros_like(x)


def test_get_score_fn_labels():
    import sde_lib

    sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=378, N=2000)
    net = _LabelRecorder()
    x = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    mutils.get_score_fn(sde, net, continuous=True)(x, t)
    torch.testing.assert_close(net.labels, 0.01 * (378 / 0.01) ** t)
    mutils.get_score_fn(sde, net, continuous=False)(x, t)
    # Discrete VE: index into the descending sigmas, t = T -> 0 (sigma_max), t = 0 -> N - 1.
    assert net.labels.tolist() == [1999, 1000, 0] and net.labels.dtype == torch.int64
    mutils.get_score_fn(sde, net, train=True, continuous=True)(x, t)
    assert net.training
    with pytest.raises(NotImplementedError):
        mutils.get_score_fn(object(), net)


def test_positional_embedding_uses_sigma_table():
    """Discrete ('positional') NCSN++: time_cond indexes the float64 sigmas buffer."""
    torch.manual_seed(0)
    config = _small_config(embedding_type="positional")
    model = mutils.create_model(config).eval()
    assert len(model.all_modules) == len(mutils.create_model(_small_config()).all_modules) - 1
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        out = model(x, torch.tensor([3]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_package_import_registers_ncsnpp():
    assert "ncsnpp" in mutils._MODELS and models.create_model is mutils.create_model


def test_initialisation_statistics():
    """DDPM init: conv weights ~ U(+-sqrt(3 * scale / fan_avg)); init_scale 0 -> ~1e-10; zero bias."""
    torch.manual_seed(0)
    conv = layerspp.conv3x3(64, 64)
    bound = np.sqrt(3.0 / (64 * 9))
    assert conv.weight.abs().max().item() <= bound and conv.weight.abs().max().item() > 0.9 * bound
    assert conv.bias.abs().max().item() == 0.0
    tiny = layerspp.conv3x3(64, 64, init_scale=0.0)
    assert 0 < tiny.weight.abs().max().item() <= np.sqrt(3e-10 / (64 * 9))
    gfp = layerspp.GaussianFourierProjection(embedding_size=4096, scale=16)
    assert gfp.W.std().item() == pytest.approx(16, rel=0.05) and not gfp.W.requires_grad
