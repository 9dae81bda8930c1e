"""One patient's read outcomes settled into examples, quarantine rows and copies found by
content: the function that both the process-pool and the Beam path of
:class:`~pclr_jax.data.builders.base.ECGBuilder` run, so that both write the same data set."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pclr_jax.data import copies, ingest


@dataclasses.dataclass
class Settled:
    """What became of one patient's tasks (:func:`settle_patient`); each entry is
    ``(position of the task in its split, value)``, in task order.

    Attributes:
        examples: the examples to write (every feature, ``ecg`` included).
        quarantined: :data:`~pclr_jax.data.builders.base.QUARANTINE_COLUMNS` rows of records that
        failed.
        duplicates: :data:`~pclr_jax.data.builders.base.DUPLICATE_COLUMNS` rows of copies found by
        content.
    """

    examples: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)
    quarantined: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)
    duplicates: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)


def patient_spans(tasks: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive tasks of one patient (a split's tasks are
    ordered by patient, so each patient is one run)."""
    spans, start = [], 0
    for i in range(1, len(tasks) + 1):
        if i == len(tasks) or tasks[i]["patient_id"] != tasks[start]["patient_id"]:
            spans.append((start, i))
            start = i
    return spans


def settle_patient(
    tasks: list[dict[str, Any]],
    outcomes: list[ingest.Outcome],
    first_position: int,
    split: str,
    feature_names: tuple[str, ...],
) -> Settled:
    """Turns the outcomes of one patient's tasks into examples, quarantine rows and copies found
    by content (:mod:`pclr_jax.data.copies`): the one function both the process-pool and the Beam
    path run, so both write the same data set.

    Args:
        tasks: the patient's tasks, in split order; ``outcomes`` one per task.
        first_position: the position of ``tasks[0]`` among its split's tasks.
        split: the split's name (for quarantine rows).
        feature_names: the manifest columns copied into each example (ids and labels).
    """
    settled = Settled()
    good = []
    for offset, (task, outcome) in enumerate(zip(tasks, outcomes, strict=True)):
        if outcome.record_id != task["record_id"]:
            raise RuntimeError(f"outcome {outcome.record_id} for task {task['record_id']}")
        if outcome.reason is None:
            good.append(offset)
            continue
        entry = {
            "record_id": task["record_id"],
            "patient_id": task["patient_id"],
            "split": split,
            "path": task.get("path", ""),
            "reason": outcome.reason,
            "message": outcome.message,
        }
        settled.quarantined.append((first_position + offset, entry))
    dropped: dict[int, int] = {}
    if len(good) > 1:
        prints = [_fingerprint(outcomes[i]) for i in good]
        for group in copies.copy_groups(prints):
            members = [good[i] for i in group]
            kept = copies.keeper(members, [o.sampling_rate for o in outcomes])
            dropped.update({i: kept for i in members if i != kept})
    for offset in good:
        task, outcome = tasks[offset], outcomes[offset]
        if offset in dropped:
            kept = tasks[dropped[offset]]
            entry = {
                "record_id": task["record_id"],
                "patient_id": task["patient_id"],
                "path": task.get("path", ""),
                "ecg_group": kept["ecg_group"],
                "kept_record_id": kept["record_id"],
                "found_by": "content",
            }
            settled.duplicates.append((first_position + offset, entry))
            continue
        example = {name: task[name] for name in feature_names}
        example["sampling_rate"] = np.float32(outcome.sampling_rate)
        example["ecg"] = outcome.ecg
        settled.examples.append((first_position + offset, example))
    return settled


def _fingerprint(outcome: ingest.Outcome) -> np.ndarray:
    """The outcome's fingerprint, or one from its prepared ECG (builders without source records,
    such as the synthetic generator, whose ECG is the source)."""
    if outcome.fingerprint is not None:
        return outcome.fingerprint
    return copies.fingerprint(np.asarray(outcome.ecg, np.float32))
