"""The embedded default prior: a CPU-sized NCSN++ (VE-SDE, continuous) trained on the open Colin27 T1 brain.

Same architecture family as the knee model (Fourier features, BigGAN resblocks, FIR resampling, residual
input pyramid, skip_rescale, scale_by_sigma) with nf 32 and 2 res blocks per level (2.5 M parameters).
Fully convolutional: attention only at the bottleneck, so a model trained on 96x96 crops reconstructs
any image whose side is divisible by 8 (e.g. 320x320). Training data: Debian ``mricron-data``
(``ch2.nii.gz`` and its skull-stripped ``ch2bet.nii.gz``, BSD-3), sliced along all three axes, with scale/rotation/
gamma/flip augmentation. See ``weights/colin27_ncsnpp_small.md`` for the training record.
"""
import ml_collections

from configs.ve import fastmri_knee_320_ncsnpp_continuous as knee


def get_config() -> ml_collections.ConfigDict:
    """Small CPU prior on Colin27; sampling defaults tuned for a ~2 minute CPU reconstruction."""
    config = knee.get_config()

    training = config.training
    training.batch_size = 8
    training.n_iters = 200000           # stopped by hand; see the weights card for the steps actually run
    training.snapshot_freq = 500
    training.snapshot_freq_for_preemption = 100
    training.snapshot_minutes = 3.0
    training.log_freq = 10
    training.eval_freq = 0
    training.snapshot_sampling = False  # unconditional samples at 96x96 would cost an hour of CPU each
    training.bf16 = True                # bf16 autocast: ~3x faster Adam steps on this AVX512-BF16 CPU

    data = config.data
    data.dataset = 'nifti'
    data.root = ''
    data.nifti_files = ('/usr/share/mricron/templates/ch2.nii.gz',      # with skull
                        '/usr/share/mricron/templates/ch2bet.nii.gz')   # skull-stripped
    data.slice_axes = (0, 1, 2)
    data.image_size = 96                # training crop; the model runs at any size divisible by 8
    data.resize = 'none'
    data.normalize = 'minmax'           # every slice to [0, 1] by its own min/max (NIfTI intensities are arbitrary)
    data.random_flip = True
    data.vertical_flip = False
    data.random_crop = True
    data.rot_deg = 10.0
    data.scale_range = (1.1, 2.2)       # 1 mm Colin27 -> 0.45-0.9 mm pixels (a brain filling 320x320 is ~0.55 mm)
    data.gamma_range = (0.7, 1.4)
    data.eval_every = 10

    model = config.model
    model.nf = 32
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = ()         # bottleneck attention only (as the knee model at 320)
    model.ema_rate = 0.995

    optim = config.optim
    optim.lr = 3e-4
    optim.warmup = 100

    # Few-step default (issue 10; benchmarks/quality_vs_calls.py): the decomposed diffusion predictor (DDS,
    # Chung et al. 2024: Tweedie estimate, data consistency on it, deterministic DDIM re-noising), no
    # corrector, N=20 -> 20 network calls for Algorithm 2 (sample 001: 45.6 dB, the ancestral N=50 default
    # of issue 6: 43.4 dB with 100 calls). The paper's setting stays one flag away:
    # --predictor reverse_diffusion --corrector langevin --N 2000.
    sampling = config.sampling
    sampling.predictor = 'dds'
    sampling.corrector = 'none'
    sampling.snr = 0.16                 # Langevin SNR when a corrector is chosen
    sampling.N = 20
    sampling.N_multi_coil = 20          # the knee config has 500 for Algorithms 4-5; few steps here too
    sampling.eta = 0.0                  # dds re-noising: 0 deterministic (DDIM), 1 ancestral
    sampling.grid = 've'                # geometric sigmas; 'edm' for Karras et al.'s rho = 7 grid
    # Start at t = 1. --fast --t0 0.65 gains on incoherent masks (held-out gaussian1d x4: real +0.2 dB, complex
    # +1.2, 8 coils +0.3) but loses on equispaced x8 masks (single-coil sample 001: up to -3 dB) and with the
    # SENSE sampler on noisy data (-0.5 dB at noise 0.02; so SENSE takes it only on clean data, t0_clean below):
    # README, "Few-step mode".
    sampling.fast = False               # --t0 < 1 starts from the noised zero-filled image
    sampling.t0 = 0.65                  # the start of --fast (measured: README, "Few-step mode")
    sampling.m_steps = 5                # hybrid: SENSE step every 5 of the 20 iterations
    sampling.cg_iters = 5               # SENSE sampler: CG iterations of the data consistency
    sampling.gamma = 0.1                # SENSE sampler: weight of the prior's estimate in the CG system
    sampling.noise_weighting = 'auto'   # SENSE sampler: weight at least (noise / sigma)^2, noise from outer k-space
    sampling.t0_clean = 0.65            # SENSE sampler, 'auto': start here when the data are clean (README)
    sampling.finish_after_dc = True     # complex sampler, phase_ri: smoothing and clip again after the final DC
    sampling.complex_mode = 'phase_ri'  # complex data: demodulated image, both parts (benchmarks/complex_multicoil.py)
    sampling.residual_smoothing = 1.0   # phase_ri: Gaussian std (pixels) on the final imaginary residual
    sampling.nonnegative = True         # real-valued (Algorithm 2): final image clipped at 0, then data consistency
    sampling.flip_cycle = True          # network calls cycle through the four flips (README, "Flip cycling": real +0.1 dB)
    return config
