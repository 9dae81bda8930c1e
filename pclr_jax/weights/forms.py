"""The forms PCLR weights come in, told apart by looking at a path, and one reader for all.

=============  ====================================================  ============================
form           what the path is                                      reader
=============  ====================================================  ============================
``keras_h5``   an HDF5 file (``model.save('x.h5')``, ``PCLR.h5``)    :mod:`~.keras_h5` (h5py)
``savedmodel`` a directory with ``saved_model.pb`` (ml4h's ``PCLR/``, :mod:`~.savedmodel`
               ``PCLR_lead_I/``, ``PCLR_lead_II/``)                  (protobuf, no TensorFlow)
``orbax``      a directory a pclr-jax encoder was saved to           :mod:`~.encoder_checkpoint`
               (``metadata/`` and ``variables/`` items)
=============  ====================================================  ============================

``load_encoder`` and every ``pclr`` command that takes weights (``embed``, ``probe``,
``convert``) go through :func:`read_weights`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import h5py

from pclr_jax.model.encoder import EncoderConfig
from pclr_jax.weights.output_layer import orbax_marker


def detect_weights_form(path: str | os.PathLike) -> str:
    """``'keras_h5'``, ``'savedmodel'`` or ``'orbax'`` for a weights path (see the module doc).

    Raises ``FileNotFoundError`` if nothing is at ``path`` and ``ValueError`` if it is none of
    the three forms, saying what was found.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        if os.path.isdir(os.path.join(path, "metadata")):
            return "orbax"
        raise ValueError(
            f"{path} is a directory but neither a SavedModel (no saved_model.pb) nor a pclr-jax "
            f"Orbax encoder (no metadata/); it holds {sorted(os.listdir(path))[:10]}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file or directory {path}")
    if os.path.basename(path) == "saved_model.pb":
        raise ValueError(f"{path} is one file of a SavedModel: give its directory")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file: PCLR weights are a Keras .h5 file, a SavedModel "
            "directory or a pclr-jax Orbax directory (Keras 3 '.keras' archives are not read; "
            "save the model with model.save('model.h5'))"
        )
    return "keras_h5"


@dataclasses.dataclass(frozen=True)
class Weights:
    """PCLR weights as read from any form.

    ``variables`` are in :class:`~pclr_jax.model.encoder.PCLRModel` layout; ``marker`` is the
    default-output marker (:mod:`pclr_jax.weights.output_layer`; ``None`` for third-party Keras
    files); ``metadata`` is an Orbax encoder's JSON metadata, or for Keras files the names of the
    model's input and output layers (``keras_input_layer``, ``keras_output_layer``).
    """

    form: str
    config: EncoderConfig
    variables: dict
    marker: str | None
    metadata: dict[str, Any]


def read_weights(path: str | os.PathLike) -> Weights:
    """Reads PCLR weights in whichever form ``path`` holds (:func:`detect_weights_form`)."""
    form = detect_weights_form(path)
    if form == "orbax":
        from pclr_jax.weights.encoder_checkpoint import restore_encoder_with_metadata

        config, variables, metadata = restore_encoder_with_metadata(path)
        return Weights(form, config, variables, orbax_marker(metadata), metadata)
    if form == "savedmodel":
        from pclr_jax.weights.savedmodel import read_savedmodel

        model = read_savedmodel(path)
    else:
        from pclr_jax.weights.keras_h5 import read_keras_h5

        model = read_keras_h5(path)
    metadata = {"keras_input_layer": model.input_name, "keras_output_layer": model.output_layer}
    return Weights(form, model.config, model.variables, model.default_output, metadata)
