"""``pclr convert``: Keras ``.h5`` <-> Orbax encoder checkpoint.

``pclr convert keras-to-orbax IN.h5 OUT_DIR`` reads the file with h5py alone (nothing in it is
executed) and ``pclr convert orbax-to-keras IN_DIR OUT.h5`` writes a file that tf.keras 2.x and
Keras 3 load with ``keras.models.load_model``. Both carry the marker of the output ``pclr embed``
uses by default (:mod:`pclr_jax.weights.output_layer`): a third-party Keras file keeps its own
output
(``final``), an encoder pclr-jax trained its pooled ``embed`` layer.
"""

from __future__ import annotations

import argparse

from pclr_jax.weights.output_layer import default_output, orbax_marker


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert PCLR weights between Keras .h5 files and Orbax checkpoints"
    )
    directions = parser.add_subparsers(dest="direction", required=True)
    to_orbax = directions.add_parser("keras-to-orbax", help="Keras .h5 file -> Orbax directory")
    to_orbax.add_argument("source", help="Keras HDF5 model file (.h5)")
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
    from pclr_jax.weights.keras_h5 import read_keras_h5

    model = read_keras_h5(args.source)
    choice = default_output(model.default_output)
    save_encoder(
        args.destination,
        model.config,
        model.variables,
        metadata={
            "source": os.path.abspath(args.source),
            "keras_output_layer": model.output_layer,
            "keras_input_layer": model.input_name,
        },
        overwrite=args.overwrite,
        default_output=choice.output,
    )
    print(f"converted {args.source} -> {args.destination}")
    print(f"  encoder: {describe(model.config)}")
    print(f"  parameters: {count_parameters(model.variables):,}")
    print(f"  Keras input layer '{model.input_name}', output layer '{model.output_layer}'")
    print(f"  default output for pclr embed: {choice.output!r} ({choice.reason})")
    return 0


def orbax_to_keras(args: argparse.Namespace) -> int:
    import os

    from pclr_jax.model.encoder import count_parameters
    from pclr_jax.weights.encoder_checkpoint import read_metadata, restore_encoder
    from pclr_jax.weights.keras_export import write_keras_h5

    if os.path.exists(args.destination) and not args.overwrite:
        raise SystemExit(f"{args.destination} exists; pass --overwrite to replace it")
    config, variables = restore_encoder(args.source)
    choice = default_output(orbax_marker(read_metadata(args.source)))
    output = write_keras_h5(args.destination, config, variables, choice.output)
    print(f"converted {args.source} -> {args.destination}")
    print(f"  encoder: {describe(config)}")
    print(f"  parameters: {count_parameters(variables):,}")
    print(f"  Keras input layer 'ecg', output layer '{output}'")
    print(f"  default output for pclr embed: {choice.output!r} ({choice.reason})")
    return 0
