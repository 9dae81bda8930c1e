"""Single-device tests of the loss library against independent NumPy (float64) transcriptions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_expit, logsumexp

from pclr_jax.losses import LOSSES, get_loss, register

RTOL = 1e-5  # float32 JAX against float64 NumPy


def _views(n_pairs, dim, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z_a = rng.normal(size=(n_pairs, dim)).astype(np.float32) * scale
    z_b = (z_a + rng.normal(size=(n_pairs, dim)).astype(np.float32) * scale).astype(np.float32)
    return z_a, z_b


def _ids_with_repeats(n_pairs, n_patients, seed=1):
    return np.random.default_rng(seed).integers(0, n_patients, n_pairs).astype(np.int32)


def _normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))


# ---------------------------------------------------------------- NumPy references


def ml4h_simclr_reference(z_a, z_b, temperature=0.1):
    """ml4h's simclr_loss and simclr_accuracy (PCLR/build_model.py) transcribed to float64 NumPy."""
    hidden = _normalize(np.concatenate([z_a, z_b]))
    h1, h2 = np.split(hidden, 2)
    n = len(h1)
    labels = np.eye(n, 2 * n)
    masks = np.eye(n)
    logits_aa = h1 @ h1.T / temperature - masks * 1e9
    logits_bb = h2 @ h2.T / temperature - masks * 1e9
    logits_ab = h1 @ h2.T / temperature
    logits_ba = h2 @ h1.T / temperature

    def softmax_cross_entropy(onehot, logits):
        log_p = logits - logsumexp(logits, axis=1, keepdims=True)
        return -np.mean(np.sum(onehot * log_p, axis=1))

    rows_a = np.concatenate([logits_ab, logits_aa], 1)
    rows_b = np.concatenate([logits_ba, logits_bb], 1)
    loss = softmax_cross_entropy(labels, rows_a) + softmax_cross_entropy(labels, rows_b)
    accuracy = (
        np.mean(rows_a.argmax(1) == np.arange(n)) + np.mean(rows_b.argmax(1) == np.arange(n))
    ) / 2
    return loss, accuracy


def supcon_reference(z_a, z_b, ids, temperature=0.1):
    """Explicit loops over anchors and positives (SupCon L_out by patient), directions summed."""
    h = _normalize(np.concatenate([z_a, z_b]))
    pid = np.concatenate([ids, ids])
    n2 = len(h)
    n = len(z_a)
    per_anchor, correct = [], []
    for i in range(n2):
        # ml4h's column order (the other view first), which decides ties: max() keeps the first.
        order = [*range(n, n2), *range(n)] if i < n else list(range(n2))
        others = [k for k in order if k != i]
        logits = {k: h[i] @ h[k] / temperature for k in others}
        log_norm = logsumexp([logits[k] for k in others])
        positives = [k for k in others if pid[k] == pid[i]]
        per_anchor.append(-np.mean([logits[p] - log_norm for p in positives]))
        correct.append(pid[max(others, key=lambda k: logits[k])] == pid[i])
    return 2 * np.mean(per_anchor), np.mean(correct)


def cmsc_reference(z_a, z_b, ids, temperature=0.1):
    """Cross-view multi-positive InfoNCE in float64 with logsumexp, by loops over anchors."""
    h_a, h_b = _normalize(z_a), _normalize(z_b)
    terms, correct = [], []
    for queries, keys in ((h_a, h_b), (h_b, h_a)):
        per_anchor, hits = [], []
        for i in range(len(queries)):
            logits = keys @ queries[i] / temperature
            log_p = logits - logsumexp(logits)
            same = ids == ids[i]
            per_anchor.append(-np.mean(log_p[same]))
            hits.append(same[np.argmax(logits)])
        terms.append(np.mean(per_anchor))
        correct.append(np.mean(hits))
    return np.mean(terms), np.mean(correct)


