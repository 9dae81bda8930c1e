"""ECG lead names: the standard 12-lead order and matching of the names files use.

Files spell leads differently: PTB-XL writes ``AVR``, CinC 2021 ``aVR``, the PTB Diagnostic
database ``avr``, CODE-15% ``DI``/``DII``/``DIII``. :func:`normalize_lead_name` maps all of these
to one spelling, so lead lists can be matched by name and reordered to :data:`STANDARD_LEADS`.
"""

from __future__ import annotations

from collections.abc import Sequence

STANDARD_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)

# Spellings that differ from the standard name by more than letter case.
_ALIASES = {"DI": "I", "DII": "II", "DIII": "III", "LEADI": "I", "LEADII": "II", "LEADIII": "III"}
_CANONICAL = {name.upper(): name for name in STANDARD_LEADS}


def normalize_lead_name(name: str) -> str:
    """The standard spelling of a lead name (``'AVR'``, ``'avr'``, ``' aVR '`` -> ``'aVR'``;
    ``'DII'`` -> ``'II'``; ``'v1'`` -> ``'V1'``). Names of other leads (Frank ``vx``, ``MLII``)
    come back stripped and unchanged, so they never match a standard lead by accident."""
    key = "".join(name.split()).upper().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    return _CANONICAL.get(key, name.strip())


def lead_indices(lead_names: Sequence[str], wanted: Sequence[str] = STANDARD_LEADS) -> list[int]:
    """Column index in ``lead_names`` of each lead in ``wanted``, matched after normalisation.

    Leads of ``lead_names`` that are not wanted are ignored (e.g. PTB's Frank leads).
    Raises ``KeyError`` with the first wanted lead that is absent, and ``ValueError`` if a wanted
    lead appears twice (``'AVR'`` and ``'aVR'`` in one record).
    """
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(lead_names):
        positions.setdefault(normalize_lead_name(name), []).append(i)
    indices = []
    for lead in wanted:
        found = positions.get(normalize_lead_name(lead), [])
        if not found:
            raise KeyError(normalize_lead_name(lead))
        if len(found) > 1:
            names = [lead_names[i] for i in found]
            raise ValueError(
                f"lead {normalize_lead_name(lead)} appears {len(found)} times: {names}"
            )
        indices.append(found[0])
    return indices
