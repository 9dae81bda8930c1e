"""Supervised baselines: the PCLR network trained on the labels, from scratch or fine-tuned.

The network is ``PCLREncoder`` followed by one dense layer on the pooled embedding (logits, or the
standardised target for regression). Its variables are
``{'params': {'encoder': ..., 'output': ...}, 'batch_stats': {'encoder': ...}}``, so the encoder
part has the layout of ``PCLRModel`` and fine-tuning copies a pretrained encoder in as it is.

Training: AdamW (optax) on mini-batches of the training rows, batch norm in training mode; a
patient-disjoint validation part of the training rows is scored after every epoch and the
variables of the epoch with the lowest validation loss are kept (early stopping with a patience).
Before each validation the batch-norm running statistics are recomputed from the fitting rows
(the mean of the per-batch moments, "precise BN"): with Keras' momentum of 0.99 the running
averages of a few hundred steps still remember their initial (0, 1) values, so an eval-mode network
trained on a few hundred ECGs would be scored with statistics it never saw. The untrained network
is never kept: the first epoch is the earliest candidate.
Losses: binary and multilabel -> sigmoid cross-entropy; multiclass -> softmax cross-entropy;
regression -> squared error of the target standardised with the training rows' mean and SD.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.model_selection import GroupShuffleSplit

from pclr_jax.model.encoder import EncoderConfig, PCLREncoder, init_variables


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    """Optimisation of a supervised baseline.

    ``max_epochs`` bounds the training; it stops earlier when the validation loss has not
    improved for ``patience`` epochs. ``validation_fraction`` of the training patients are held
    out for that (at least one patient).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    validation_fraction: float = 0.2
    eval_batch_size: int = 128
    seed: int = 0


class SupervisedNetwork(nn.Module):
    """ECGs ``(batch, n_samples, n_leads)`` in mV -> outputs ``(batch, n_outputs)`` float32."""

    config: EncoderConfig
    n_outputs: int

    @nn.compact
    def __call__(self, ecg: jax.Array, train: bool = False) -> jax.Array:
        embed = PCLREncoder(self.config, name="encoder")(ecg, train)
        return nn.Dense(self.n_outputs, name="output")(embed).astype(jnp.float32)


def _n_network_outputs(kind: str, n_outputs: int) -> int:
    return 1 if kind in ("binary", "regression") else n_outputs


def init_supervised_variables(
    model_config: EncoderConfig,
    n_outputs: int,
    rng: jax.Array,
    encoder_variables: dict | None = None,
) -> dict:
    """Initial variables of ``SupervisedNetwork``; with ``encoder_variables`` (PCLRModel layout:
    ``{'params': {'encoder': ...}, 'batch_stats': {'encoder': ...}}``, a head is ignored) the
    encoder starts from those instead of a random initialisation."""
    variables = _init_fn(model_config, n_outputs)(rng)
    if encoder_variables is None:
        return variables
    variables = jax.tree_util.tree_map(lambda x: x, variables)  # a copy we may edit
    for collection in ("params", "batch_stats"):
        given = encoder_variables.get(collection, {}).get("encoder")
        expected = variables[collection]["encoder"]
        if given is None:
            raise ValueError(f"encoder_variables lack {collection}/encoder")
        shapes = jax.tree_util.tree_map(np.shape, given)
        if jax.tree_util.tree_structure(given) != jax.tree_util.tree_structure(
            expected
        ) or shapes != jax.tree_util.tree_map(np.shape, expected):
            raise ValueError(
                f"encoder_variables/{collection} do not match the encoder of {model_config}"
            )
        # Copies: the training step donates its buffers, the caller keeps its arrays.
        variables[collection]["encoder"] = jax.tree_util.tree_map(jnp.array, given)
    return variables