def clocs_cmsc_distinct_patients(z_a, z_b, temperature=0.1, dtype=np.float64):
    """CLOCS' own formula (exp of similarities), distinct patients: (loss_diag1 + loss_diag2)/2."""
    v1, v2 = np.asarray(z_a, dtype), np.asarray(z_b, dtype)
    norms = np.outer(np.linalg.norm(v1, axis=1), np.linalg.norm(v2, axis=1))
    with np.errstate(over="ignore", invalid="ignore"):
        sim = np.exp((v1 @ v2.T) / (norms * dtype(temperature)))
        diag = np.diag(sim)
        loss_diag1 = -np.mean(np.log(diag / sim.sum(1)))
        loss_diag2 = -np.mean(np.log(diag / sim.sum(0)))
    return (loss_diag1 + loss_diag2) / 2


def siglip_reference(z_a, z_b, ids, log_temperature, bias):
    x, y = _normalize(z_a), _normalize(z_b)
    logits = np.exp(log_temperature) * x @ y.T + bias
    signs = np.where(ids[:, None] == ids[None, :], 1.0, -1.0)
    return -np.sum(log_expit(signs * logits)) / len(x)


def siglip_accuracy_reference(z_a, z_b, ids):
    """The arg-max (first maximum) view-b column of each a-row is the same patient."""
    similarities = _normalize(z_a) @ _normalize(z_b).T
    return np.mean(ids[similarities.argmax(1)] == ids)


def siglip_reference_grad(z_a, z_b, ids, log_temperature, bias):
    """Analytic d loss / d (log_temperature, bias) of the reference."""
    x, y = _normalize(z_a), _normalize(z_b)
    sims = x @ y.T
    logits = np.exp(log_temperature) * sims + bias
    signs = np.where(ids[:, None] == ids[None, :], 1.0, -1.0)
    # d/dl [-log sigmoid(s l)] = -s (1 - sigmoid(s l))
    dlogits = -signs * (1.0 - expit(signs * logits)) / len(x)
    return np.sum(dlogits * np.exp(log_temperature) * sims), np.sum(dlogits)


def vicreg_reference(z_a, z_b, eps=1e-4):
    x, y = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    invariance = np.mean((x - y) ** 2)
    variance = covariance = 0.0
    for v in (x, y):
        cov = np.cov(v, rowvar=False)  # unbiased
        variance += np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.diag(cov) + eps))) / 2
        off = cov - np.diag(np.diag(cov))
        covariance += np.sum(off**2) / v.shape[1]
    return 25 * invariance + 25 * variance + covariance, (invariance, variance, covariance)


def _call(name, z_a, z_b, ids, **hparams):
    loss_fn = get_loss(name, **hparams)
    loss, metrics = jax.jit(loss_fn)(z_a, z_b, ids, loss_fn.init_params())
    return float(loss), {k: float(v) for k, v in metrics.items()}


def _value_and_grads(name, z_a, z_b, ids, with_metrics=False, **hparams):
    """``loss, (d/dz_a, d/dz_b, d/dloss_params)`` (and the metrics) from one jitted call."""
    loss_fn = get_loss(name, **hparams)
    fn = jax.jit(
        jax.value_and_grad(lambda a, b, p: loss_fn(a, b, ids, p), argnums=(0, 1, 2), has_aux=True)
    )
    (loss, metrics), grads = fn(jnp.asarray(z_a), jnp.asarray(z_b), loss_fn.init_params())
    if with_metrics:
        return loss, grads, {k: float(v) for k, v in metrics.items()}
    return loss, grads


# ---------------------------------------------------------------- ntxent


@pytest.mark.device_check
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_ml4h_simclr_loss(temperature):
    z_a, z_b = _views(24, 16, seed=3)
    ids = np.arange(24, dtype=np.int32)
    loss, metrics = _call("ntxent", z_a, z_b, ids, temperature=temperature)
    expected_loss, expected_accuracy = ml4h_simclr_reference(z_a, z_b, temperature)
    np.testing.assert_allclose(loss, expected_loss, rtol=RTOL)
    assert metrics["contrastive_accuracy"] == pytest.approx(expected_accuracy)
    assert 0.0 < expected_accuracy < 1.0  # the metric is exercised, not saturated


