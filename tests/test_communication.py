"""Collectives of the compiled sharded train step (parsed from its HLO) against the analytic model
of ``pclr_jax.benchmarking.communication``: two independent derivations of the bytes a step
communicates."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from pclr_jax.benchmarking import communication
from pclr_jax.model.encoder import EncoderConfig, init_variables
from pclr_jax.runtime.distributed import make_mesh

# Small enough to compile in seconds; unit 0 keeps its width (no skip convolution), unit 1 widens.
# The kernel size is a multiple of the strides, as in the released models (see expected_bytes).
TINY = EncoderConfig(
    n_samples=64,
    unit_samples=(16, 4),
    unit_filters=(8, 16),
    stem_filters=8,
    kernel_size=4,
    head_sizes=(16, 12),
)


def _compiled_step(config, n_devices, pairs_per_device, sync_batch_norm):
    """The HLO text of the compiled train step (abstract inputs: nothing runs)."""
    mesh = make_mesh(jax.devices()[:n_devices])
    return communication.compiled_step_hlo(
        config, mesh, pairs_per_device * n_devices, sync_batch_norm=sync_batch_norm
    )


def _assert_bytes_match(measured, expected):
    for kind in communication.KINDS:
        for field in ("operand_bytes", "result_bytes"):
            assert measured[kind][field] == expected["totals"][kind][field], (
                kind,
                field,
                communication.format_table(measured, expected),
            )
        assert measured[kind]["ring_bytes"] == pytest.approx(expected["totals"][kind]["ring_bytes"])


def test_parameter_count_matches_the_model():
    for config in (TINY, EncoderConfig()):
        variables = jax.eval_shape(lambda c=config: init_variables(c, jax.random.key(0)))
        n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
        assert communication.parameter_count(config) == n_params
        stats = sum(x.size for x in jax.tree.leaves(variables["batch_stats"]))
        assert stats == 2 * sum(communication.batch_norm_channels(config))
    # The released size: 6,600,352 with batch statistics (Keras' count), 6,596,624 trainable.
    assert communication.parameter_count(EncoderConfig()) == 6_596_624


@pytest.mark.parametrize(
    "config, n_devices, pairs_per_device, sync_batch_norm",
    [
        (TINY, 8, 2, True),
        (TINY, 8, 2, False),
        (TINY.replace(dtype="bfloat16"), 4, 3, True),
        (TINY.replace(conv_impl="xla", norm_impl="flax"), 8, 2, True),
        (TINY.replace(conv_impl="space_to_depth", norm_impl="fused"), 8, 2, True),
    ],
    ids=["global-bn-8", "per-device-bn-8", "global-bn-bf16-4", "xla-flax-8", "s2d-fused-8"],
)
def test_compiled_step_communicates_the_modelled_bytes(
    config, n_devices, pairs_per_device, sync_batch_norm
):
    text = _compiled_step(config, n_devices, pairs_per_device, sync_batch_norm)
    measured = communication.collective_bytes(text)
    expected = communication.expected_bytes(
        config, pairs_per_device, n_devices, sync_batch_norm=sync_batch_norm
    )
    _assert_bytes_match(measured, expected)

    collectives = communication.parse_collectives(text)
    assert {c.group_size for c in collectives} == {n_devices}
    # Everything communicated is float32, bf16 compute included.
    assert {d for c in collectives for d in c.dtypes} == {"f32"}
    # The projections of both views are gathered (and their cotangents scattered) one by one.
    assert measured["all-gather"]["count"] == measured["reduce-scatter"]["count"] == 2
    assert measured["all-to-all"]["count"] == measured["collective-permute"]["count"] == 0

    # Batch-norm statistics are exchanged in the forward pass only with global batch norm. (XLA
    # combines the backward all-reduces into tuples, so only the forward ones keep their names.)
    forward_bn = [
        c for c in collectives if "jvp(PCLRModel)" in c.op_name and "transpose" not in c.op_name
    ]
    channels = communication.batch_norm_channels(config)
    if sync_batch_norm:
        assert sorted(c.operand_bytes for c in forward_bn) == sorted(4 * 2 * c for c in channels)
    else:
        assert forward_bn == []
        # Per-device statistics: all that is all-reduced is the gradient, two scalars and the
        # running statistics, and XLA sends it as one combined all-reduce.
        assert measured["all-reduce"]["count"] == 1


def test_loop_trip_counts_multiply():
    """A collective inside a scan's while loop counts once per iteration."""
    mesh = make_mesh()

    def per_device(x):
        def body(carry, _):
            return carry + lax.psum(carry, "data"), None

        return lax.scan(body, x, None, length=3)[0]

    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P("data")))
    text = fn.lower(jnp.ones((mesh.size, 5), jnp.float32)).compile().as_text()
    measured = communication.collective_bytes(text)
    assert measured["all-reduce"]["count"] == 3
    assert measured["all-reduce"]["operand_bytes"] == 3 * 5 * 4


# The asynchronous forms GPU and TPU programs use: -start/-done pairs and async wrappers.
ASYNC_HLO = """HloModule async_example

%wrapped_reduce_scatter (p: f32[8,4]) -> f32[1,4] {
  %p = f32[8,4]{1,0} parameter(0)
  ROOT %rs = f32[1,4] reduce-scatter(%p), replica_groups=[1,8]<=[8], dimensions={0}, to_apply=%add
}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[1,4], y: f32[8,4]) -> (f32[8,4], f32[1,4], f32[1,4]) {
  %x = f32[1,4]{1,0} parameter(0)
  %y = f32[8,4]{1,0} parameter(1)
  %ag-start = (f32[1,4], f32[8,4]) all-gather-start(%x), replica_groups=[1,8]<=[8], dimensions={0}
  %ag-done = f32[8,4]{1,0} all-gather-done(%ag-start)
  %ar-start = f32[1,4]{1,0} all-reduce-start(%x), replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
  %ar-done = f32[1,4]{1,0} all-reduce-done(%ar-start)
  %rs-start = ((f32[8,4]{1,0}), f32[1,4]{1,0}) async-start(%y), calls=%wrapped_reduce_scatter
  %rs-done = f32[1,4]{1,0} async-done(%rs-start), calls=%wrapped_reduce_scatter
  ROOT %t = (f32[8,4]{1,0}, f32[1,4]{1,0}, f32[1,4]{1,0}) tuple(%ag-done, %ar-done, %rs-done)
}
"""


def test_async_collectives_count_once():
    measured = communication.collective_bytes(ASYNC_HLO)
    assert measured["all-gather"] == dict(
        count=1, operand_bytes=16, result_bytes=128, ring_bytes=7 / 8 * 128
    )
    assert measured["all-reduce"]["count"] == 1
    assert measured["all-reduce"]["result_bytes"] == 16
    assert measured["reduce-scatter"]["count"] == 1
    assert measured["reduce-scatter"]["operand_bytes"] == 128
    assert measured["reduce-scatter"]["result_bytes"] == 16


def test_shape_bytes():
    assert communication.shape_bytes("f32[2,8]{1,0}") == 64
    assert communication.shape_bytes("(f32[1,1,8]{2,1,0}, bf16[3]{0}, s32[])") == 32 + 6 + 4
    assert communication.shape_bytes("token[]") == 0
