"""``pclr probe``: linear-probe learning curves, patient retrieval and embedding maps.

Examples::

    # Two embedding files side by side, labels from a CSV, AUROC/R^2 learning curves:
    pclr probe --embeddings pclr=emb.parquet --embeddings variant=emb_siglip.parquet \\
        --labels labels.csv --task sex:binary --task age:regression --out probe_out --retrieval

    # A checkpoint on a prepared data set, against the paper's baselines:
    pclr probe --weights run/encoder --data ptbxl --data-dir ~/tfds --split train \\
        --test-split test --task af:binary --baseline random_init --baseline scratch --out out

Writes ``results.csv`` (source, task, size, size_label, repeat, metric, value, ci_low, ci_high,
n_train, n_test, ci_note, outlier), ``skipped.csv``, ``learning_curves.png``, ``summary.txt``, and
with ``--retrieval`` ``retrieval.csv`` (top-1/5 with intervals), with ``--map COLUMN``
``map_<source>_<COLUMN>.png``. Intervals are percentile bootstraps over the test patients
(``pclr_jax.evaluation.resampling``); ``ci_note`` names the classes an interval cannot cover.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pclr_jax.evaluation.supervised import SupervisedConfig

BASELINES = ("random_init", "scratch", "finetune")
# Without a terminal, progress is a plain line every this many ECGs embedded.
LOG_EVERY_ECGS = 1000


def _named_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    return (name, path) if sep and name else ("", value)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="linear-probe learning curves, retrieval and maps of ECG embeddings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = parser.add_argument_group("embeddings")
    inputs.add_argument(
        "--embeddings",
        action="append",
        default=[],
        type=_named_path,
        metavar="NAME=PATH",
        help="a `pclr embed` file (csv/tsv/parquet: sample_id, latent_0..); repeatable",
    )
    inputs.add_argument(
        "--weights",
        action="append",
        default=[],
        type=_named_path,
        metavar="[NAME=]PATH",
        help="encoder weights (Keras .h5, SavedModel or Orbax directory) to embed --data with; "
        "repeatable",
    )
    inputs.add_argument("--data", help="prepared data set name (see `pclr prepare`)")
    inputs.add_argument("--data-dir", help="directory of the prepared data sets")
    inputs.add_argument("--data-config", help="builder config of --data (default: its default)")
    inputs.add_argument("--split", default="train", help="split to evaluate on (default train)")
    inputs.add_argument(
        "--test-split",
        help="a fixed test split (training sets are drawn from --split); default: repeated "
        "patient-disjoint splits of --split",
    )
    inputs.add_argument("--embed-batch-size", type=int, default=128)
    inputs.add_argument(
        "--output-layer",
        choices=("final", "embed"),
        default=None,
        help="layer of --weights to probe, as `pclr embed --output-layer` (default: embed for "
        "encoders pclr-jax trained, final for other Keras files)",
    )
    labels = parser.add_argument_group("labels and tasks")
    labels.add_argument(
        "--labels", help="csv/tsv/parquet with sample_id, patient_id and label columns"
    )
    labels.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="COLUMN[:KIND]",
        help="label column and kind (binary|multiclass|multilabel|regression; inferred if "
        "omitted); repeatable",
    )
    labels.add_argument("--patient-column", default="patient_id")
    labels.add_argument(
        "--group-column",
        default="ecg_group",
        help="column marking copies of one recording (used by --retrieval if present)",
    )
    curve = parser.add_argument_group("learning curves")
    curve.add_argument("--sizes", default="100,250,500,1000,2500,5000,all")
    curve.add_argument("--repeats", type=int, default=5)
    curve.add_argument("--test-fraction", type=float, default=0.2)
    curve.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples of the test patients for CIs"
    )
    curve.add_argument("--seed", type=int, default=0)
    curve.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=BASELINES,
        help="add a baseline source (needs --data): random_init (frozen random encoder), "
        "scratch (the network trained on the labels), finetune (from the first --weights)",
    )
    supervised = parser.add_argument_group("supervised baselines (scratch, finetune)")
    supervised.add_argument(
        "--encoder-config",
        help="JSON file of EncoderConfig fields for random_init/scratch when no --weights is "
        "given (default: the released architecture for the data's length and leads)",
    )
    supervised.add_argument("--sup-lr", type=float, default=1e-3)
    supervised.add_argument("--sup-epochs", type=int, default=30)
    supervised.add_argument("--sup-batch-size", type=int, default=32)
    supervised.add_argument("--sup-patience", type=int, default=5)
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--out", required=True, help="output directory")
    outputs.add_argument("--retrieval", action="store_true", help="patient retrieval top-1/5")
    outputs.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN",
        help="PCA and t-SNE map coloured by COLUMN; repeatable",
    )
    outputs.add_argument(
        "--map-max-points",
        type=int,
        default=5000,
        help="a random subset of this many ECGs is mapped (t-SNE time grows with it)",
    )
    parser.set_defaults(func=run)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_sizes(text: str) -> list[int | str]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            sizes.append("all")
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise ValueError(f"--sizes: {part!r} is neither a positive integer nor 'all'")
    return sizes


def _merge_labels(table, labels):
    """Label-table columns replace the data set's columns of the same name (left join)."""
    from pclr_jax.evaluation.inputs import ID_COLUMN

    labels = labels.assign(**{ID_COLUMN: labels[ID_COLUMN].astype(str)})
    shared = [c for c in labels.columns if c in table.columns and c != ID_COLUMN]
    return table.drop(columns=shared).merge(labels, on=ID_COLUMN, how="left", validate="1:1")


