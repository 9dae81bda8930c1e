"""``pclr study run``: every (arm, seed) cell of a study, in order, resumable.

The study workdir holds ``study.json`` (the study as run: arms, seeds, evaluation, base config,
and the command's config file and ``--set`` assignments) and ``cells/<arm>/seed_<seed>/``.
Running again on the same workdir continues where it stopped: finished cells (``result.json``)
are skipped, an interrupted cell resumes from its checkpoint, failed cells (``failed.json``) are
skipped unless ``retry_failed``. A workdir holding another study is refused, so cells run by
separate jobs (``--arm``/``--seed``) always belong to one study.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

from pclr_jax.study import cell
from pclr_jax.study.spec import StudySpec

STUDY_FILE = "study.json"


class StudyMismatchError(ValueError):
    """The workdir already holds a study with another definition."""


def record_study(spec: StudySpec, study_dir: pathlib.Path, source: dict) -> None:
    """Writes ``study.json``, or checks that the one there describes the same study.

    Seeds may differ: running more seeds on a study's workdir adds them to ``study.json``
    (the report then lists the cells not run yet).
    """
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / STUDY_FILE
    described = spec.to_json()
    if path.exists():
        recorded_file = json.loads(path.read_text())
        recorded = recorded_file["study"]
        if {**recorded, "seeds": described["seeds"]} == described:
            if recorded["seeds"] != described["seeds"]:  # more (or other) seeds: same study
                seeds = list(dict.fromkeys([*recorded["seeds"], *described["seeds"]]))
                recorded_file["study"]["seeds"] = seeds
                cell.write_json_atomically(path, recorded_file)
            return
        if recorded != described:
            differing = sorted(
                k for k in {*described, *recorded} if recorded.get(k) != described.get(k)
            )
            if differing == ["primary_metrics"]:
                raise StudyMismatchError(
                    f"{study_dir} holds this study with primary_metrics "
                    f"{recorded.get('primary_metrics', [])}, not "
                    f"{described.get('primary_metrics', [])}: the primary family is "
                    "pre-registered, fixed before the first cell runs; use a new --workdir"
                )
            raise StudyMismatchError(
                f"{study_dir} holds another study (fields differ: {differing}); use a new "
                f"--workdir, or the same config and --set as {recorded_source(study_dir)}"
            )
        return
    cell.write_json_atomically(path, {"study": described, "source": source})


def recorded_source(study_dir: pathlib.Path) -> dict:
    """The config file and ``--set`` assignments the study was first run with."""
    return json.loads((pathlib.Path(study_dir) / STUDY_FILE).read_text())["source"]


def run_study(
    spec: StudySpec,
    study_dir: str | os.PathLike,
    *,
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Runs the selected cells (default: all, each seed's baseline cell ``random_init`` after
    its arms; ``arms`` may name it) that are not finished; returns counts
    ``{"finished", "skipped", "failed", "stopped"}`` for this call."""
    study_dir = pathlib.Path(study_dir)
    for name in arms or ():
        if name != cell.BASELINE_ARM:
            spec.arm(name)  # raises for an unknown arm
    for seed in seeds or ():
        if seed not in spec.seeds:
            raise ValueError(f"seed {seed} is not one of the study's seeds {list(spec.seeds)}")
    counts = {"finished": 0, "skipped": 0, "failed": 0, "stopped": 0}
    selected = [
        (arm, seed)
        for arm, seed in spec.run_order(cell.BASELINE_ARM)
        if (not arms or arm in arms) and (not seeds or seed in seeds)
    ]
    for number, (arm, seed) in enumerate(selected, 1):
        directory = cell.cell_directory(study_dir, arm, seed)
        where = f"[{number}/{len(selected)}] {arm} seed {seed}"
        if cell.read_result(directory) is not None:
            log(f"{where}: finished earlier, skipped")
            counts["skipped"] += 1
            continue
        if (directory / cell.FAILED).exists() and not retry_failed:
            log(f"{where}: failed earlier ({directory / cell.FAILED}), skipped")
            counts["skipped"] += 1
            continue
        log(f"{where}: running in {directory}")
        try:
            if arm == cell.BASELINE_ARM:
                result = cell.run_baseline_cell(spec, seed, study_dir)
            else:
                result = cell.run_cell(spec, arm, seed, study_dir)
        except Exception as error:  # recorded, and the study goes on with the other cells
            cell.record_failure(study_dir, arm, seed, error)
            log(f"{where}: FAILED: {type(error).__name__}: {error}")
            counts["failed"] += 1
            continue
        if "stopped_by" in result:
            log(f"{where}: stopped by {result['stopped_by']}; run the same command to resume")
            counts["stopped"] += 1
            break
        log(
            f"{where}: done (train {result['train_wall_s']:.0f} s, "
            f"evaluation {result['eval_wall_s']:.0f} s)"
        )
        counts["finished"] += 1
    return counts
