"""The conv / pool / batch-norm formulations (pclr_jax/model/conv.py, pclr_jax/model/batch_norm.py)
against
the reference ``lax.conv_general_dilated``, ``nn.max_pool`` and ``nn.BatchNorm``: values and
gradients, per layer and for the whole encoder."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from keras_reference import ODD, TINY

from pclr_jax.model import batch_norm, conv, dft_conv
from pclr_jax.model.encoder import EncoderConfig, PCLRModel, init_variables


def _reference_conv(x, kernel, stride):
    """lax 'SAME' (TensorFlow's padding rule), at full float32 precision."""
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride,),
        "SAME",
        dimension_numbers=("NWC", "WIO", "NWC"),
        precision=lax.Precision.HIGHEST,
    )


def _close(actual, expected, rtol=1e-5):
    """Max abs difference within ``rtol`` of the reference's largest magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


# The cases the accelerator check runs on the device (pytest -m device_check): the released
# model's stride-4 layer, the lead-II stride 2, odd lengths and a kernel that is not a multiple
# of the stride.
ON_DEVICE = pytest.mark.device_check


@pytest.mark.parametrize("impl", ["xla", "space_to_depth", "space_to_depth_grad"])
@pytest.mark.parametrize(
    "length,kernel,stride",
    [
        pytest.param(4096, 16, 4, marks=ON_DEVICE),
        (4096, 16, 1),
        pytest.param(2500, 16, 2, marks=ON_DEVICE),
        (1250, 16, 4),
        (1024, 16, 4),
        pytest.param(313, 16, 4, marks=ON_DEVICE),
        (79, 16, 4),
        (20, 16, 4),
        (1024, 1, 1),
        (313, 1, 4),
        (20, 5, 3),
        pytest.param(17, 7, 4, marks=ON_DEVICE),
        (9, 16, 4),
    ],
)
def test_conv_matches_lax_values_and_gradients(impl, length, kernel, stride):
    rng = np.random.default_rng(length * 31 + kernel * 7 + stride)
    x = jnp.asarray(rng.normal(size=(2, length, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, 6, 5)) / np.sqrt(kernel * 6), jnp.float32)
    out = -(-length // stride)
    g = jnp.asarray(rng.normal(size=(2, out, 5)), jnp.float32)

    def loss(f):
        return lambda x, w: jnp.sum(f(x, w) * g)

    # Jitted, as the model runs them: one compilation per program, not one per operation.
    actual = jax.jit(conv.conv1d, static_argnums=(2, 3))(x, w, stride, impl)
    expected = jax.jit(_reference_conv, static_argnums=2)(x, w, stride)
    assert actual.shape == (2, out, 5)
    _close(actual, expected)
    got = jax.jit(jax.grad(loss(lambda x, w: conv.conv1d(x, w, stride, impl)), (0, 1)))(x, w)
    want = jax.jit(jax.grad(loss(lambda x, w: _reference_conv(x, w, stride)), (0, 1)))(x, w)
    for a, e in zip(got, want, strict=True):
        _close(a, e)


@pytest.mark.parametrize("n,k,stride", [(4096, 16, 4), (2500, 16, 2), (313, 16, 4), (17, 7, 4)])
def test_space_to_depth_padding_is_tensorflow_same(n, k, stride):
    """out = ceil(n / s); pad_total = max((out - 1) s + k - n, 0); left = pad_total // 2."""
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    assert conv.same_padding(n, k, stride) == (total // 2, total - total // 2)
    assert conv.same_padding(4096, 16, 4) == (6, 6)
    assert conv.same_padding(4096, 16, 1) == (7, 8)


@pytest.mark.parametrize(
    "length,pool",
    [
        pytest.param(4096, 4, marks=ON_DEVICE),
        (2500, 2),
        (1250, 4),
        pytest.param(313, 4, marks=ON_DEVICE),
        (79, 4),
        (6, 4),
    ],
)
def test_max_pool_matches_flax_values_and_gradients(length, pool):
    rng = np.random.default_rng(length + pool)
    x = jnp.asarray(-rng.uniform(1.0, 2.0, size=(2, length, 3)), jnp.float32)  # all negative
    g = jnp.asarray(rng.normal(size=(2, -(-length // pool), 3)), jnp.float32)
    expected = nn.max_pool(x, (pool,), strides=(pool,), padding="SAME")
    grads = []
    for impl in ("xla", "space_to_depth", "space_to_depth_grad"):
        actual = jax.jit(conv.max_pool1d, static_argnums=(1, 2))(x, pool, impl)
        np.testing.assert_array_equal(actual, expected)
        pooled = lambda x, impl=impl: jnp.sum(conv.max_pool1d(x, pool, impl) * g)
        grads.append(jax.jit(jax.grad(pooled))(x))
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])


def _bn_apply(impl, x, variables, train, axis_name=None):
    module = batch_norm.batch_norm(impl, 0.9, 1e-3, x.dtype, axis_name, "bn")
    return module.apply(variables, x, use_running_average=not train, mutable=["batch_stats"])


@pytest.mark.parametrize("train", [True, False])
def test_fused_batch_norm_matches_flax(train):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(loc=0.5, scale=2.0, size=(4, 40, 6)), jnp.float32)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    shapes = {}
    for impl in ("flax", "fused"):
        v = batch_norm.batch_norm(impl, 0.9, 1e-3, jnp.float32, None, "bn").init(
            jax.random.key(0), x, use_running_average=True
        )
        shapes[impl] = jax.tree.map(lambda a: (a.shape, a.dtype, float(a.sum())), v)
    assert shapes["flax"] == shapes["fused"]
    variables = {
        "params": {
            "scale": jnp.asarray(rng.uniform(0.5, 1.5, 6), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=6), jnp.float32),
        },
        "batch_stats": {
            "mean": jnp.asarray(rng.normal(size=6), jnp.float32),
            "var": jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32),
        },
    }
    (y_ref, st_ref), (y, st) = (_bn_apply(i, x, variables, train) for i in ("flax", "fused"))
    _close(y, y_ref)
    for a, e in zip(jax.tree.leaves(st), jax.tree.leaves(st_ref), strict=True):
        _close(a, e)

    def loss(impl):
        return lambda x, p: jnp.sum(_bn_apply(impl, x, {**variables, "params": p}, train)[0] * g)

    got = jax.grad(loss("fused"), (0, 1))(x, variables["params"])
    want = jax.grad(loss("flax"), (0, 1))(x, variables["params"])
    for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        _close(a, e, rtol=1e-4)