def _load_inputs(args):
    """The label rows, each embedding file's features aligned to them, the ECGs (data-set mode,
    else None) and the fixed test rows (``--test-split``, else None)."""
    import numpy as np
    import pandas as pd

    from pclr_jax.evaluation import inputs

    ecgs, table = None, None
    if args.data:
        if not args.data_dir:
            raise ValueError("--data needs --data-dir")
        ecgs, table = inputs.load_split(args.data, args.split, args.data_dir, args.data_config)
        table["_test"] = False
        if args.test_split:
            test_ecgs, test_table = inputs.load_split(
                args.data, args.test_split, args.data_dir, args.data_config
            )
            ecgs = np.concatenate([ecgs, test_ecgs])
            table = pd.concat([table, test_table.assign(_test=True)], ignore_index=True)
        splits = args.split + (f" + {args.test_split} (test)" if args.test_split else "")
        _log(f"{args.data}: {len(table):,} ECGs from {splits}")
    elif args.weights or args.baseline or args.test_split:
        raise ValueError("--weights, --baseline and --test-split need --data and --data-dir")

    files = {
        name or pathlib.Path(path).stem: inputs.read_embeddings(path)
        for name, path in args.embeddings
    }
    if args.labels:
        labels = inputs.read_table(args.labels)
        if inputs.ID_COLUMN not in labels:
            raise ValueError(f"{args.labels}: no {inputs.ID_COLUMN!r} column")
        table = labels if table is None else _merge_labels(table, labels)
    elif table is None:
        if not files:
            raise ValueError("nothing to evaluate: give --embeddings NAME=PATH or --data")
        table = next(iter(files.values())).extra
    if args.patient_column not in table:
        raise ValueError(
            f"the labels have no {args.patient_column!r} column (splits and retrieval are by "
            "patient); name the column with --patient-column"
        )
    table = table.assign(_row=np.arange(len(table)))
    sources = {}
    if files:
        table, sources, report = inputs.align(table, files)
        _log("embeddings joined to the labels on sample_id (unmatched rows are left out):")
        for line in report:
            _log(f"  {line}")
    if ecgs is not None:
        ecgs = ecgs[table["_row"].to_numpy()]
    test_rows = np.flatnonzero(table["_test"].to_numpy(bool)) if args.test_split else None
    return table.drop(columns=["_row", "_test"], errors="ignore"), sources, ecgs, test_rows


def _embed_with_weights(args, ecgs, sources) -> list:
    """Adds one source per ``--weights`` file; returns the loaded encoders."""
    from pclr_jax.embedding.embedder import load_encoder

    encoders = []
    for name, path in args.weights:
        name = name or ("pclr" if "pclr" not in sources else pathlib.Path(path).stem)
        encoder = load_encoder(path, args.output_layer, args.embed_batch_size)
        _log(f"embedding {len(ecgs):,} ECGs with {path} as {name!r}: {encoder.describe_output()}")
        sources[name] = _embed_with_progress(encoder, ecgs, f"embedding ({name})")
        encoders.append(encoder)
    return encoders