def test_ntxent_ignores_patient_ids_like_pclr():
    z_a, z_b = _views(12, 8)
    distinct, _ = _call("ntxent", z_a, z_b, np.arange(12, dtype=np.int32))
    repeated, _ = _call("ntxent", z_a, z_b, np.zeros(12, np.int32))
    assert distinct == repeated


def test_ntxent_of_perfect_pairs_is_small_and_accurate():
    """Orthogonal one-hot pairs: hand-computed CE = 2 log(1 + (2n-2) e^{-10}) per direction."""
    n = 6
    z = np.eye(n, 8, dtype=np.float32)
    loss, metrics = _call("ntxent", z, z, np.arange(n, dtype=np.int32))
    expected = 2 * math.log1p((2 * n - 2) * math.exp(-10.0))
    np.testing.assert_allclose(loss, expected, atol=1e-6)  # float32 logsumexp(~10) - 10
    assert metrics["contrastive_accuracy"] == 1.0


# ---------------------------------------------------------------- patient_supcon


def test_patient_supcon_matches_loop_reference_with_repeated_patients():
    z_a, z_b = _views(20, 12, seed=5)
    ids = _ids_with_repeats(20, 8)
    assert len(np.unique(ids)) < 20
    loss, metrics = _call("patient_supcon", z_a, z_b, ids)
    expected_loss, expected_accuracy = supcon_reference(z_a, z_b, ids)
    np.testing.assert_allclose(loss, expected_loss, rtol=RTOL)
    assert metrics["contrastive_accuracy"] == pytest.approx(expected_accuracy)


def test_patient_supcon_with_distinct_patients_equals_ntxent():
    z_a, z_b = _views(16, 12, seed=7)
    ids = np.random.default_rng(0).permutation(1000)[:16].astype(np.int32)
    loss_s, grads_s = _value_and_grads("patient_supcon", z_a, z_b, ids)
    loss_n, grads_n = _value_and_grads("ntxent", z_a, z_b, ids)
    np.testing.assert_allclose(loss_s, loss_n, rtol=RTOL)
    for g_s, g_n in zip(grads_s[:2], grads_n[:2], strict=True):
        np.testing.assert_allclose(g_s, g_n, rtol=RTOL, atol=1e-7)


def test_patient_supcon_does_not_push_away_the_same_patient():
    """Two pairs of one patient with identical projections: supcon treats them as positives."""
    z_a, z_b = _views(8, 6, seed=2)
    z_a[1], z_b[1] = z_a[0], z_b[0]
    ids = np.array([0, 0, 1, 2, 3, 4, 5, 6], np.int32)
    _, grads = _value_and_grads("patient_supcon", z_a, z_b, ids)
    _, grads_nt = _value_and_grads("ntxent", z_a, z_b, ids)
    # ntxent pushes row 0 of view a away from its twin (row 1) and so differs from supcon
    assert not np.allclose(grads[0][0], grads_nt[0][0], rtol=1e-3)
    expected, _ = supcon_reference(z_a, z_b, ids)
    np.testing.assert_allclose(_call("patient_supcon", z_a, z_b, ids)[0], expected, rtol=RTOL)


# ---------------------------------------------------------------- cmsc


def test_cmsc_matches_reference_with_repeated_patients():
    z_a, z_b = _views(20, 12, seed=11)
    ids = _ids_with_repeats(20, 7, seed=4)
    loss, metrics = _call("cmsc", z_a, z_b, ids)
    expected_loss, expected_accuracy = cmsc_reference(z_a, z_b, ids)
    np.testing.assert_allclose(loss, expected_loss, rtol=RTOL)
    assert metrics["contrastive_accuracy"] == pytest.approx(expected_accuracy)


