"""The embedded default job: PCLR pretraining on the synthetic multi-patient data set.

The data is ``pclr_synthetic/cpu_realistic_stable_conditions``, whose difficulty is calibrated
against PTB-XL (``docs/data.md``): patient retrieval is neither trivial nor saturated, so methods
can be told apart, LVH is not separable by voltage alone, and an encoder trained on it transfers
to real ECGs at least as well as one trained on the original ``cpu_default`` (the calibration's
fourth round, ``docs/data.md``). Sized so that preparing the data, training and evaluating
finish within about 10 minutes on an idle 2-core CPU, and so that the model visibly learns (the
loss falls; patient retrieval rises far above chance and above a randomly initialised encoder).
The encoder is the released architecture at a quarter of its input length (1,024 samples = 10 s
at 102.4 Hz) and half its widths; everything else is PCLR's recipe.

Override any field on the command line, e.g. ``--config.total_steps=500``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "pclr_synthetic"
    c.data.config = "cpu_realistic_stable_conditions"
    c.data.data_dir = "data/tfds"  # relative paths are resolved against the current directory
    c.data.prepare_if_missing = True  # only for generated data sets; real ones need `pclr prepare`
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.test_split = "test"

    c.model = ml_collections.ConfigDict()
    c.model.n_leads = 12
    c.model.n_samples = 1024
    c.model.stem_filters = 32
    c.model.unit_samples = (256, 64, 16, 4)
    c.model.unit_filters = (64, 96, 128, 160)
    c.model.kernel_size = 16
    c.model.activation = "relu"
    c.model.dropout = 0.0
    c.model.stem_batch_norm = True
    c.model.head_sizes = (160, 160)
    c.model.dtype = "float32"
    c.model.bn_momentum = 0.99
    c.model.bn_epsilon = 1e-3
    # Formulations only (same parameters and values): "auto" picks the fastest measured one per
    # backend, CPU and dtype; "xla" / "flax" are the plain lax.conv / nn.BatchNorm; conv_impl
    # "onednn" needs the cpu-onednn extra (docs/speed_cpu.md).
    c.model.conv_impl = "auto"
    c.model.norm_impl = "auto"
    # Encoder conv precision: "default" (the backend's: TF32 on recent NVIDIA GPUs, as in
    # TensorFlow; full float32 on CPUs), "high" or "highest". Losses and head: always "highest".
    c.model.precision = "default"

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "ntxent"
    c.loss.hparams = ml_collections.ConfigDict({"temperature": 0.1})

    c.batch_pairs = 64  # global batch: 64 pairs = 128 ECGs
    c.total_steps = 360
    c.sync_batch_norm = True
    c.grad_cache_microbatch = ml_collections.config_dict.placeholder(int)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.lr_scaling = "none"
    c.optimizer.base_batch_pairs = 256
    c.optimizer.warmup_steps = 20
    c.optimizer.schedule = "cosine"
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip_norm = 1.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-7

    c.loader = ml_collections.ConfigDict()
    c.loader.single_ecg_patients = "exclude"
    # grain worker processes: 0 reads in the training process; -1 by the rule of
    # pclr_jax/training/feed_choice.py (0 on CPUs, one per core beyond 2 on GPUs and TPUs).
    c.loader.worker_count = -1
    c.loader.read_threads = 2  # grain threads reading batches ahead, per process
    c.loader.prefetch_batches = 2  # host batches grain buffers ahead, per process
    # Global batches placed on the devices ahead of the step, in views_dtype (float16: as stored,
    # half the bytes; cast to float32 on the devices). docs/training_step.md, "Feeding the step".
    c.loader.device_prefetch = 2
    c.loader.views_dtype = "float16"
    # "host": the grain loader; "device_resident": the training split held in accelerator memory,
    # pairs gathered there (no augmentations). docs/scaling.md, "Feeding the accelerators".
    # "auto": device-resident on a GPU/TPU where the split fits, else host
    # (pclr_jax/training/feed_choice.py).
    c.loader.mode = "auto"
    # Device-resident split: "replicated" (each device gathers its own rows, no communication),
    # "sharded" (rows exchanged in (owner, destination) buckets, O(local batch) per device) or
    # "auto" (replicated when the split takes at most a quarter of a device's memory).
    c.loader.device_resident_placement = "auto"
    c.loader.augment = ml_collections.ConfigDict()  # empty: no augmentation (PCLR's default)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 60
    c.checkpoint.keep = 2
    c.checkpoint.keep_best = True

    # Metrics, the agreed stop signal (SIGTERM/SIGINT) and the non-finite-loss check are read back
    # from the devices every log_every_steps steps and at checkpoints, never in between; a signal
    # stops the run at the next such read.
    c.log_every_steps = 10

    c.distributed = ml_collections.ConfigDict()
    # When a process of a multi-host job dies, the others stop after this many seconds without
    # its heartbeat, print one line (the lost process, the last complete checkpoint, how to
    # resume) and exit with status 75 (EX_TEMPFAIL) for a launcher to restart on.
    c.distributed.lost_process_timeout_s = 60.0

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 120
    c.eval.batch_size = 256
    c.eval.probe_tasks = ("sex:binary", "af:binary", "lvh:binary", "age:regression")
    c.eval.final_split = "test"
    return c