def _embed_with_progress(encoder, ecgs, desc: str):
    """``encoder.embed(ecgs)`` in chunks, reported by a
    :class:`~pclr_jax.runtime.progress.Progress`."""
    import numpy as np

    from pclr_jax.runtime.progress import Progress

    chunk = 8 * encoder.batch_size
    parts = []
    with Progress(desc, total=len(ecgs), unit="ECG", every=LOG_EVERY_ECGS) as progress:
        for start in range(0, len(ecgs), chunk):
            parts.append(encoder.embed(ecgs[start : start + chunk]))
            progress.update(len(parts[-1]))
    return np.concatenate(parts) if parts else encoder.embed(ecgs)


def _baselines(args, ecgs, encoders, sources) -> tuple[dict, SupervisedConfig]:
    """Adds ``random_init`` features to ``sources``; returns the network baselines by name
    (``{name: (model_config, encoder_variables or None)}``) and their training config."""
    from pclr_jax.evaluation import supervised
    from pclr_jax.model.encoder import EncoderConfig

    if "finetune" in args.baseline and not encoders:
        raise ValueError("--baseline finetune needs --weights (the encoder to fine-tune)")
    if encoders:
        model_config = encoders[0].config
    elif args.encoder_config:
        model_config = EncoderConfig.from_dict(
            json.loads(pathlib.Path(args.encoder_config).read_text())
        )
    else:
        model_config = EncoderConfig(n_samples=ecgs.shape[1], n_leads=ecgs.shape[2])
    if (model_config.n_samples, model_config.n_leads) != ecgs.shape[1:]:
        raise ValueError(
            f"the encoder expects ECGs of ({model_config.n_samples}, {model_config.n_leads}), "
            f"the data has {ecgs.shape[1:]}"
        )
    config = supervised.SupervisedConfig(
        learning_rate=args.sup_lr,
        max_epochs=args.sup_epochs,
        batch_size=args.sup_batch_size,
        patience=args.sup_patience,
        seed=args.seed,
    )
    networks = {}
    for name in dict.fromkeys(args.baseline):
        if name == "random_init":
            _log(f"embedding {len(ecgs):,} ECGs with a randomly initialised encoder")
            sources[name] = supervised.random_init_embeddings(
                model_config, ecgs, args.seed + 1, args.embed_batch_size
            )
        else:
            networks[name] = (model_config, encoders[0].variables if name == "finetune" else None)
    return networks, config


def _fit_reporter(progress):
    """``learning_curve``'s progress callback: a skipped fit is written out, a finished fit
    counted, its score shown after the count."""

    def report(message: str) -> None:
        if message.startswith("skipped"):
            progress.write(message)
        else:
            progress.set_postfix(last=message)
            progress.update()

    return report


def _task_curves(args, table, sources, ecgs, test_rows, networks, sup_config, sizes):
    import numpy as np

    from pclr_jax.evaluation import inputs, probe, supervised
    from pclr_jax.evaluation.inputs import task_labels
    from pclr_jax.runtime.progress import Progress

    curves = []
    for spec in args.task:
        task, rows, y, classes = task_labels(table, spec)
        described = (
            f"positive class {str(classes[1])!r}"
            if task.kind == "binary"
            else (f"{len(classes)} classes" if len(classes) else "continuous")
        )
        _log(
            f"task {task.column} ({task.kind}, {described}): {len(rows):,} labelled ECGs, "
            f"{len(table) - len(rows):,} without a label left out"
        )
        if not len(rows):
            raise inputs.JoinError(
                f"--task {spec}: none of the {len(table):,} ECGs with an embedding has a known "
                f"{task.column!r} label"
            )
        task_sources = {name: features[rows] for name, features in sources.items()}
        for name, (model_config, encoder_variables) in networks.items():
            task_sources[name] = supervised.supervised_source(
                ecgs if len(rows) == len(ecgs) else ecgs[rows],
                model_config,
                encoder_variables,
                sup_config,
            )
        fits_per_repeat = len(sizes) * len(task_sources)
        progress = Progress(
            f"probe {task.column}",
            total=fits_per_repeat * args.repeats,
            unit="fit",
            every=fits_per_repeat,
        )
        curves.append(
            probe.learning_curve(
                task_sources,
                y,
                table[args.patient_column].to_numpy()[rows],
                task.kind,
                task_name=task.column,
                n_outputs=max(len(classes), 1),
                sizes=sizes,
                repeats=args.repeats,
                test_fraction=args.test_fraction,
                test_rows=None if test_rows is None else np.flatnonzero(np.isin(rows, test_rows)),
                n_bootstrap=args.bootstrap,
                seed=args.seed,
                progress=_fit_reporter(progress),
                class_names=[str(c) for c in classes] if len(classes) else None,
            )
        )
        progress.close()
    return curves


