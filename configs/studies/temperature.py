"""NT-Xent's temperature: PCLR's 0.1 against lower and higher values, at equal budget.

pclr study run --config configs/studies/temperature.py --workdir runs/study_temperature
"""

from configs.studies.common import study_config

TEMPERATURES = (0.05, 0.1, 0.2, 0.5)


def get_config():
    c = study_config(
        "temperature",
        "NT-Xent at several temperatures (PCLR uses 0.1), same data, steps and batch size.",
    )
    c.arms = tuple(
        (f"t{t:g}", {"loss.name": "ntxent", "loss.hparams": {"temperature": t}})
        for t in TEMPERATURES
    )
    c.reference_arm = "t0.1"
    return c
