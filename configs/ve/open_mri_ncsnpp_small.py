"""The embedded prior, second round: the Colin27 model warm-started and trained on every allowed open MR source.

Same network as ``colin27_ncsnpp_small`` (so its weights warm-start it); data from
``scripts/prepare_open_mri.py`` (Colin27 at two resolutions, dipy diffusion volumes, pydicom-data MR frames)
with wider augmentation: random monotone intensity curves (contrast), elastic warps, zoom 0.8-2.4,
rotation, flips and gamma.
"""
import ml_collections

from configs.ve import colin27_ncsnpp_small as colin27


def get_config() -> ml_collections.ConfigDict:
    """Open-data CPU prior: colin27_ncsnpp_small's model and sampling, more data and augmentation."""
    config = colin27.get_config()
    training = config.training
    training.init_from = 'weights/colin27_ncsnpp_small.pth'
    training.snapshot_freq = 1000
    training.snapshot_minutes = 4.0

    data = config.data
    data.dataset = 'npy_folder'
    data.root = 'runs/open_mri_slices'
    data.nifti_files = ()
    data.eval_every = 20
    data.rot_deg = 20.0
    data.scale_range = (0.8, 2.4)
    data.vertical_flip = True
    data.remap_prob = 0.5
    data.elastic_prob = 0.3
    data.elastic_alpha = 6.0
    data.elastic_sigma = 12.0
    # Rician noise augmentation (noise_prob 0.3, noise_max 0.03) was tried for the first 1,800 steps and
    # dropped: the prior learnt a noise floor, which the imaginary part of complex data then received
    # (complex PSNR 37.2 -> 24.3 dB on an ANTs slice, benchmarks/prior_quality.py).
    data.noise_prob = 0.0
    data.noise_max = 0.0

    config.optim.lr = 2e-4
    config.optim.warmup = 200
    return config
