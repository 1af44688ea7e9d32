"""NCSN++ on fastMRI knee (320 x 320 magnitude images) with the continuous VE-SDE (Chung & Ye 2022).

The full-size prior of the paper: 61,433,601 parameters, sigma in [0.01, 378], N = 2000.
"""
import ml_collections

from configs.default_lsun_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    """Config of the released score-MRI knee model (values of the original file)."""
    config = get_default_configs()

    # training
    training = config.training
    training.sde = 'vesde'
    training.continuous = True

    # sampling: the paper's settings, as the original inference scripts hard-code them (their snr 0.16
    # overrides the 0.075 this config inherits from default_lsun_configs; N 2000 for Algorithms 2-3
    # and 500 for the multi-coil Algorithms 4-5; a SENSE step every 50 iterations in Algorithm 5)
    sampling = config.sampling
    sampling.method = 'pc'
    sampling.predictor = 'reverse_diffusion'
    sampling.corrector = 'langevin'
    sampling.n_steps_each = 1
    sampling.snr = 0.16
    sampling.N = 2000
    sampling.N_multi_coil = 500
    sampling.m_steps = 50

    # data
    data = config.data
    data.dataset = 'fastmri_knee'
    data.root = ''  # the original points at a folder on the authors' machine
    data.image_size = 320
    data.is_multi = False
    data.is_complex = False
    # the original's knee loader serves each stored slice as it is: no min/max normalisation and no
    # flip (its config's random_flip=True is read only by the TF loaders of other datasets)
    data.normalize = 'none'
    data.random_flip = False

    # model
    model = config.model
    model.name = 'ncsnpp'
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.normalization = 'GroupNorm'
    model.nonlinearity = 'swish'
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = 'biggan'
    model.progressive = 'none'
    model.progressive_input = 'residual'
    model.progressive_combine = 'sum'
    model.attention_type = 'ddpm'
    model.init_scale = 0.
    model.fourier_scale = 16
    model.conv_size = 3

    return config
