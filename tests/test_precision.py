"""Precision on accelerators, checked in the compiled programs' jaxprs (the CPU computes float32
at full precision whatever is asked, so values cannot show it): the losses' similarities and the
projection head at HIGHEST, the head in float32 under bfloat16 compute, the encoder's conv
precision from its config, float16 training refused; and the dense loss chunking by itself."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from multihost_worker import TINY as TINY_FIELDS

from pclr_jax.losses import get_loss, similarity
from pclr_jax.losses.similarity import auto_chunk_size, contrastive_row_stats
from pclr_jax.model.encoder import EncoderConfig, PCLRModel, init_variables

TINY = EncoderConfig(**TINY_FIELDS)
HIGHEST = jax.lax.Precision.HIGHEST


def _equations(jaxpr, name):
    """Every equation called ``name`` in a closed jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _equations(sub, name)
    return found


def _precision(eqn):
    precision = eqn.params["precision"]
    return precision[0] if isinstance(precision, tuple) else precision


@pytest.mark.parametrize("loss_name", ["ntxent", "patient_supcon", "cmsc", "siglip", "vicreg"])
def test_loss_similarities_and_their_gradients_run_at_highest_precision(loss_name):
    loss = get_loss(loss_name)
    params = loss.init_params() if hasattr(loss, "init_params") else {}
    z = jnp.ones((8, 16), jnp.float32)
    ids = jnp.arange(8, dtype=jnp.int32)

    def value(z_a, z_b):
        return loss(z_a, z_b, ids, params)[0]

    jaxpr = jax.make_jaxpr(jax.value_and_grad(value, argnums=(0, 1)))(z, z * 2.0)
    dots = _equations(jaxpr.jaxpr, "dot_general")
    assert dots, "no matrix product found"
    assert all(_precision(eqn) == HIGHEST for eqn in dots), [_precision(e) for e in dots]


def _model_jaxpr(config):
    variables = init_variables(config, jax.random.key(0))
    ecg = jnp.ones((2, config.n_samples, config.n_leads), jnp.float32)
    return jax.make_jaxpr(lambda v, x: PCLRModel(config).apply(v, x))(variables, ecg).jaxpr


def test_head_is_float32_at_highest_precision_under_bfloat16_compute():
    # lax convolutions ("auto" may take oneDNN's custom call for bf16: tests/test_onednn_conv.py)
    jaxpr = _model_jaxpr(TINY.replace(dtype="bfloat16", conv_impl="xla"))
    convs = _equations(jaxpr, "conv_general_dilated")
    assert convs and all(eqn.invars[0].aval.dtype == jnp.bfloat16 for eqn in convs)
    dots = _equations(jaxpr, "dot_general")
    assert len(dots) == len(TINY.head_sizes)
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.float32, jnp.float32]
        assert _precision(eqn) == HIGHEST


@pytest.mark.parametrize("precision", ["default", "high", "highest"])
def test_encoder_conv_precision_follows_the_config(precision, xla_auto):
    """ "default" asks lax for no precision, so JAX's default applies and
    ``jax.default_matmul_precision`` raises it (the suite's device runs: tests/conftest.py);
    "high" and "highest" are asked for explicitly and win over it."""
    config = TINY.replace(precision=precision)
    explicit = None if precision == "default" else jax.lax.Precision(precision)
    with jax.default_matmul_precision("default"):
        convs = _equations(_model_jaxpr(config), "conv_general_dilated")
    assert {_precision(eqn) for eqn in convs} == {explicit or jax.lax.Precision.DEFAULT}
    with jax.default_matmul_precision("highest"):
        convs = _equations(_model_jaxpr(config), "conv_general_dilated")
    assert {_precision(eqn) for eqn in convs} == {explicit or HIGHEST}


def test_unknown_precision_and_float16_training_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        TINY.replace(precision="tf32")
    import optax

    from pclr_jax.runtime.distributed import make_mesh
    from pclr_jax.step.train_step import make_train_step

    with pytest.raises(ValueError, match="without loss scaling"):
        make_train_step(
            TINY.replace(dtype="float16"),
            get_loss("ntxent"),
            optax.sgd(0.1),
            make_mesh(jax.devices()[:1]),
        )


def test_auto_chunk_size_threshold():
    limit = similarity.DENSE_MAX_ELEMENTS
    assert limit == 2**26
    assert auto_chunk_size(8192, 8192) is None  # 2**26 logits: still dense
    assert auto_chunk_size(8192, 8193) == 8192
    assert auto_chunk_size(16384, 16384) == 4096
    assert auto_chunk_size(1000, 10**6) == 65536  # largest power of two <= 2**26 // 1000
    assert auto_chunk_size(3, 10, max_elements=2) == 1


def test_dense_loss_switches_to_chunks_above_the_threshold(monkeypatch):
    rng = np.random.default_rng(0)
    queries = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    keys = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    ids = jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)
    key_ids = jnp.asarray(rng.integers(0, 3, 10), jnp.int32)

    def mean_nll_fn(chunk_size=None):
        # a fresh function per call: make_jaxpr caches traces per function object
        def mean_nll(q, k):
            stats = contrastive_row_stats(
                q, k, ids, key_ids, temperature=0.5, chunk_size=chunk_size
            )
            return jnp.mean(stats.mean_positive_nll())

        return mean_nll

    def has_scan(fn):
        return bool(_equations(jax.make_jaxpr(fn)(queries, keys).jaxpr, "scan"))

    dense_value, dense_grads = jax.value_and_grad(mean_nll_fn(), argnums=(0, 1))(queries, keys)
    assert not has_scan(mean_nll_fn())

    monkeypatch.setattr(similarity, "DENSE_MAX_ELEMENTS", 6 * 4)  # 6 x 10 logits: too many
    assert has_scan(mean_nll_fn())
    assert not has_scan(mean_nll_fn(chunk_size=0))  # 0 forces the dense path
    value, grads = jax.value_and_grad(mean_nll_fn(), argnums=(0, 1))(queries, keys)
    np.testing.assert_allclose(value, dense_value, rtol=1e-6)
    for grad, dense_grad in zip(grads, dense_grads, strict=True):
        np.testing.assert_allclose(grad, dense_grad, rtol=1e-5, atol=1e-7)