def _loss(outputs: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
    if kind == "binary":
        return optax.sigmoid_binary_cross_entropy(outputs[:, 0], targets).mean()
    if kind == "multilabel":
        return optax.sigmoid_binary_cross_entropy(outputs, targets).sum(axis=1).mean()
    if kind == "multiclass":
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
    return jnp.mean((outputs[:, 0] - targets) ** 2)


def _scores(outputs: np.ndarray, kind: str) -> np.ndarray:
    if kind == "binary":
        return np.asarray(jax.nn.sigmoid(outputs[:, 0]))
    if kind == "multilabel":
        return np.asarray(jax.nn.sigmoid(outputs))
    if kind == "multiclass":
        return np.asarray(jax.nn.softmax(outputs, axis=-1))
    return outputs[:, 0]


@functools.lru_cache(maxsize=16)
def _init_fn(model_config: EncoderConfig, n_outputs: int):
    """Jitted ``rng -> variables`` of the network, cached across runs."""
    network = SupervisedNetwork(model_config, n_outputs)
    dummy = jnp.zeros((1, model_config.n_samples, model_config.n_leads), jnp.float32)
    return jax.jit(lambda rng: network.init(rng, dummy, train=False))


@functools.lru_cache(maxsize=16)
def _eval_fn(model_config: EncoderConfig, n_outputs: int):
    """Jitted eval-mode forward pass ``(variables, ecg) -> outputs``, cached across runs."""
    network = SupervisedNetwork(model_config, n_outputs)
    return jax.jit(lambda variables, ecg: network.apply(variables, ecg, train=False))


@functools.lru_cache(maxsize=16)
def _embed_fn(model_config: EncoderConfig):
    """Jitted eval-mode ``PCLREncoder`` ``(variables, ecg) -> (batch, embed_dim)``, cached."""
    encoder = PCLREncoder(model_config)
    return jax.jit(lambda variables, ecg: encoder.apply(variables, ecg, train=False))


@functools.lru_cache(maxsize=16)
def _train_fn(model_config: EncoderConfig, n_outputs: int, kind: str, lr: float, wd: float):
    """Jitted training step and its optimizer, cached across runs (one compile per setting)."""
    network = SupervisedNetwork(model_config, n_outputs)
    optimizer = optax.adamw(lr, weight_decay=wd)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, batch_stats, opt_state, ecg, targets, rng):
        def loss_fn(p):
            outputs, updates = network.apply(
                {"params": p, "batch_stats": batch_stats},
                ecg,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": rng},
            )
            return _loss(outputs, targets, kind), updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return train_step, optimizer


@functools.lru_cache(maxsize=16)
def _batch_moments_fn(model_config: EncoderConfig, n_outputs: int):
    """Jitted ``(variables, ecg) -> batch_stats`` holding the batch's own moments: a training-mode
    pass of the network with batch-norm momentum 0, cached across runs."""
    network = SupervisedNetwork(dataclasses.replace(model_config, bn_momentum=0.0), n_outputs)

    def moments(variables, ecg):
        _, updates = network.apply(variables, ecg, train=True, mutable=["batch_stats"])
        return updates["batch_stats"]

    return jax.jit(moments)


def recalibrated_batch_stats(
    model_config: EncoderConfig,
    n_outputs: int,
    variables: dict,
    ecgs: np.ndarray,
    batch_size: int,
) -> dict:
    """Batch-norm statistics of ``variables`` recomputed on ``ecgs`` (N, S, L) mV: the mean over
    full batches of ``batch_size`` rows of each batch's mean and variance (N >= batch_size)."""
    moments = _batch_moments_fn(model_config, n_outputs)
    batches = _batches(len(ecgs), batch_size, eval_batch=False)
    total = None
    for rows in batches:
        stats = moments(variables, jnp.asarray(ecgs[rows], jnp.float32))
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
    return jax.tree_util.tree_map(lambda x: x / len(batches), total)