def _retrieval(args, table, sources, test_rows, out):
    import numpy as np
    import pandas as pd

    from pclr_jax.evaluation.retrieval import (
        format_retrieval,
        retrieval_accuracy,
        retrieval_intervals,
    )

    rows = np.arange(len(table)) if test_rows is None else test_rows
    groups = table[args.group_column].to_numpy()[rows] if args.group_column in table else None
    records = []
    for name, features in sources.items():
        patients = table[args.patient_column].to_numpy()[rows]
        result = retrieval_accuracy(features[rows], patients, (1, 5), groups)
        print(f"retrieval {name}: {format_retrieval(result)}")
        scalars = {k: v for k, v in result.items() if np.isscalar(v)}
        intervals = retrieval_intervals(result, patients, args.bootstrap, seed=args.seed)
        records.append({"source": name, **scalars, **intervals})
    pd.DataFrame(records).to_csv(out / "retrieval.csv", index=False)


def run(args) -> int:
    from pclr_jax.evaluation.inputs import JoinError

    try:
        return _run(args)
    except JoinError as error:
        print(f"pclr probe: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import pandas as pd

    from pclr_jax.evaluation import probe

    out = pathlib.Path(args.out)
    sizes = _parse_sizes(args.sizes)
    table, sources, ecgs, test_rows = _load_inputs(args)
    encoders = _embed_with_weights(args, ecgs, sources) if args.weights else []
    networks, sup_config = (
        _baselines(args, ecgs, encoders, sources) if args.baseline else ({}, None)
    )
    if not sources and not networks:
        raise ValueError("no embedding source: give --embeddings, --weights or --baseline")
    out.mkdir(parents=True, exist_ok=True)

    if args.retrieval:
        _retrieval(args, table, sources, test_rows, out)
    for column in args.map:
        from pclr_jax.evaluation.embedding_map import plot_embedding_map

        if column not in table:
            raise ValueError(f"--map {column}: no such column in {list(table.columns)}")
        for name, features in sources.items():
            path = plot_embedding_map(
                features,
                table[column],
                out / f"map_{name}_{column}.png",
                label_name=column,
                title=name,
                max_points=args.map_max_points,
                seed=args.seed,
            )
            _log(f"wrote {path}")
    if not args.task:
        return 0

    curves = _task_curves(args, table, sources, ecgs, test_rows, networks, sup_config, sizes)
    results = pd.concat([c.results for c in curves], ignore_index=True)
    skipped = pd.concat([c.skipped for c in curves], ignore_index=True)
    results.assign(outlier=probe.outlier_repeats(results)).to_csv(out / "results.csv", index=False)
    skipped.to_csv(out / "skipped.csv", index=False)
    if len(skipped):
        _log(f"{len(skipped)} fits skipped, see {out / 'skipped.csv'}:")
        _log(skipped.drop_duplicates(["task", "size_label", "reason"]).to_string(index=False))
    if results.empty:
        raise ValueError(f"every fit was skipped; see {out / 'skipped.csv'}")
    from pclr_jax.evaluation.plots import plot_learning_curves

    plot_learning_curves(results, out / "learning_curves.png")
    summary = probe.format_summary(results)
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    _log(f"wrote {out / 'results.csv'}, {out / 'learning_curves.png'}")
    return 0
