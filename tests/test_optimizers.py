"""Learning-rate scaling and schedules against hand-computed values; decay masks; clipping."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pclr_jax.step.optimizers import (
    current_learning_rate,
    decay_mask,
    make_optimizer,
    make_schedule,
    scaled_learning_rate,
)


def _opt_cfg(**overrides) -> ml_collections.ConfigDict:
    values = dict(
        name="adam",
        learning_rate=0.1,
        lr_scaling="none",
        base_batch_pairs=256,
        warmup_steps=10,
        schedule="cosine",
        weight_decay=0.0,
        grad_clip_norm=None,
        b1=0.9,
        b2=0.999,
        eps=1e-7,
    )
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def _params() -> dict:
    """A miniature of the train state's params: a conv kernel, BN scale/bias, a dense layer and
    SigLIP-like loss parameters."""
    return {
        "model": {
            "encoder": {
                "stem_conv": {"kernel": jnp.full((3, 2, 4), 2.0)},
                "stem_bn": {"scale": jnp.full((4,), 1.5), "bias": jnp.full((4,), 0.5)},
            },
            "head": {"dense_0": {"kernel": jnp.full((4, 4), -1.0), "bias": jnp.full((4,), 0.3)}},
        },
        "loss": {"log_temperature": jnp.asarray(2.3), "bias": jnp.asarray(-10.0)},
    }


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [("none", 0.3), ("linear", 0.3 * 4096 / 256), ("sqrt", 0.3 * 4.0)],
)
def test_scaled_learning_rate(scaling, expected):
    # SimCLR's LARS rule: 0.3 x B / 256 at B = 4096 pairs is 4.8; the square-root rule gives 1.2.
    assert scaled_learning_rate(0.3, 4096, scaling, 256) == pytest.approx(expected)


def test_scaled_learning_rate_rejects_unknown_rule():
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_learning_rate(0.3, 4096, "quadratic", 256)


def test_warmup_cosine_schedule_hand_computed():
    schedule = make_schedule(1.0, warmup_steps=10, total_steps=110, schedule="cosine")
    expected = {
        0: 0.0,
        5: 0.5,
        10: 1.0,
        35: 0.5 * (1 + math.cos(math.pi * 25 / 100)),
        60: 0.5,
        85: 0.5 * (1 + math.cos(math.pi * 75 / 100)),
        110: 0.0,
        200: 0.0,
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), step


def test_constant_schedule_with_and_without_warmup():
    warm = make_schedule(2.0, warmup_steps=4, total_steps=100, schedule="constant")
    assert [float(warm(s)) for s in (0, 1, 2, 4, 50, 99)] == pytest.approx(
        [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]
    )
    flat = make_schedule(2.0, warmup_steps=0, total_steps=100, schedule="constant")
    assert float(flat(0)) == 2.0


def test_schedule_rejects_warmup_longer_than_run():
    with pytest.raises(ValueError, match="warmup_steps"):
        make_schedule(1.0, warmup_steps=100, total_steps=100, schedule="cosine")


def test_make_optimizer_scales_and_reports_learning_rate():
    cfg = _opt_cfg(lr_scaling="linear", warmup_steps=2, schedule="constant")
    optimizer, schedule = make_optimizer(cfg, global_batch_pairs=1024, total_steps=10)
    assert float(schedule(2)) == pytest.approx(0.4)
    params = _params()
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    used = []
    for _ in range(3):
        _, state = optimizer.update(grads, state, params)
        used.append(float(current_learning_rate(state)))
    # The state reports the rate of the update just made: steps 0, 1, 2 of the schedule.
    assert used == pytest.approx([0.0, 0.2, 0.4])


def test_decay_mask_selects_kernels_only():
    mask = decay_mask(_params())
    assert mask["model"]["encoder"]["stem_conv"]["kernel"] is True
    assert mask["model"]["head"]["dense_0"]["kernel"] is True
    assert mask["model"]["encoder"]["stem_bn"] == {"scale": False, "bias": False}
    assert mask["model"]["head"]["dense_0"]["bias"] is False
    assert mask["loss"] == {"log_temperature": False, "bias": False}


@pytest.mark.parametrize("name", ["adamw", "lars", "lamb"])
def test_weight_decay_spares_batch_norm_biases_and_loss_params(name):
    """With zero gradients only weight decay moves parameters: kernels shrink, the rest stays."""
    cfg = _opt_cfg(name=name, weight_decay=0.1, warmup_steps=0, schedule="constant")
    optimizer, _ = make_optimizer(cfg, global_batch_pairs=256, total_steps=10)
    params = _params()
    updates, _ = optimizer.update(
        jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params
    )
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    for path, update in flat:
        is_kernel = path[-1].key == "kernel"
        if is_kernel:
            # Decay pulls the weight towards 0: the update has the opposite sign of the weight.
            weight = params
            for key in path:
                weight = weight[key.key]
            assert np.all(np.sign(np.asarray(update)) == -np.sign(np.asarray(weight))), path
        else:
            assert np.all(np.asarray(update) == 0.0), path


def test_adamw_decay_is_decoupled_and_hand_computed():
    # Zero gradient: Adam's part is 0, so the update is exactly -lr * wd * w on kernels.
    cfg = _opt_cfg(name="adamw", weight_decay=0.1, warmup_steps=0, schedule="constant")
    optimizer, _ = make_optimizer(cfg, global_batch_pairs=256, total_steps=10)
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    kernel = updates["model"]["encoder"]["stem_conv"]["kernel"]
    np.testing.assert_allclose(kernel, -0.1 * 0.1 * 2.0, rtol=1e-6)


def test_gradient_clipping_by_global_norm():
    """Adam with a huge eps is linear in the gradient (update ~ -lr g / eps), exposing clipping."""
    cfg = _opt_cfg(eps=1e6, b1=0.0, b2=0.0, grad_clip_norm=1.0, warmup_steps=0, schedule="constant")
    optimizer, _ = make_optimizer(cfg, global_batch_pairs=256, total_steps=10)
    params = {"w": jnp.zeros((4,))}
    grads = {"w": jnp.asarray([30.0, 40.0, 0.0, 0.0])}  # global norm 50
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * np.array([0.6, 0.8, 0, 0]) / 1e6, rtol=1e-5)


def test_adam_rejects_weight_decay():
    with pytest.raises(ValueError, match="adamw"):
        make_optimizer(_opt_cfg(weight_decay=0.1), 256, 10)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer name"):
        make_optimizer(_opt_cfg(name="sgd"), 256, 10)
