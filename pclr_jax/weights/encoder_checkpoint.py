"""Orbax checkpoints of a trained or converted PCLR encoder (variables plus configuration).

A checkpoint directory holds two Orbax items:

* ``variables``: the :class:`~pclr_jax.model.encoder.PCLRModel` variables (``params`` and
  ``batch_stats``; the projection head when present), saved with ``StandardSave``;
* ``metadata``: JSON ``{"format": "pclr-jax-encoder", "version": 1, "encoder_config": ...,
  "default_output": ...}`` plus any caller metadata (e.g. where the weights came from);
  ``default_output`` is the output ``load_encoder`` gives by default
  (:mod:`pclr_jax.weights.output_layer`).

Restoring needs nothing but the directory: the variable shapes are rebuilt from the stored
configuration.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.runtime.storage import as_path
from pclr_jax.weights.output_layer import METADATA_KEY, TRAINED_OUTPUT, check_output

FORMAT = "pclr-jax-encoder"
VERSION = 1
_RESERVED = ("format", "version", "encoder_config", METADATA_KEY)


def save_encoder(
    directory: str | os.PathLike,
    config: EncoderConfig,
    variables: dict,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    default_output: str = TRAINED_OUTPUT,
) -> None:
    """Saves ``variables`` (PCLRModel layout) and ``config`` to a new Orbax ``directory``.

    ``metadata`` must be JSON-serialisable and may not use the keys ``format``, ``version``,
    ``encoder_config`` or ``default_output``. An existing directory is an error unless
    ``overwrite``. ``default_output`` is the output ``load_encoder`` gives by default:
    ``'embed'`` (the pooled layer, right for encoders pclr-jax trained) or ``'final'`` (keeps a
    third-party Keras file's meaning; ``pclr convert keras-to-orbax`` passes it).
    """
    metadata = dict(metadata or {})
    clashes = sorted(set(metadata) & set(_RESERVED))
    if clashes:
        raise ValueError(f"metadata keys {clashes} are reserved")
    with_head = "head" in variables["params"]
    if with_head != bool(config.head_sizes):
        raise ValueError(
            f"config.head_sizes={config.head_sizes} but the variables "
            f"{'have' if with_head else 'lack'} a projection head (save the encoder alone "
            "with config.replace(head_sizes=()) and variables without 'head')"
        )
    info = {
        "format": FORMAT,
        "version": VERSION,
        "encoder_config": config.to_dict(),
        METADATA_KEY: check_output(default_output),
        **metadata,
    }
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(
            as_path(directory),
            ocp.args.Composite(
                variables=ocp.args.StandardSave(variables), metadata=ocp.args.JsonSave(info)
            ),
            force=overwrite,
        )


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's JSON metadata; raises ``ValueError`` if it is no pclr-jax encoder."""
    directory = as_path(directory)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        try:
            restored = checkpointer.restore(
                directory, ocp.args.Composite(metadata=ocp.args.JsonRestore())
            )
        except (FileNotFoundError, KeyError, ValueError) as error:
            raise ValueError(
                f"{directory} is not a pclr-jax encoder checkpoint: {error}"
            ) from error
    info = restored["metadata"]
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{directory} is not a pclr-jax encoder checkpoint (no '{FORMAT}' tag)")
    if info.get("version") != VERSION:
        raise ValueError(f"{directory} has encoder format version {info.get('version')}")
    return info


def restore_encoder(directory: str | os.PathLike) -> tuple[EncoderConfig, dict]:
    """Loads ``(config, variables)`` saved by :func:`save_encoder`.

    The variables land on this process's first local device, so every process of a multi-host
    job can restore (a global ``jax.devices()[0]`` belongs to process 0 only).
    """
    config, variables, _ = restore_encoder_with_metadata(directory)
    return config, variables


def restore_encoder_with_metadata(
    directory: str | os.PathLike,
) -> tuple[EncoderConfig, dict, dict[str, Any]]:
    """:func:`restore_encoder` plus the checkpoint's JSON metadata, read once."""
    directory = as_path(directory)
    info = read_metadata(directory)
    config = EncoderConfig.from_dict(info["encoder_config"])
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract
    )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            directory, ocp.args.Composite(variables=ocp.args.StandardRestore(abstract))
        )
    return config, restored["variables"], info
