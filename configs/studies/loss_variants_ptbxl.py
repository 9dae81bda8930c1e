"""The loss study on PTB-XL, CPU-sized: every registered loss pretrained on folds 1-8 and
evaluated on fold 10, as ``scripts/reproduce.sh ptbxl`` and ``configs/ptbxl_cpu.py`` do.

Prepare the data first, then run (``PTBXL_DIR``: the public 100 Hz release)::

    pclr prepare ptbxl --manual-dir $PTBXL_DIR --data-dir data/tfds --config cpu
    pclr study run --config configs/studies/loss_variants_ptbxl.py --workdir runs/study_ptbxl

The base is ``configs/ptbxl_cpu.py`` (900 steps of 64 pairs, augmentations on; single-ECG
patients paired with an augmented copy). Probes: sex, age, AF, LVH and the five diagnostic
superclasses, fitted on 100, 1,000 and all fold 1-8 ECGs, scored on fold 10; patient retrieval
among fold 10's ECGs.
"""

from configs import loss_variants, ptbxl_cpu
from configs.studies.common import study_config


def get_config():
    c = study_config(
        "loss_variants_ptbxl",
        "Every registered contrastive loss at its recommended hyper-parameters, pretrained on "
        "PTB-XL folds 1-8 (configs/ptbxl_cpu.py) and evaluated on fold 10.",
    )
    c.base = ptbxl_cpu.get_config()
    c.evaluation.tasks = (*c.base.eval.probe_tasks, "superclass:multilabel")
    c.evaluation.label_sizes = (100, 1000, "all")
    c.evaluation.fit_split = c.base.data.train_split
    c.evaluation.test_split = c.base.eval.final_split
    c.arms = tuple(
        (name, {"loss.name": name, "loss.hparams": dict(hparams)})
        for name, hparams in loss_variants.RECOMMENDED_HPARAMS.items()
    )
    c.reference_arm = "ntxent"
    return c
