"""Which output of a weights file is "the embedding" when the user does not say.

A PCLR encoder file may end in a projection head. ``'final'`` is the file's own output (the
projection when there is a head), what ml4h's ``get_representations`` (Keras ``predict``)
returns; ``'embed'`` is the pooled layer, the representation pclr-jax's training evaluates and
PCLR's paper feeds to linear models.

The default follows where the weights come from, recorded as a *marker* in the files pclr-jax
writes: the ``default_output`` entry of an Orbax encoder's metadata
(:func:`pclr_jax.weights.encoder_checkpoint.save_encoder`) and the root attribute
``pclr_jax_default_output`` of a Keras ``.h5``
(:func:`pclr_jax.weights.keras_export.write_keras_h5`).
Encoders pclr-jax trained are written with ``'embed'``; ``pclr convert keras-to-orbax`` of a
third-party Keras file records ``'final'``, and a Keras file without the marker keeps ml4h's
meaning, ``'final'``. ``pclr convert`` carries the marker both ways, so it survives export.
"""

from __future__ import annotations

import dataclasses

OUTPUTS = ("final", "embed")
# What an encoder pclr-jax trained is written with: the layer its evaluation used.
TRAINED_OUTPUT = "embed"
METADATA_KEY = "default_output"
H5_ATTRIBUTE = "pclr_jax_default_output"

_REASONS = {
    "embed": "the weights were written by pclr-jax (a trained encoder): the pooled 'embed' "
    "layer, the representation its evaluation used",
    "final": "the weights come from a third-party Keras file: the file's own output, as ml4h's "
    "get_representations",
}


def check_output(output: str) -> str:
    """``output`` if it is one of :data:`OUTPUTS`, else ``ValueError``."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


@dataclasses.dataclass(frozen=True)
class OutputChoice:
    """The output to use and why (said on screen by ``pclr embed`` and ``pclr probe``)."""

    output: str
    reason: str


def default_output(marker: str | None) -> OutputChoice:
    """The default output for weights carrying ``marker`` (``None``: no marker)."""
    if marker is None:
        return OutputChoice("final", "no pclr-jax marker in the file: " + _REASONS["final"])
    return OutputChoice(check_output(marker), _REASONS[marker])


def choose_output(requested: str | None, marker: str | None) -> OutputChoice:
    """``requested`` (said to be the user's choice) or the default for ``marker``."""
    if requested is not None:
        return OutputChoice(check_output(requested), "asked for")
    return default_output(marker)


def orbax_marker(metadata: dict) -> str | None:
    """The marker of an Orbax encoder's metadata; for encoders written before markers existed,
    ``'embed'`` if a training run exported it (``step`` recorded, not converted from Keras)."""
    if METADATA_KEY in metadata:
        return metadata[METADATA_KEY]
    if "step" in metadata and "keras_output_layer" not in metadata:
        return TRAINED_OUTPUT
    return None