def test_cmsc_with_distinct_patients_equals_clocs_formula():
    z_a, z_b = _views(16, 12, seed=13)
    ids = np.arange(16, dtype=np.int32)
    loss, _ = _call("cmsc", z_a, z_b, ids)
    np.testing.assert_allclose(loss, clocs_cmsc_distinct_patients(z_a, z_b), rtol=RTOL)


def test_cmsc_is_stable_where_exponentiating_similarities_overflows():
    z_a, z_b = _views(16, 12, seed=17, scale=100.0)
    z_b[:8] = z_a[:8]  # cosine similarity 1: exp(1 / 0.005) = exp(200) overflows float32
    ids = _ids_with_repeats(16, 10, seed=6)
    temperature = 0.005
    naive = clocs_cmsc_distinct_patients(z_a, z_b, temperature, dtype=np.float32)
    assert not np.isfinite(naive)  # the failure mode reported by CLOCS users
    loss, grads = _value_and_grads("cmsc", z_a, z_b, ids, temperature=temperature)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in grads[:2])
    expected, _ = cmsc_reference(z_a, z_b, ids, temperature)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


# ---------------------------------------------------------------- siglip


def test_siglip_matches_reference_and_initial_params():
    z_a, z_b = _views(20, 12, seed=19)
    ids = _ids_with_repeats(20, 9, seed=8)
    loss_fn = get_loss("siglip")
    params = loss_fn.init_params()
    np.testing.assert_allclose(float(params["log_temperature"]), math.log(10.0), rtol=1e-7)
    assert float(params["bias"]) == -10.0
    loss, metrics = _call("siglip", z_a, z_b, ids)
    np.testing.assert_allclose(loss, siglip_reference(z_a, z_b, ids, math.log(10.0), -10.0), RTOL)
    assert metrics["contrastive_accuracy"] == pytest.approx(
        siglip_accuracy_reference(z_a, z_b, ids)
    )
    assert metrics["temperature"] == pytest.approx(10.0)
    assert metrics["bias"] == -10.0


def test_siglip_gradients_flow_to_temperature_and_bias():
    z_a, z_b = _views(12, 8, seed=23)
    ids = _ids_with_repeats(12, 6, seed=2)
    loss_fn = get_loss("siglip", init_temperature=3.0, init_bias=-2.0)
    params = loss_fn.init_params()
    grads = jax.jit(jax.grad(lambda p: loss_fn(z_a, z_b, ids, p)[0]))(params)
    expected_t, expected_b = siglip_reference_grad(z_a, z_b, ids, math.log(3.0), -2.0)
    assert abs(expected_t) > 1e-3 and abs(expected_b) > 1e-3
    np.testing.assert_allclose(float(grads["log_temperature"]), expected_t, rtol=1e-4)
    np.testing.assert_allclose(float(grads["bias"]), expected_b, rtol=1e-4)


# ---------------------------------------------------------------- vicreg


def test_vicreg_matches_reference():
    z_a, z_b = _views(32, 10, seed=29, scale=0.7)
    loss, metrics = _call("vicreg", z_a, z_b, np.arange(32, dtype=np.int32))
    expected, (inv, var, cov) = vicreg_reference(z_a, z_b)
    np.testing.assert_allclose(loss, expected, rtol=RTOL)
    np.testing.assert_allclose(
        [metrics["invariance"], metrics["variance"], metrics["covariance"]],
        [inv, var, cov],
        rtol=RTOL,
    )


def test_vicreg_of_a_collapsed_batch_is_hand_computed():
    """Every row equal: no invariance or covariance term; variance 1 - sqrt(1e-4) = 0.99."""
    z = np.tile(np.arange(5, dtype=np.float32), (8, 1))
    loss, metrics = _call("vicreg", z, z, np.arange(8, dtype=np.int32))
    assert metrics["invariance"] == 0.0 and metrics["covariance"] == 0.0
    np.testing.assert_allclose(loss, 25 * 0.99, rtol=1e-6)


