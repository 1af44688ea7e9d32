"""Default hyper-parameters shared by the score-MRI configs (score-MRI's ``default_lsun_configs``).

Data only: no devices, no absolute paths (``data.root`` is empty; pass the data folder at run time).
"""
import ml_collections


def get_default_configs() -> ml_collections.ConfigDict:
    """Training/sampling/eval/data/model/optim defaults of the original score-MRI code."""
    config = ml_collections.ConfigDict()

    # training
    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 1
    training.epochs = 1000
    training.snapshot_freq = 50000
    training.log_freq = 25
    training.eval_freq = 100
    # additional checkpoints for preemption, within an epoch
    training.snapshot_freq_for_preemption = 5000
    # produce samples at each snapshot
    training.snapshot_sampling = True
    training.likelihood_weighting = False
    training.continuous = True
    training.reduce_mean = False
    # this project's trainer (run_lib.train): step budget (0 = `epochs` passes over the slices),
    # wall-clock preemption snapshots, optional bf16 autocast
    training.n_iters = 0
    training.snapshot_minutes = 3.0
    training.bf16 = False

    # sampling
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.075

    # evaluation
    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 50
    evaluate.end_ckpt = 96
    evaluate.batch_size = 8
    evaluate.enable_sampling = True
    evaluate.num_samples = 50000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = 'test'

    # data
    config.data = data = ml_collections.ConfigDict()
    data.dataset = 'LSUN'
    data.root = ''
    data.image_size = 256
    data.random_flip = True
    data.uniform_dequantization = False
    data.centered = False
    data.num_channels = 1

    # model
    config.model = model = ml_collections.ConfigDict()
    model.sigma_max = 378
    model.sigma_min = 0.01
    model.num_scales = 2000
    model.beta_min = 0.1
    model.beta_max = 20.
    model.dropout = 0.
    model.embedding_type = 'fourier'

    # optimization
    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0
    optim.optimizer = 'Adam'
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.

    config.seed = 42
    return config
