"""Writes the PTB-XL "all statements" labels of a prepared ``ptbxl`` data set as a ``pclr probe``
label table: ``sample_id`` (the ``ecg_id``) and ``all_statements`` (the ECG's SCP statements,
sorted and joined by ``;``).

As in the PTB-XL benchmark (Strodthoff et al. 2021, "all" task): every statement in the ECG's
``scp_codes`` counts, whatever its likelihood, and every statement that occurs in the data set
is a class (71 in PTB-XL v1.0.3).

    python scripts/ptbxl_statements.py --data-dir data/tfds --config cpu --out statements.csv
"""

from __future__ import annotations

import argparse
import ast

import pandas as pd

from pclr_jax.data.prepared import load_prepared

SPLITS = ("train", "validation", "test")


def statements_table(index: pd.DataFrame) -> pd.DataFrame:
    """``sample_id, all_statements`` of the rows of a prepared PTB-XL index (its ``record_id``
    and ``scp_codes`` columns; ``scp_codes`` is the PTB-XL dict written as text)."""
    codes = index["scp_codes"].map(ast.literal_eval)
    return pd.DataFrame(
        {
            "sample_id": index["record_id"].astype(str),
            "all_statements": codes.map(lambda c: ";".join(sorted(c))),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--config", default=None, help="the ptbxl builder config (default: default)"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    table = pd.concat(
        [
            statements_table(load_prepared("ptbxl", s, args.data_dir, args.config).index)
            for s in SPLITS
        ],
        ignore_index=True,
    )
    empty = table["all_statements"] == ""
    if empty.any():
        raise ValueError(f"ECGs without any statement: {table['sample_id'][empty].tolist()[:10]}")
    classes = sorted({c for row in table["all_statements"] for c in row.split(";")})
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(table):,} ECGs, {len(classes)} statements")


if __name__ == "__main__":
    main()