@dataclasses.dataclass
class SupervisedResult:
    """A trained baseline: the kept (best-validation) variables and the training history
    (``history``: one dict per epoch with epoch, train_loss, val_loss)."""

    model_config: EncoderConfig
    kind: str
    n_outputs: int
    variables: dict
    target_mean: float
    target_std: float
    history: list[dict]
    best_epoch: int


def _batches(n: int, size: int, eval_batch: bool):
    """Row slices; the training batches all have ``size`` rows (last partial one dropped)."""
    if eval_batch:
        return [slice(s, min(s + size, n)) for s in range(0, n, size)]
    return [slice(s, s + size) for s in range(0, n - size + 1, size)]


def _outputs(apply_eval, variables, ecgs: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode outputs for ``ecgs`` (N, S, L), batches padded to one shape (one compile)."""
    chunks = []
    for rows in _batches(len(ecgs), batch_size, eval_batch=True):
        batch = np.asarray(ecgs[rows], np.float32)
        padded = np.zeros((batch_size,) + batch.shape[1:], np.float32)
        padded[: len(batch)] = batch
        chunks.append(np.asarray(apply_eval(variables, padded))[: len(batch)])
    return np.concatenate(chunks)


def train_supervised(
    model_config: EncoderConfig,
    ecgs: np.ndarray,
    y: np.ndarray,
    kind: str,
    *,
    groups: np.ndarray | None = None,
    n_outputs: int | None = None,
    encoder_variables: dict | None = None,
    config: SupervisedConfig = SupervisedConfig(),
    progress: Callable[[str], None] | None = None,
) -> SupervisedResult:
    """Trains the network on ``ecgs`` (N, n_samples, n_leads) mV with encoded labels ``y``.

    Args:
        kind: 'binary' (y in {0, 1}), 'multiclass' (class index, ``n_outputs`` classes),
            'multilabel' ((N, C) 0/1) or 'regression' (float).
        groups: (N,) patient ids: the validation rows are whole patients (default: each row).
        encoder_variables: pretrained encoder (PCLRModel layout) to fine-tune; None: scratch.
    """
    ecgs = np.asarray(ecgs)
    n = len(ecgs)
    if n < 4:
        raise ValueError(f"{n} training ECGs are too few for a supervised baseline")
    if n_outputs is None:
        n_outputs = y.shape[1] if kind == "multilabel" else int(np.max(y)) + 1
    groups = np.arange(n) if groups is None else np.asarray(groups)
    splitter = GroupShuffleSplit(1, test_size=config.validation_fraction, random_state=config.seed)
    fit_rows, val_rows = next(splitter.split(np.zeros(n), groups=groups))
    target_mean, target_std = 0.0, 1.0
    targets = np.asarray(y)
    if kind == "regression":
        target_mean = float(targets[fit_rows].mean())
        target_std = float(targets[fit_rows].std()) or 1.0
        targets = (targets - target_mean) / target_std
    targets = targets.astype(np.int32 if kind == "multiclass" else np.float32)

    outputs = _n_network_outputs(kind, n_outputs)
    train_step, optimizer = _train_fn(
        model_config, outputs, kind, config.learning_rate, config.weight_decay
    )
    apply_eval = _eval_fn(model_config, outputs)
    rng = jax.random.key(config.seed)
    rng, init_rng = jax.random.split(rng)
    variables = init_supervised_variables(model_config, outputs, init_rng, encoder_variables)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = optimizer.init(params)
    batch_size = min(config.batch_size, len(fit_rows))
    order_rng = np.random.default_rng(config.seed)

    def val_loss(params, batch_stats) -> float:
        out = _outputs(
            apply_eval,
            {"params": params, "batch_stats": batch_stats},
            ecgs[val_rows],
            config.eval_batch_size,
        )
        return float(_loss(jnp.asarray(out), jnp.asarray(targets[val_rows]), kind))

    history = [{"epoch": 0, "train_loss": float("nan"), "val_loss": val_loss(params, batch_stats)}]
    best = (np.inf, 0, None)
    for epoch in range(1, config.max_epochs + 1):
        order = order_rng.permutation(fit_rows)
        losses = []
        for rows in _batches(len(order), batch_size, eval_batch=False):
            batch_rows = np.sort(order[rows])
            rng, step_rng = jax.random.split(rng)
            params, batch_stats, opt_state, loss = train_step(
                params,
                batch_stats,
                opt_state,
                jnp.asarray(ecgs[batch_rows], jnp.float32),
                jnp.asarray(targets[batch_rows]),
                step_rng,
            )
            losses.append(loss)
        batch_stats = recalibrated_batch_stats(
            model_config,
            outputs,
            {"params": params, "batch_stats": batch_stats},
            ecgs[fit_rows],
            batch_size,
        )
        current = val_loss(params, batch_stats)
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(jax.device_get(losses))),
                "val_loss": current,
            }
        )
        if progress:
            progress(
                f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, val {current:.4f}"
            )
        if current < best[0]:
            best = (current, epoch, jax.device_get((params, batch_stats)))
        elif epoch - best[1] >= config.patience:
            break
    kept_params, kept_stats = best[2]
    return SupervisedResult(
        model_config=model_config,
        kind=kind,
        n_outputs=outputs,
        variables={"params": kept_params, "batch_stats": kept_stats},
        target_mean=target_mean,
        target_std=target_std,
        history=history,
        best_epoch=best[1],
    )


def predict_supervised(
    result: SupervisedResult, ecgs: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Scores of a trained baseline for ``ecgs`` (N, S, L) mV, shaped as ``LinearProbe.scores``:
    binary (N,) P(positive); multiclass (N, C) probabilities; multilabel (N, C); regression (N,)
    in the target's units."""
    apply_eval = _eval_fn(result.model_config, result.n_outputs)
    outputs = _outputs(apply_eval, result.variables, np.asarray(ecgs), batch_size)
    scores = _scores(outputs, result.kind)
    if result.kind == "regression":
        return scores * result.target_std + result.target_mean
    return scores


def supervised_source(
    ecgs: np.ndarray,
    model_config: EncoderConfig,
    encoder_variables: dict | None = None,
    config: SupervisedConfig = SupervisedConfig(),
    progress: Callable[[str], None] | None = None,
):
    """A ``learning_curve`` source that trains the network on each training set: from scratch,
    or fine-tuned from ``encoder_variables``."""

    def fit_predict(train_rows, test_rows, y, groups, kind, n_outputs, seed):
        result = train_supervised(
            model_config,
            ecgs[train_rows],
            y[train_rows],
            kind,
            groups=groups[train_rows],
            n_outputs=n_outputs,
            encoder_variables=encoder_variables,
            config=dataclasses.replace(config, seed=seed),
            progress=progress,
        )
        return predict_supervised(result, ecgs[test_rows], config.eval_batch_size)

    return fit_predict


def embed_ecgs(
    model_config: EncoderConfig, variables: dict, ecgs: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Embeddings ``(N, embed_dim)`` float32 of ``ecgs`` (N, n_samples, n_leads) mV by the encoder
    in ``variables`` (PCLRModel layout; a head is ignored), in eval mode."""
    encoder_variables = {
        "params": variables["params"]["encoder"],
        "batch_stats": variables["batch_stats"]["encoder"],
    }
    return _outputs(_embed_fn(model_config), encoder_variables, np.asarray(ecgs), batch_size)


def random_init_embeddings(
    model_config: EncoderConfig, ecgs: np.ndarray, seed: int = 0, batch_size: int = 128
) -> np.ndarray:
    """The ``random_init`` baseline: embeddings of ``ecgs`` by a randomly initialised encoder."""
    variables = init_variables(model_config, jax.random.key(seed), with_head=False)
    wrapped = {
        "params": {"encoder": variables["params"]},
        "batch_stats": {"encoder": variables["batch_stats"]},
    }
    return embed_ecgs(model_config, wrapped, ecgs, batch_size)
