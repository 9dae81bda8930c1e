"""``pclr convert``: Keras ``.h5`` or SavedModel <-> Orbax encoder checkpoint.

``pclr convert keras-to-orbax IN OUT_DIR`` reads a Keras ``.h5`` file (h5py alone) or a Keras
SavedModel directory (no TensorFlow), whichever ``IN`` is
(:func:`pclr_jax.weights.forms.detect_weights_form`); ``pclr convert savedmodel-to-orbax IN_DIR
OUT_DIR`` insists on a SavedModel. Nothing in either is executed. ``pclr convert orbax-to-keras
IN_DIR OUT.h5`` writes a file that tf.keras 2.x and Keras 3 load with
``keras.models.load_model``. All carry the marker of the output ``pclr embed`` uses by default
(:mod:`pclr_jax.weights.output_layer`): a third-party Keras file keeps its own output
(``final``), an encoder pclr-jax trained its pooled ``embed`` layer.
"""

from __future__ import annotations

import argparse

from pclr_jax.weights.output_layer import default_output

# Direction -> the weight forms its source may have (pclr_jax.weights.forms).
_KERAS_FORMS = {
    "keras-to-orbax": ("keras_h5", "savedmodel"),
    "savedmodel-to-orbax": ("savedmodel",),
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert PCLR weights between Keras (.h5, SavedModel) and Orbax checkpoints",
    )
    directions = parser.add_subparsers(dest="direction", required=True)
    sources = {
        "keras-to-orbax": (
            "Keras .h5 file or SavedModel directory -> Orbax directory",
            "Keras HDF5 model file (.h5) or SavedModel directory (saved_model.pb, variables/)",
        ),
        "savedmodel-to-orbax": (
            "Keras SavedModel directory -> Orbax directory (no TensorFlow needed)",
            "Keras SavedModel directory (saved_model.pb, variables/), e.g. ml4h's PCLR_lead_I/",
        ),
    }
    for direction, (summary, source_help) in sources.items():
        to_orbax = directions.add_parser(direction, help=summary)
        to_orbax.add_argument("source", help=source_help)
        to_orbax.add_argument("destination", help="new Orbax checkpoint directory")
        to_orbax.add_argument(
            "--overwrite", action="store_true", help="replace an existing destination"
        )
        to_orbax.set_defaults(func=keras_to_orbax)
    to_keras = directions.add_parser("orbax-to-keras", help="Orbax directory -> Keras .h5 file")
    to_keras.add_argument("source", help="Orbax encoder checkpoint directory")
    to_keras.add_argument("destination", help="Keras HDF5 model file to write (.h5)")
    to_keras.add_argument(
        "--overwrite", action="store_true", help="replace an existing destination"
    )
    to_keras.set_defaults(func=orbax_to_keras)


def describe(config) -> str:
    """One line summarising an :class:`~pclr_jax.model.encoder.EncoderConfig`."""
    head = "x".join(map(str, config.head_sizes)) if config.head_sizes else "none"
    stem_bn = " + batch norm" if config.stem_batch_norm else ""
    return (
        f"input {config.n_samples} samples x {config.n_leads} leads; stem {config.stem_filters} "
        f"filters{stem_bn}; units {list(config.unit_filters)} with strides "
        f"{list(config.downsample)}; kernel {config.kernel_size}; {config.activation}; "
        f"embedding {config.embed_dim}; projection head {head}"
    )


def keras_to_orbax(args: argparse.Namespace) -> int:
    import os

    from pclr_jax.model.encoder import count_parameters
    from pclr_jax.weights.encoder_checkpoint import save_encoder
    from pclr_jax.weights.forms import detect_weights_form, read_weights

    form = detect_weights_form(args.source)
    if form not in _KERAS_FORMS[args.direction]:
        raise SystemExit(
            f"{args.source} holds {form} weights; pclr convert {args.direction} reads "
            f"{' or '.join(_KERAS_FORMS[args.direction])}"
        )
    weights = read_weights(args.source)
    choice = default_output(weights.marker)
    save_encoder(
        args.destination,
        weights.config,
        weights.variables,
        metadata={"source": os.path.abspath(args.source), "source_form": form, **weights.metadata},
        overwrite=args.overwrite,
        default_output=choice.output,
    )
    print(f"converted {args.source} ({form}) -> {args.destination}")
    print(f"  encoder: {describe(weights.config)}")
    print(f"  parameters: {count_parameters(weights.variables):,}")
    print(
        f"  Keras input layer '{weights.metadata['keras_input_layer']}', output layer "
        f"'{weights.metadata['keras_output_layer']}'"
    )
    print(f"  default output for pclr embed: {choice.output!r} ({choice.reason})")
    return 0


def orbax_to_keras(args: argparse.Namespace) -> int:
    import os

    from pclr_jax.model.encoder import count_parameters
    from pclr_jax.weights.forms import detect_weights_form, read_weights
    from pclr_jax.weights.keras_export import write_keras_h5

    if os.path.exists(args.destination) and not args.overwrite:
        raise SystemExit(f"{args.destination} exists; pass --overwrite to replace it")
    form = detect_weights_form(args.source)
    if form != "orbax":
        raise SystemExit(f"{args.source} holds {form} weights, not an Orbax encoder directory")
    weights = read_weights(args.source)
    choice = default_output(weights.marker)
    output = write_keras_h5(args.destination, weights.config, weights.variables, choice.output)
    print(f"converted {args.source} -> {args.destination}")
    print(f"  encoder: {describe(weights.config)}")
    print(f"  parameters: {count_parameters(weights.variables):,}")
    print(f"  Keras input layer 'ecg', output layer '{output}'")
    print(f"  default output for pclr embed: {choice.output!r} ({choice.reason})")
    return 0
