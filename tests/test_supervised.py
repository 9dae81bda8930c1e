"""Supervised baselines: scratch training learns a simple task; fine-tuning starts from the given
encoder; ``pclr probe`` runs them as learning-curve sources."""

import jax
import numpy as np
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from pclr_jax.evaluation.supervised import (
    SupervisedConfig,
    init_supervised_variables,
    predict_supervised,
    recalibrated_batch_stats,
    train_supervised,
)
from pclr_jax.model.encoder import EncoderConfig, init_variables

TINY = EncoderConfig(
    n_samples=256,
    unit_samples=(64, 16, 8, 4),
    unit_filters=(16, 16, 24, 32),
    stem_filters=8,
    kernel_size=5,
    head_sizes=(32, 32),
)
FAST = SupervisedConfig(learning_rate=3e-3, batch_size=32, max_epochs=8, patience=3)


def offset_task(n, seed):
    """Noise ECGs (mV) whose lead 0 is shifted up or down; label = sign of its mean amplitude."""
    rng = np.random.default_rng(seed)
    ecgs = rng.normal(scale=0.5, size=(n, 256, 12)).astype(np.float32)
    shift = rng.uniform(0.1, 0.4, n) * rng.choice([-1.0, 1.0], n)
    ecgs[:, :, 0] += shift[:, None].astype(np.float32)
    label = (ecgs[:, :, 0].mean(axis=1) > 0).astype(np.int64)
    return ecgs, label, shift


def test_scratch_training_learns_the_sign_of_lead_0():
    ecgs, y, _ = offset_task(320, 0)
    result = train_supervised(TINY, ecgs[:240], y[:240], "binary", config=FAST)
    scores = predict_supervised(result, ecgs[240:])
    assert scores.shape == (80,)
    assert roc_auc_score(y[240:], scores) > 0.9
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch > 0 and min(losses) < losses[0]


def test_regression_head_learns_the_offset_in_its_units():
    ecgs, _, shift = offset_task(320, 1)
    result = train_supervised(TINY, ecgs[:240], shift[:240] * 100, "regression", config=FAST)
    predictions = predict_supervised(result, ecgs[240:])
    # R^2 in the original units (x100): only holds if the standardisation is undone.
    assert r2_score(shift[240:] * 100, predictions) > 0.5


def test_finetune_starts_from_the_given_encoder():
    pretrained = init_variables(TINY, jax.random.key(42))
    variables = init_supervised_variables(TINY, 1, jax.random.key(0), pretrained)
    same = jax.tree_util.tree_map(
        np.array_equal, variables["params"]["encoder"], pretrained["params"]["encoder"]
    )
    assert all(jax.tree_util.tree_leaves(same))
    assert variables["params"]["output"]["kernel"].shape == (32, 1)
    scratch = init_supervised_variables(TINY, 1, jax.random.key(0))
    assert not np.array_equal(
        scratch["params"]["encoder"]["stem_conv"]["kernel"],
        pretrained["params"]["encoder"]["stem_conv"]["kernel"],
    )
    # With a zero learning rate the kept encoder weights are exactly the pretrained ones.
    ecgs, y, _ = offset_task(64, 2)
    frozen = SupervisedConfig(learning_rate=0.0, weight_decay=0.0, max_epochs=1)
    result = train_supervised(TINY, ecgs, y, "binary", encoder_variables=pretrained, config=frozen)
    kept = result.variables["params"]["encoder"]
    assert np.array_equal(
        kept["unit_3"]["conv_1"]["kernel"],
        pretrained["params"]["encoder"]["unit_3"]["conv_1"]["kernel"],
    )
    wrong = {
        "params": {
            "encoder": {**pretrained["params"]["encoder"], "stem_conv": {"kernel": np.ones(3)}}
        },
        "batch_stats": pretrained["batch_stats"],
    }
    with pytest.raises(ValueError, match="do not match the encoder"):
        init_supervised_variables(TINY, 1, jax.random.key(0), wrong)