def test_fused_batch_norm_averages_statistics_over_axis_name():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 10, 4)), jnp.float32)
    variables = batch_norm.FusedBatchNorm().init(jax.random.key(0), x[0], True)
    outs = {
        impl: jax.vmap(
            lambda xi, impl=impl: _bn_apply(impl, xi, variables, True, "d"), axis_name="d"
        )(x)
        for impl in ("flax", "fused")
    }
    for a, e in zip(jax.tree.leaves(outs["fused"]), jax.tree.leaves(outs["flax"]), strict=True):
        _close(a, e)


# The XLA formulations ("onednn", a custom call needing the cpu-onednn extra, is checked against
# "xla" in tests/test_onednn_conv.py).
XLA_CONV_IMPLS = tuple(i for i in conv.CONV_IMPLS[1:] if i != "onednn")
IMPLS = set(itertools.product(XLA_CONV_IMPLS, batch_norm.NORM_IMPLS[1:]))
REFERENCE_IMPLS = ("xla", "flax")
LEAD_II_STRIDES = EncoderConfig(
    n_samples=2500,
    unit_samples=(1250, 313, 79, 20),
    unit_filters=(8, 8, 16, 16),
    stem_filters=8,
    head_sizes=(16,),
)
# Wide enough (32+ channels into stride-1 convolutions) for "dft" to take its own path.
WIDE = EncoderConfig(
    n_samples=256,
    unit_samples=(256, 64, 16, 4),
    unit_filters=(32, 40, 40, 48),
    stem_filters=32,
    head_sizes=(16,),
)
# Each encoder against the reference formulation with a share of the others (each of them
# compiled twice per encoder, the whole cost of this test): every conv and every batch-norm
# formulation on every encoder, every combination of the two on at least one.
ENCODER_CASES = {
    "tiny": (TINY, (("space_to_depth", "fused"), ("space_to_depth_grad", "flax"))),
    "odd": (ODD, (("space_to_depth", "flax"), ("space_to_depth_grad", "fused"))),
    "lead_ii_strides": (
        LEAD_II_STRIDES,
        (("xla", "fused"), ("space_to_depth", "fused"), ("space_to_depth_grad", "flax")),
    ),
    "wide": (WIDE, (("dft", "fused"), ("dft", "flax"))),
}
# "dft" on the narrow encoders would be "space_to_depth" (dft_conv.applies): only "wide" has it.
NARROW_CASES = ("tiny", "odd", "lead_ii_strides")


