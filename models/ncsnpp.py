"""NCSN++ score network (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H),
the prior of Chung & Ye 2022, as in score_sde_pytorch / score-MRI ``models/ncsnpp.py``.

Every layer lives in one flat ``all_modules`` ModuleList, in the original construction order, so the
state_dict keys of the released checkpoint load strictly. ``forward`` walks the list with a running
index ``m_idx`` in exactly the order the modules were appended. As in the original, the parameter-free
pyramid resamplers of ``progressive='output_skip'`` / ``progressive_input='input_skip'`` are the
attributes ``pyramid_upsample`` / ``pyramid_downsample``, outside the list.

Fix over the original: whether a level has attention is decided once, from ``config.data.image_size``
(level i has width image_size // 2**i), and stored in ``attn_levels``. The original tests the run-time
width ``h.shape[-1] in attn_resolutions``, which desynchronises ``m_idx`` (and crashes) for inputs
whose pyramid passes a width in ``attn_resolutions`` that the config's pyramid does not (e.g. 64 or
128 inputs to the 320 model). For inputs of the configured size both rules coincide.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from . import layers, layerspp, normalization, utils

ResnetBlockDDPM = layerspp.ResnetBlockDDPMpp
ResnetBlockBigGAN = layerspp.ResnetBlockBigGANpp
Combine = layerspp.Combine
conv3x3 = layerspp.conv3x3
conv1x1 = layerspp.conv1x1
get_act = layers.get_act
get_normalization = normalization.get_normalization
default_initializer = layers.default_init

_SQRT2 = math.sqrt(2.0)


def _autocast_on(device_type: str) -> bool:
    """Whether an autocast region is active for ``device_type`` (torch >= 2.4 and older spellings)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _float32(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` in float32, also inside a bf16 autocast region.

    The network's ends (noise embedding, input convolution, output head) stay in full precision when it
    runs in bf16 (``--precision bf16``): rounding the image as it enters or the score as it leaves costs
    ~1.5-2 dB PSNR, the bf16 body alone none (benchmarks/results/speed_round2.md). They are <1 % of the
    arithmetic.
    """
    device_type = args[0].device.type
    if not _autocast_on(device_type):
        return module(*args)
    with torch.autocast(device_type, enabled=False):
        return module(*(a.float() if a.is_floating_point() else a for a in args))


@utils.register_model(name="ncsnpp")
class NCSNpp(nn.Module):
    """NCSN++ U-Net s_theta(x, sigma) for the VE-SDE (continuous, Gaussian Fourier sigma embedding)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.act = act = get_act(config)
        # SMLD noise levels (float64, descending); used only by the 'positional' embedding.
        self.register_buffer("sigmas", torch.tensor(utils.get_sigmas(config)))

        self.nf = nf = config.model.nf
        ch_mult = tuple(config.model.ch_mult)
        self.num_res_blocks = num_res_blocks = config.model.num_res_blocks
        self.attn_resolutions = attn_resolutions = tuple(config.model.attn_resolutions)
        dropout = config.model.dropout
        resamp_with_conv = config.model.resamp_with_conv
        self.num_resolutions = num_resolutions = len(ch_mult)
        self.all_resolutions = all_resolutions = [config.data.image_size // (2 ** i)
                                                  for i in range(num_resolutions)]
        # Fix: attention per level decided here, from the configured image size.
        self.attn_levels = [res in attn_resolutions for res in all_resolutions]

        self.conditional = conditional = config.model.conditional  # noise-conditional
        self.centered = config.data.centered
        self.scale_by_sigma = config.model.scale_by_sigma
        fir = config.model.fir
        fir_kernel = tuple(config.model.fir_kernel)
        self.skip_rescale = skip_rescale = config.model.skip_rescale
        self.resblock_type = resblock_type = config.model.resblock_type.lower()
        self.progressive = progressive = config.model.progressive.lower()
        self.progressive_input = progressive_input = config.model.progressive_input.lower()
        self.embedding_type = embedding_type = config.model.embedding_type.lower()
        init_scale = config.model.init_scale
        if progressive not in ("none", "output_skip", "residual"):
            raise ValueError(f"progressive {progressive!r} is not a valid name")
        if progressive_input not in ("none", "input_skip", "residual"):
            raise ValueError(f"progressive_input {progressive_input!r} is not a valid name")
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"embedding type {embedding_type} unknown.")
        combine_method = config.model.progressive_combine.lower()
        combiner = functools.partial(Combine, method=combine_method)

        modules = []
        # --- noise-level embedding -------------------------------------------------------------
        if embedding_type == "fourier":
            if not config.training.continuous:
                raise ValueError("Fourier features are only used for continuous training.")
            modules.append(layerspp.GaussianFourierProjection(
                embedding_size=nf, scale=config.model.fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf

        if conditional:
            modules.append(nn.Linear(embed_dim, nf * 4))
            modules[-1].weight.data = default_initializer()(modules[-1].weight.shape)
            nn.init.zeros_(modules[-1].bias)
            modules.append(nn.Linear(nf * 4, nf * 4))
            modules[-1].weight.data = default_initializer()(modules[-1].weight.shape)
            nn.init.zeros_(modules[-1].bias)

        AttnBlock = functools.partial(layerspp.AttnBlockpp, init_scale=init_scale,
                                      skip_rescale=skip_rescale)
        Upsample = functools.partial(layerspp.Upsample, with_conv=resamp_with_conv, fir=fir,
                                     fir_kernel=fir_kernel)
        channels = config.data.num_channels
        # The parameter-free pyramid resamplers of output_skip / input_skip are attributes outside
        # ``all_modules``, as in score_sde_pytorch (``self.pyramid_upsample`` /
        # ``self.pyramid_downsample``), so the indices of the modules after them match the original's.
        if progressive == "output_skip":
            self.pyramid_upsample = layerspp.Upsample(in_ch=channels, fir=fir, fir_kernel=fir_kernel,
                                                      with_conv=False)
        elif progressive == "residual":
            pyramid_upsample = functools.partial(layerspp.Upsample, fir=fir, fir_kernel=fir_kernel,
                                                 with_conv=True)
        Downsample = functools.partial(layerspp.Downsample, with_conv=resamp_with_conv, fir=fir,
                                       fir_kernel=fir_kernel)
        if progressive_input == "input_skip":
            self.pyramid_downsample = layerspp.Downsample(in_ch=channels, fir=fir, fir_kernel=fir_kernel,
                                                          with_conv=False)
        elif progressive_input == "residual":
            pyramid_downsample = functools.partial(layerspp.Downsample, fir=fir,
                                                   fir_kernel=fir_kernel, with_conv=True)

        if resblock_type == "ddpm":
            ResnetBlock = functools.partial(ResnetBlockDDPM, act=act, dropout=dropout,
                                            init_scale=init_scale, skip_rescale=skip_rescale,
                                            temb_dim=nf * 4)
        elif resblock_type == "biggan":
            ResnetBlock = functools.partial(ResnetBlockBigGAN, act=act, dropout=dropout, fir=fir,
                                            fir_kernel=fir_kernel, init_scale=init_scale,
                                            skip_rescale=skip_rescale, temb_dim=nf * 4)
        else:
            raise ValueError(f"resblock type {resblock_type} unrecognized.")

        # --- downsampling path -------------------------------------------------------------------
        if progressive_input != "none":
            input_pyramid_ch = channels

        modules.append(conv3x3(channels, nf))
        hs_c = [nf]

        in_ch = nf
        for i_level in range(num_resolutions):
            for i_block in range(num_res_blocks):
                out_ch = nf * ch_mult[i_level]
                modules.append(ResnetBlock(in_ch=in_ch, out_ch=out_ch))
                in_ch = out_ch
                if self.attn_levels[i_level]:
                    modules.append(AttnBlock(channels=in_ch))
                hs_c.append(in_ch)

            if i_level != num_resolutions - 1:
                if resblock_type == "ddpm":
                    modules.append(Downsample(in_ch=in_ch))
                else:
                    modules.append(ResnetBlock(down=True, in_ch=in_ch))

                if progressive_input == "input_skip":
                    modules.append(combiner(dim1=input_pyramid_ch, dim2=in_ch))
                    if combine_method == "cat":
                        in_ch *= 2
                elif progressive_input == "residual":
                    modules.append(pyramid_downsample(in_ch=input_pyramid_ch, out_ch=in_ch))
                    input_pyramid_ch = in_ch

                hs_c.append(in_ch)

        # --- bottleneck -------------------------------------------------------------------------
        in_ch = hs_c[-1]
        modules.append(ResnetBlock(in_ch=in_ch))
        modules.append(AttnBlock(channels=in_ch))
        modules.append(ResnetBlock(in_ch=in_ch))

        # --- upsampling path --------------------------------------------------------------------
        pyramid_ch = 0
        for i_level in reversed(range(num_resolutions)):
            for i_block in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[i_level]
                modules.append(ResnetBlock(in_ch=in_ch + hs_c.pop(), out_ch=out_ch))
                in_ch = out_ch

            if self.attn_levels[i_level]:
                modules.append(AttnBlock(channels=in_ch))

            if progressive != "none":
                if i_level == num_resolutions - 1:
                    if progressive == "output_skip":
                        modules.append(nn.GroupNorm(num_groups=min(in_ch // 4, 32),
                                                    num_channels=in_ch, eps=1e-6))
                        modules.append(conv3x3(in_ch, channels, init_scale=init_scale))
                        pyramid_ch = channels
                    else:  # residual
                        modules.append(nn.GroupNorm(num_groups=min(in_ch // 4, 32),
                                                    num_channels=in_ch, eps=1e-6))
                        modules.append(conv3x3(in_ch, in_ch, bias=True))
                        pyramid_ch = in_ch
                else:
                    if progressive == "output_skip":
                        modules.append(nn.GroupNorm(num_groups=min(in_ch // 4, 32),
                                                    num_channels=in_ch, eps=1e-6))
                        modules.append(conv3x3(in_ch, channels, bias=True, init_scale=init_scale))
                        pyramid_ch = channels
                    else:  # residual
                        modules.append(pyramid_upsample(in_ch=pyramid_ch, out_ch=in_ch))
                        pyramid_ch = in_ch

            if i_level != 0:
                if resblock_type == "ddpm":
                    modules.append(Upsample(in_ch=in_ch))
                else:
                    modules.append(ResnetBlock(in_ch=in_ch, up=True))

        assert not hs_c

        # --- output head ------------------------------------------------------------------------
        if progressive != "output_skip":
            modules.append(nn.GroupNorm(num_groups=min(in_ch // 4, 32), num_channels=in_ch,
                                        eps=1e-6))
            modules.append(conv3x3(in_ch, channels, init_scale=init_scale))

        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor) -> torch.Tensor:
        """Score s_theta(x, sigma): x [B, C, H, W] in [0, 1] (un-centered), time_cond = sigma [B].

        With the 'positional' embedding, time_cond is an integer index into ``sigmas``.
        H and W must be divisible by 2**(len(ch_mult) - 1).
        """
        factor = 2 ** (self.num_resolutions - 1)
        if x.ndim != 4 or x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"NCSN++ expects [B, C, H, W] inputs with H and W divisible by {factor}, "
                             f"got shape {tuple(x.shape)}")
        modules = self.all_modules
        m_idx = 0
        # --- noise-level embedding -------------------------------------------------------------
        if self.embedding_type == "fourier":
            used_sigmas = time_cond
            temb = _float32(modules[m_idx], torch.log(used_sigmas))  # [B, 2*nf]
            m_idx += 1
        else:
            timesteps = time_cond
            used_sigmas = self.sigmas[time_cond.long()]
            temb = layers.get_timestep_embedding(timesteps, self.nf)

        if self.conditional:
            temb = _float32(modules[m_idx], temb)
            m_idx += 1
            temb = _float32(modules[m_idx], self.act(temb))  # [B, 4*nf]
            m_idx += 1
        else:
            temb = None

        if not self.centered:
            # Input data in [0, 1] -> [-1, 1].
            x = 2 * x - 1.0

        # --- downsampling path -------------------------------------------------------------------
        input_pyramid = None
        if self.progressive_input != "none":
            input_pyramid = x

        hs = [_float32(modules[m_idx], x)]
        m_idx += 1
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = modules[m_idx](hs[-1], temb)
                m_idx += 1
                if self.attn_levels[i_level]:
                    h = modules[m_idx](h)
                    m_idx += 1
                hs.append(h)

            if i_level != self.num_resolutions - 1:
                if self.resblock_type == "ddpm":
                    h = modules[m_idx](hs[-1])
                else:
                    h = modules[m_idx](hs[-1], temb)
                m_idx += 1

                if self.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = modules[m_idx](input_pyramid, h)
                    m_idx += 1
                elif self.progressive_input == "residual":
                    input_pyramid = modules[m_idx](input_pyramid)
                    m_idx += 1
                    if self.skip_rescale:
                        input_pyramid = (input_pyramid + h) / _SQRT2
                    else:
                        input_pyramid = input_pyramid + h
                    h = input_pyramid

                hs.append(h)

        # --- bottleneck -------------------------------------------------------------------------
        h = hs[-1]
        h = modules[m_idx](h, temb)
        m_idx += 1
        h = modules[m_idx](h)
        m_idx += 1
        h = modules[m_idx](h, temb)
        m_idx += 1

        # --- upsampling path --------------------------------------------------------------------
        pyramid = None
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = modules[m_idx](torch.cat([h, hs.pop()], dim=1), temb)
                m_idx += 1

            if self.attn_levels[i_level]:
                h = modules[m_idx](h)
                m_idx += 1

            if self.progressive != "none":
                if i_level == self.num_resolutions - 1:
                    pyramid = self.act(_float32(modules[m_idx], h))
                    m_idx += 1
                    pyramid = _float32(modules[m_idx], pyramid)
                    m_idx += 1
                elif self.progressive == "output_skip":
                    pyramid = self.pyramid_upsample(pyramid)
                    pyramid_h = self.act(_float32(modules[m_idx], h))
                    m_idx += 1
                    pyramid_h = _float32(modules[m_idx], pyramid_h)
                    m_idx += 1
                    pyramid = pyramid + pyramid_h
                else:  # residual
                    pyramid = modules[m_idx](pyramid)
                    m_idx += 1
                    if self.skip_rescale:
                        pyramid = (pyramid + h) / _SQRT2
                    else:
                        pyramid = pyramid + h
                    h = pyramid

            if i_level != 0:
                if self.resblock_type == "ddpm":
                    h = modules[m_idx](h)
                else:
                    h = modules[m_idx](h, temb)
                m_idx += 1

        assert not hs

        # --- output head ------------------------------------------------------------------------
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self.act(_float32(modules[m_idx], h))
            m_idx += 1
            h = _float32(modules[m_idx], h)
            m_idx += 1

        assert m_idx == len(modules)
        if self.scale_by_sigma:
            used_sigmas = used_sigmas.reshape((x.shape[0], *([1] * len(x.shape[1:]))))
            h = h / used_sigmas  # s(x, sigma) = net(x, sigma) / sigma
        return h