def test_probe_command_with_weights_and_every_baseline(tmp_path, capsys):
    """``pclr probe`` on a prepared split: an Orbax encoder (``--weights``, embedded with
    ``load_encoder``) beside the random_init, scratch and finetune baselines."""

    import pandas as pd

    from pclr_jax import load_encoder
    from pclr_jax.commands.cli import main
    from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic
    from pclr_jax.evaluation.inputs import load_split
    from pclr_jax.evaluation.supervised import embed_ecgs
    from pclr_jax.weights.encoder_checkpoint import save_encoder

    PclrSynthetic(config="tiny", data_dir=str(tmp_path), workers=0).download_and_prepare()
    variables = init_variables(TINY, jax.random.key(7))
    save_encoder(tmp_path / "encoder", TINY, variables)
    out = tmp_path / "out"
    argv = ["probe", "--weights", f"pclr={tmp_path / 'encoder'}", "--data", "pclr_synthetic"]
    argv += ["--data-config", "tiny", "--data-dir", str(tmp_path), "--split", "train"]
    argv += ["--test-fraction", "0.3", "--task", "sex:binary", "--baseline", "random_init"]
    argv += ["--baseline", "scratch", "--baseline", "finetune", "--sup-epochs", "3"]
    argv += ["--sup-patience", "2", "--sup-lr", str(FAST.learning_rate)]  # compiled above
    argv += ["--sizes", "40,all", "--repeats", "1", "--bootstrap", "50", "--retrieval"]
    assert main([*argv, "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv", dtype={"size_label": str})
    auroc = results.query("metric == 'auroc'")
    assert set(auroc["source"]) == {"pclr", "random_init", "scratch", "finetune"}
    assert set(auroc["size_label"]) == {"40", "all"}
    full = auroc.query("size_label == 'all'")
    assert (full["n_train"] + full["n_test"] == 109).all()  # the tiny train split
    assert auroc["value"].between(0, 1).all()
    retrieval = pd.read_csv(out / "retrieval.csv").set_index("source")
    assert (retrieval["n_queries"] == 109).all()  # every synthetic patient has 2-3 ECGs
    printed = capsys.readouterr().out
    assert "sex auroc" in printed and "retrieval pclr: top-1" in printed
    # The 'pclr' source is the encoder's pooled embedding, as this module computes it.
    ecgs, _ = load_split("pclr_synthetic", "train", str(tmp_path), "tiny")
    np.testing.assert_allclose(
        load_encoder(tmp_path / "encoder", output="embed").embed(ecgs.astype(np.float32)),
        embed_ecgs(TINY, variables, ecgs),
        rtol=1e-4,
        atol=1e-5,
    )


def _stem_conv_numpy(ecgs: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'SAME' (TF) 1-D convolution by sliding windows: (N, S, L) x (K, L, C) -> (N, S, C)."""
    k = kernel.shape[0]
    left = (k - 1) // 2
    padded = np.pad(ecgs, ((0, 0), (left, k - 1 - left), (0, 0)))
    windows = np.stack([padded[:, t : t + ecgs.shape[1]] for t in range(k)], axis=2)
    return np.einsum("nskl,klc->nsc", windows, kernel)


def test_recalibrated_batch_stats_are_the_mean_of_per_batch_moments():
    variables = init_supervised_variables(TINY, 1, jax.random.key(3))
    ecgs = np.random.default_rng(4).normal(size=(96, 256, 12)).astype(np.float32)
    stats = recalibrated_batch_stats(TINY, 1, variables, ecgs, batch_size=32)
    kernel = np.asarray(variables["params"]["encoder"]["stem_conv"]["kernel"], np.float64)
    stem = _stem_conv_numpy(ecgs.astype(np.float64), kernel)
    batches = stem.reshape(3, 32 * 256, -1)
    stem_stats = stats["encoder"]["stem_bn"]
    np.testing.assert_allclose(stem_stats["mean"], batches.mean(axis=1).mean(0), atol=1e-5)
    np.testing.assert_allclose(stem_stats["var"], batches.var(axis=1).mean(0), rtol=1e-4)
    # The network's own running averages (momentum 0.99) are untouched by the recalibration.
    assert np.all(np.asarray(variables["batch_stats"]["encoder"]["stem_bn"]["var"]) == 1.0)