def test_vicreg_covariance_does_not_cancel_with_large_variances():
    """The issue's reproduction: float64 reference 222,444.5 (float32 cancellation gave 262,144)."""
    z = np.array([[1000, 1], [-1000, 1], [0, 1000], [1, -1000]], np.float32)
    loss, metrics = _call("vicreg", z, z, np.arange(4, dtype=np.int32))
    expected, (_, variance, covariance) = vicreg_reference(z, z)
    assert covariance == pytest.approx(222_444.5, rel=1e-6)  # the float64 reference itself
    np.testing.assert_allclose(metrics["covariance"], covariance, rtol=1e-6)
    np.testing.assert_allclose(metrics["variance"], variance, rtol=1e-6)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_vicreg_covariance_of_decorrelated_large_embeddings():
    """64 x 32 decorrelated rows of standard deviation 1,000: the float64 reference's
    off-diagonal term (about 9.9e3) to float32 precision, not the cancelled 262,144."""
    rng = np.random.default_rng(0)
    centred = rng.normal(size=(64, 32))
    centred -= centred.mean(0)
    q, _ = np.linalg.qr(centred)  # orthonormal zero-mean columns: zero sample covariance
    z = (rng.normal(size=(64, 32)) * 0.05 + q * 1000 * np.sqrt(63)).astype(np.float32)
    loss, metrics = _call("vicreg", z, z, np.arange(64, dtype=np.int32))
    _, (_, _, covariance) = vicreg_reference(z, z)
    assert 1e3 < covariance < 1e5
    np.testing.assert_allclose(metrics["covariance"], covariance, rtol=1e-3)


def test_vicreg_overflowing_covariance_is_infinite_not_nan():
    """At scale 1e10 the off-diagonal squares exceed float32's range: +inf (the loop's non-finite
    check stops the run), never the NaN of inf - inf."""
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(64, 32)) * 1e10).astype(np.float32)
    loss, metrics = _call("vicreg", z, z, np.arange(64, dtype=np.int32))
    assert metrics["covariance"] == np.inf and loss == np.inf


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("name", ["ntxent", "patient_supcon", "cmsc", "siglip"])
def test_collapsed_projections_score_ml4h_accuracy_not_one(name, chunk_size):
    """Every projection equal: all logits tie. ml4h's simclr_accuracy (arg-max = first column)
    gives 1/8 for 8 pairs; so must every contrastive loss, dense or chunked."""
    z = np.ones((8, 4), np.float32)
    ids = np.arange(8, dtype=np.int32)
    _, expected = ml4h_simclr_reference(z, z)
    assert expected == 0.125
    hparams = {} if chunk_size is None else {"chunk_size": chunk_size}
    _, metrics = _call(name, z, z, ids, **hparams)
    assert metrics["contrastive_accuracy"] == pytest.approx(expected)


def test_accuracy_ties_follow_ml4h_column_order():
    """Rows tied between their positive and a negative: ml4h counts the tie as correct only when
    the positive comes first in [other view, own view] order. Distinct patients: ntxent and
    patient_supcon agree with the reference."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(6, 5)).astype(np.float32)
    z_a, z_b = base.copy(), base.copy()
    z_a[3] = z_a[1]  # a_1 ties with b_1 (its positive) and b_3 (after it): correct
    z_b[3] = z_b[1]  # b_3 ties with a_3 (positive) and a_1 (before it): wrong
    ids = np.arange(6, dtype=np.int32)
    _, expected = ml4h_simclr_reference(z_a, z_b)
    assert 0.0 < expected < 1.0
    for name in ("ntxent", "patient_supcon"):
        for hparams in ({}, {"chunk_size": 4}):
            _, metrics = _call(name, z_a, z_b, ids, **hparams)
            assert metrics["contrastive_accuracy"] == pytest.approx(expected), (name, hparams)


# ---------------------------------------------------------------- chunked == dense


@pytest.mark.parametrize("name", ["ntxent", "patient_supcon", "cmsc", "siglip"])
@pytest.mark.parametrize("chunk_size", [1, 7])
def test_chunked_equals_dense(name, chunk_size):
    """Chunk 1 has blocks holding only a row's own (excluded) column; 7 pads the last block."""
    z_a, z_b = _views(18, 10, seed=31)
    ids = _ids_with_repeats(18, 8, seed=3)
    dense = _value_and_grads(name, z_a, z_b, ids, with_metrics=True)
    chunked = _value_and_grads(name, z_a, z_b, ids, with_metrics=True, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked[0], dense[0], rtol=RTOL)
    for c, d in zip(jax.tree.leaves(chunked[1]), jax.tree.leaves(dense[1]), strict=True):
        np.testing.assert_allclose(c, d, rtol=RTOL, atol=1e-6)
    assert chunked[2] == pytest.approx(dense[2])
    assert 0.0 < dense[2]["contrastive_accuracy"] < 1.0


