"""Lead-name normalisation and matching, on the spellings of the shipped real records."""

import pytest
import wfdb

from pclr_jax.signals.leads import STANDARD_LEADS, lead_indices, normalize_lead_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AVR", "aVR"),
        ("avr", "aVR"),
        ("aVR", "aVR"),
        (" aVL ", "aVL"),
        ("AVF", "aVF"),
        ("i", "I"),
        ("iii", "III"),
        ("v1", "V1"),
        ("V6", "V6"),
        ("DI", "I"),
        ("DII", "II"),
        ("DIII", "III"),
        ("vx", "vx"),  # Frank lead: not a standard lead, kept as is
        ("MLII", "MLII"),
        ("V7", "V7"),
    ],
)
def test_normalize_lead_name(name, expected):
    assert normalize_lead_name(name) == expected


def test_standard_names_are_fixed_points():
    assert tuple(normalize_lead_name(n) for n in STANDARD_LEADS) == STANDARD_LEADS


@pytest.mark.parametrize(
    "record",
    ["ptbxl/records100/00000/00055_lr", "cinc2021/E07500", "ptbdb/patient001/s0010_re"],
)
def test_real_headers_map_to_the_first_twelve_columns(test_data_dir, record):
    # PTB-XL (AVR...), CinC (aVR...) and PTB DB (i, ii, ..., vx vy vz) all store the 12 standard
    # leads first and in the standard order.
    names = wfdb.rdheader(str(test_data_dir / record)).sig_name
    assert lead_indices(names) == list(range(12))


def test_reordering_and_subsets():
    shuffled = ["v6", "AVF", "I", "vx", "III", "V1", "AVL", "II", "V5", "avr", "V2", "V4", "V3"]
    order = lead_indices(shuffled)
    assert [shuffled[i] for i in order] == [
        "I", "II", "III", "avr", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "v6"
    ]  # fmt: skip
    assert lead_indices(shuffled, ("I",)) == [2]
    assert lead_indices(shuffled, ("ii",)) == [7]


def test_missing_and_duplicated_leads():
    with pytest.raises(KeyError, match="V6"):
        lead_indices(list(STANDARD_LEADS[:11]))
    with pytest.raises(ValueError, match="aVR appears 2 times"):
        lead_indices([*STANDARD_LEADS, "AVR"])