def test_encoder_cases_cover_every_combination():
    covered = {REFERENCE_IMPLS} | {i for _, impls in ENCODER_CASES.values() for i in impls}
    assert covered == IMPLS
    for name, (_, impls) in ENCODER_CASES.items():
        conv_impls = set(XLA_CONV_IMPLS) - {"dft"} if name in NARROW_CASES else {"xla", "dft"}
        assert {c for c, _ in impls} | {"xla"} == conv_impls
        assert {n for _, n in impls} | {"flax"} == set(batch_norm.NORM_IMPLS[1:])


@pytest.mark.parametrize("case", list(ENCODER_CASES))
def test_encoder_outputs_and_gradients_agree_across_impls(case):
    """Same parameters (tree, shapes, initial values) and, in training mode, the same
    embeddings, projections, batch statistics and gradients for every formulation."""
    base, impls = ENCODER_CASES[case]
    base = base.replace(dropout=0.0)
    x = np.random.default_rng(0).normal(size=(3, base.n_samples, base.n_leads)).astype(np.float32)
    results = {}
    for conv_impl, norm_impl in (REFERENCE_IMPLS, *impls):
        config = base.replace(conv_impl=conv_impl, norm_impl=norm_impl)
        variables = init_variables(config, jax.random.key(0))
        model = PCLRModel(config)

        def loss(params, variables=variables, model=model):
            (embed, proj), upd = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.sum(proj**2) + jnp.sum(jnp.sin(embed)), (embed, proj, upd)

        (_, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        evaluated = jax.jit(model.apply)(variables, x)
        results[(conv_impl, norm_impl)] = (variables, aux, grads, evaluated)
    ref_vars, ref_aux, ref_grads, ref_eval = results[REFERENCE_IMPLS]
    for key, (variables, aux, grads, evaluated) in results.items():
        assert jax.tree.structure(variables) == jax.tree.structure(ref_vars), key
        for a, e in zip(jax.tree.leaves(variables), jax.tree.leaves(ref_vars), strict=True):
            np.testing.assert_array_equal(a, e)
        for a, e in zip(
            jax.tree.leaves((aux, evaluated)), jax.tree.leaves((ref_aux, ref_eval)), strict=True
        ):
            _close(a, e, rtol=2e-5)
        for a, e in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            _close(a, e, rtol=1e-4)


def test_auto_resolves_per_backend_as_the_table_says(xla_auto):
    """CPU measured (docs/speed_cpu.md); GPU and TPU the plain lax convolution until the
    accelerator check has measured them; a backend not in the table gets the fallback."""
    assert conv.AUTO_IMPL == {
        "cpu": ("space_to_depth", "xla"),
        "gpu": ("xla", "xla"),
        "tpu": ("xla", "xla"),
    }
    assert conv.AUTO_FALLBACK == ("xla", "xla")
    for backend in ("cpu", "gpu", "tpu", "some_new_backend"):
        training, inference = conv.AUTO_IMPL.get(backend, conv.AUTO_FALLBACK)
        assert conv.resolve_impl("auto", train=True, backend=backend) == training
        assert conv.resolve_impl("auto", train=False, backend=backend) == inference
        assert conv.resolve_impl("space_to_depth_grad", True, backend) == "space_to_depth_grad"


def _convs(jaxpr):
    """Every ``conv_general_dilated`` equation of a jaxpr, nested jaxprs included."""
    import jax.extend

    found = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "conv_general_dilated"]
    for eqn in jaxpr.eqns:
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _convs(sub)
    return found


