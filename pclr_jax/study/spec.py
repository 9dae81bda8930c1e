"""A study: a base training config, arms (name + config overrides), seeds and an evaluation.

A study config file is a Python file with ``get_config([arg]) -> ml_collections.ConfigDict``
holding:

* ``name`` (str) and ``description`` (str, one paragraph for the report);
* ``base``: a complete training config (e.g. ``configs/default.py``'s ``get_config()``);
* ``arms``: a sequence of ``(arm_name, {"dotted.field": value, ...})``; a dict value replaces
  that whole sub-config (``"loss.hparams": {"temperature": 0.2}``);
* ``reference_arm``: the arm every other arm is compared with;
* ``seeds``: training seeds; seed ``s`` of every arm shares initialisation, batch order and
  probe label draws (the pairing of the statistics);
* ``evaluation``: ``tasks`` (``"column:kind"``), ``label_sizes`` (training ECGs per probe,
  ints and/or ``"all"``), ``repeats`` (label draws per size below "all"), ``fit_split`` and
  ``test_split`` (probes fit on the first, retrieval and scores on the second);
* ``primary_metrics`` (optional): the pre-registered primary family, metric names
  (``retrieval_top1``, ``sex_auroc@500``, ...). Fixed before any cell runs (a workdir's study
  cannot gain or change it later: ``runner.record_study`` refuses), it splits the comparisons
  into a primary family (these metrics x every arm but the reference) and a secondary,
  exploratory one (every other metric); the report corrects each family separately
  (``multiplicity``). Without it every comparison is one family.

Everything else a cell needs comes from the base config; ``cell_config`` applies an arm's
overrides and the seed. ``budget`` states what each arm spends, so the report can say when an
arm did not keep the reference's budget.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import json
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EVALUATION_FIELDS = ("tasks", "label_sizes", "repeats", "fit_split", "test_split")
# Study fields a config may leave out (``--set`` may add them).
OPTIONAL_FIELDS = ("primary_metrics",)


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A validated study (see the module docstring)."""

    name: str
    description: str
    base: ml_collections.ConfigDict
    arms: tuple[Arm, ...]
    reference_arm: str
    seeds: tuple[int, ...]
    evaluation: Mapping[str, Any]
    primary_metrics: tuple[str, ...] = ()

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"study {self.name!r} has no arm {name!r}; arms: {list(self.arm_names)}")

    def cells(self) -> list[tuple[str, int]]:
        """Every ``(arm, seed)``, seed-major: a study stopped early has every arm at equal seeds."""
        return [(arm.name, seed) for seed in self.seeds for arm in self.arms]

    def run_order(self, baseline: str) -> list[tuple[str, int]]:
        """:meth:`cells`, with ``(baseline, seed)`` after each seed's arms: the order in which
        ``pclr study run`` runs them (the baseline cell: ``pclr_jax.study.cell``)."""
        return [
            cell
            for seed in self.seeds
            for cell in [*((arm.name, seed) for arm in self.arms), (baseline, seed)]
        ]

    def cell_config(self, arm_name: str | None, seed: int) -> ml_collections.ConfigDict:
        """The base training config with the arm's overrides (none for ``arm_name=None``: the
        baseline cell's untrained encoder) and ``seed``."""
        config = copy.deepcopy(self.base)
        config.unlock()
        overrides = self.arm(arm_name).overrides if arm_name is not None else {}
        for path, value in overrides.items():
            set_field(config, path, value)
        config.seed = int(seed)
        # The study evaluates each cell itself (probes at several label-set sizes): the loop's
        # own probes and random-init comparison would only repeat part of that work.
        config.eval.random_init_baseline = False
        config.eval.probe_tasks = ()
        return config

    def budget(self, arm_name: str) -> dict[str, Any]:
        """What a cell of this arm trains on and for how long, and how it is evaluated."""
        config = self.cell_config(arm_name, self.seeds[0])
        return {
            "data": f"{config.data.name}/{config.data.config}:{config.data.train_split}",
            "steps": int(config.total_steps),
            "batch_pairs": int(config.batch_pairs),
            "ecgs_seen": 2 * int(config.batch_pairs) * int(config.total_steps),
            "model_input": f"{config.model.n_samples}x{config.model.n_leads}",
        }

    def comparisons(self) -> tuple[int, int]:
        """``(primary, secondary)``: how many arm x metric comparisons each family holds (every
        arm but the reference against it; ``primary`` 0 when no family is pre-registered)."""
        arms = len(self.arms) - 1
        metrics = len(metric_names(self.evaluation))
        primary = len(self.primary_metrics)
        return arms * primary, arms * (metrics - primary)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description (saved in the study workdir, compared on resume).

        ``primary_metrics`` is written only when set, so a study without a primary family is
        described exactly as before the field existed."""
        described = {
            "name": self.name,
            "description": self.description,
            "reference_arm": self.reference_arm,
            "seeds": list(self.seeds),
            "arms": [{"name": a.name, "overrides": dict(a.overrides)} for a in self.arms],
            "evaluation": dict(self.evaluation),
            "base": json.loads(self.base.to_json()),
        }
        if self.primary_metrics:
            described["primary_metrics"] = list(self.primary_metrics)
        return json.loads(json.dumps(described))


def metric_names(evaluation: Mapping[str, Any]) -> list[str]:
    """The metrics a cell of this evaluation reports: ``retrieval_top1``, ``retrieval_top5`` and
    ``<column>_<auroc|r2>@<size>`` per task and label-set size (``pclr_jax.study.cell``). A task
    whose kind is inferred from its labels (``"column"`` alone) gives ``<column>_*@<size>``: its
    metric is known only once the labels are read."""
    from pclr_jax.evaluation.probe import PRIMARY_METRIC  # here: sklearn is slow to import

    names = ["retrieval_top1", "retrieval_top5"]
    for task in evaluation["tasks"]:
        column, _, kind = str(task).rpartition(":")
        column, metric = (column, PRIMARY_METRIC[kind]) if column else (str(task), "*")
        names += [f"{column}_{metric}@{size}" for size in evaluation["label_sizes"]]
    return names


def is_metric(name: str, evaluation: Mapping[str, Any]) -> bool:
    """Whether a cell of this evaluation reports the metric ``name`` (``metric_names``)."""
    return any(
        re.fullmatch(re.escape(known).replace(r"\*", "[a-z0-9]+"), name)
        for known in metric_names(evaluation)
    )


def _primary_metrics(config: ml_collections.ConfigDict, evaluation: dict) -> tuple[str, ...]:
    """The config's ``primary_metrics``, each checked against the metrics the study reports."""
    primary = config.get("primary_metrics", ()) or ()
    primary = (primary,) if isinstance(primary, str) else tuple(str(m) for m in primary)
    known = metric_names(evaluation)
    for metric in primary:
        if not is_metric(metric, evaluation):
            raise ValueError(
                f"primary_metrics: {metric!r} is not a metric of this study; its metrics: {known}"
            )
    if len(set(primary)) != len(primary):
        raise ValueError(f"primary_metrics repeat: {list(primary)}")
    return primary


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets ``config.<path>`` (dotted); a dict value becomes a sub-config replacing the old one.

    Raises ``KeyError`` for a path whose parent does not exist (a typo must not train silently
    on the base value).
    """
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        if part not in node:
            raise KeyError(f"override {path!r}: the config has no field {part!r}")
        node = node[part]
    if isinstance(value, Mapping):
        value = ml_collections.ConfigDict(dict(value))
    elif leaf not in node:
        raise KeyError(f"override {path!r}: the config has no field {leaf!r}")
    with node.ignore_type():
        node[leaf] = value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs ``get_config([arg])`` of ``FILE[:ARG]``.

    A file inside a ``configs`` package (``configs/studies/x.py``) may import its siblings
    (``from configs import default``): the folder holding ``configs/`` goes on ``sys.path``.
    """
    path_text, _, arg = spec.partition(":")
    path = pathlib.Path(path_text).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no study config file {path_text}")
    for parent in path.parents:
        if parent.name == "configs" and (parent / "__init__.py").exists():
            root = str(parent.parent)
            if root not in sys.path:
                sys.path.insert(0, root)
            break
    module_spec = importlib.util.spec_from_file_location(f"_pclr_study_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"base.total_steps=180"`` -> ``("base.total_steps", 180)``; values are Python literals,
    anything else is a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected FIELD=VALUE")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def load_study(config_spec: str, assignments: Sequence[str] = ()) -> StudySpec:
    """Loads a study config file, applies ``--set FIELD=VALUE`` assignments and validates it."""
    config = load_config_file(config_spec)
    config.unlock()
    for text in assignments:
        path, value = parse_assignment(text)
        if path in OPTIONAL_FIELDS and path not in config:
            config[path] = value
            continue
        set_field(config, path, value)
    return study_from_config(config)


def study_from_config(config: ml_collections.ConfigDict) -> StudySpec:
    """Validates a study ConfigDict; errors name the offending field."""
    for field in ("name", "base", "arms", "reference_arm", "seeds", "evaluation"):
        if field not in config:
            raise ValueError(f"a study config needs a {field!r} field")
    arms = tuple(Arm(str(name), dict(overrides)) for name, overrides in config.arms)
    names = [arm.name for arm in arms]
    if not arms:
        raise ValueError("a study needs at least one arm")
    for name in names:
        if not ARM_NAME.match(name):
            raise ValueError(f"arm name {name!r}: use letters, digits, '_', '.', '-'")
    if len(set(names)) != len(names):
        raise ValueError(f"arm names repeat: {names}")
    if config.reference_arm not in names:
        raise ValueError(f"reference_arm {config.reference_arm!r} is not an arm: {names}")
    seeds = tuple(int(s) for s in config.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one: {list(config.seeds)}")
    evaluation = dict(config.evaluation.to_dict())
    missing = [f for f in EVALUATION_FIELDS if f not in evaluation]
    if missing:
        raise ValueError(f"evaluation lacks {missing}")
    evaluation["tasks"] = [str(t) for t in evaluation["tasks"]]
    evaluation["label_sizes"] = [s if s == "all" else int(s) for s in evaluation["label_sizes"]]
    spec = StudySpec(
        name=str(config.name),
        description=str(config.get("description", "")),
        base=config.base,
        arms=arms,
        reference_arm=str(config.reference_arm),
        seeds=seeds,
        evaluation=evaluation,
        primary_metrics=_primary_metrics(config, evaluation),
    )
    for arm in names:  # every override must apply to the base config
        spec.cell_config(arm, seeds[0])
    return spec