def test_chunked_backward_memory_is_bounded_by_the_block():
    """XLA's own buffer accounting: the dense gradient holds (2n)^2 logits, the chunked one not."""
    n_pairs, chunk = 1024, 64
    z_a, z_b = (jnp.asarray(v) for v in _views(n_pairs, 32))
    ids = jnp.arange(n_pairs, dtype=jnp.int32)
    temp_bytes = {}
    for chunk_size in (None, chunk):
        loss_fn = get_loss("patient_supcon", chunk_size=chunk_size)
        grad = jax.jit(jax.grad(lambda a, b, f=loss_fn: f(a, b, ids, {})[0], argnums=(0, 1)))
        temp_bytes[chunk_size] = grad.lower(z_a, z_b).compile().memory_analysis().temp_size_in_bytes
    full_matrix = (2 * n_pairs) ** 2 * 4
    block = 2 * n_pairs * chunk * 4
    assert temp_bytes[None] >= full_matrix
    assert temp_bytes[chunk] < min(8 * block, full_matrix / 4)


# ---------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert set(LOSSES) == {"ntxent", "patient_supcon", "cmsc", "siglip", "vicreg"}
    with pytest.raises(ValueError, match="registered losses: cmsc, ntxent, patient_supcon"):
        get_loss("simclr")
    with pytest.raises(ValueError, match=r"no hyper-parameter\(s\) temp; valid: .*temperature=0.1"):
        get_loss("ntxent", temp=0.2)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        get_loss("vicreg", temperature=0.1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        get_loss("cmsc", temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        get_loss("ntxent", chunk_size=-1)
    loss_fn = get_loss("ntxent", temperature=0.2, chunk_size=64)
    assert dict(loss_fn.hparams) == {"temperature": 0.2, "chunk_size": 64}
    assert loss_fn.init_params() == {}


def test_bad_shapes_are_rejected():
    loss_fn = get_loss("ntxent")
    with pytest.raises(ValueError, match="z_a and z_b"):
        loss_fn(jnp.ones((4, 3)), jnp.ones((5, 3)), jnp.arange(4), {})
    with pytest.raises(ValueError, match="patient_ids"):
        loss_fn(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.arange(5), {})
    with pytest.raises(ValueError, match="loss_params"):
        get_loss("siglip")(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.arange(4), {})


def test_register_a_variant_with_one_function():
    def cosine_alignment(z_a, z_b, patient_ids, loss_params, *, axis_name=None, weight=1.0):
        """Mean cosine distance between the two views (a toy variant)."""
        a = z_a / jnp.linalg.norm(z_a, axis=1, keepdims=True)
        b = z_b / jnp.linalg.norm(z_b, axis=1, keepdims=True)
        return weight * jnp.mean(1.0 - jnp.sum(a * b, axis=1)), {}

    name = "test_cosine_alignment"
    try:
        register(name, cosine_alignment)
        with pytest.raises(ValueError, match="already registered"):
            register(name, cosine_alignment)
        loss, _ = get_loss(name, weight=2.0)(
            jnp.eye(2), jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.arange(2), {}
        )
        assert float(loss) == pytest.approx(2.0 * 0.5)
    finally:
        LOSSES.pop(name, None)