@pytest.mark.parametrize(
    "c_in,k,stride,via_dft",
    [(32, 16, 1, True), (12, 16, 1, False), (64, 1, 1, False), (64, 4, 1, False)]
    + [(64, 16, 4, False)],
)
def test_conv_impl_dft_routes_by_layer(c_in, k, stride, via_dft):
    """``conv_impl="dft"``: stride-1 layers with enough taps and channels by DFTs (no lax
    convolution in the program); the others as "space_to_depth_grad"; values as lax's either
    way."""
    assert dft_conv.applies(100, c_in, k, stride) == via_dft
    rng = np.random.default_rng(c_in + k)
    x = jnp.asarray(rng.normal(size=(2, 100, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, c_in, 8)) / np.sqrt(k * c_in), jnp.float32)

    def f(x, w):
        return conv.conv1d(x, w, stride, "dft")

    assert (not _convs(jax.make_jaxpr(f)(x, kernel).jaxpr)) == via_dft
    _close(jax.jit(f)(x, kernel), _reference_conv(x, kernel, stride))


def test_auto_programs_follow_the_table_on_this_backend(xla_auto):
    """In the programs themselves: on CPU, "auto" trains the stride-4 layers without the
    lhs-dilated input-gradient convolution that "xla" has (space-to-depth), and infers with the
    strided lax convolution."""
    assert jax.default_backend() == "cpu"
    config = EncoderConfig(
        n_samples=256, unit_samples=(64, 16, 4, 1), unit_filters=(8, 8, 8, 8), stem_filters=8
    )
    x = jnp.ones((2, 256, 12), jnp.float32)

    variables = init_variables(config, jax.random.key(0))

    def train_convs(impl):
        model = PCLRModel(config.replace(conv_impl=impl))

        def loss(params):
            out, _ = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(out[1])

        return _convs(jax.make_jaxpr(jax.grad(loss))(variables["params"]).jaxpr)

    dilated = {
        impl: [e for e in train_convs(impl) if max(e.params["lhs_dilation"]) > 1]
        for impl in ("auto", "xla")
    }
    assert dilated["auto"] == [] and len(dilated["xla"]) == 4  # one per strided unit conv
    model = PCLRModel(config.replace(conv_impl="auto"))
    inference = _convs(jax.make_jaxpr(lambda v: model.apply(v, x))(variables).jaxpr)
    assert sum(e.params["window_strides"] == (4,) for e in inference) == 4


def test_config_fields_validate_and_round_trip():
    auto = (conv.auto_impl(train=True), conv.auto_impl(train=False))
    assert (conv.resolve_impl("auto"), conv.resolve_impl("auto", train=False)) == auto
    assert batch_norm.resolve_impl("auto") == batch_norm.AUTO_IMPL.get(
        jax.default_backend(), "flax"
    )
    config = EncoderConfig(conv_impl="space_to_depth", norm_impl="fused")
    assert EncoderConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in EncoderConfig().to_dict().items() if not k.endswith("_impl")}
    assert EncoderConfig.from_dict(old) == EncoderConfig()  # configs saved before the fields
    with pytest.raises(ValueError, match="conv_impl"):
        EncoderConfig(conv_impl="im2col")
    with pytest.raises(ValueError, match="norm_impl"):
        EncoderConfig(norm_impl="welford")
