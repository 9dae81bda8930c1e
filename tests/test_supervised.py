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
    train_supervised,
)
from pclr_jax.model import EncoderConfig, init_variables

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


def test_probe_command_with_network_baselines_on_a_prepared_data_set(tmp_path, capsys):
    """``pclr probe --data pclr_synthetic --baseline random_init --baseline scratch``."""
    import json

    import pandas as pd

    from pclr_jax.cli import main
    from pclr_jax.data.builders.pclr_synthetic import PclrSynthetic

    PclrSynthetic(config="tiny", data_dir=str(tmp_path), workers=0).download_and_prepare()
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "out"
    argv = ["probe", "--data", "pclr_synthetic", "--data-config", "tiny"]
    argv += ["--data-dir", str(tmp_path), "--split", "train", "--test-fraction", "0.3"]
    argv += ["--task", "sex:binary", "--baseline", "random_init", "--baseline", "scratch"]
    argv += ["--encoder-config", str(config), "--sup-epochs", "3", "--sup-patience", "2"]
    argv += ["--sup-lr", str(FAST.learning_rate)]  # the compiled step of the tests above
    argv += ["--sizes", "40,all", "--repeats", "1", "--bootstrap", "50", "--retrieval"]
    assert main([*argv, "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv").query("metric == 'auroc'")
    assert set(results["source"]) == {"random_init", "scratch"}
    assert set(results["size_label"].astype(str)) == {"40", "all"}
    full = results.query("size_label == 'all'")
    assert (full["n_train"] + full["n_test"] == 109).all()  # the tiny train split
    assert results["value"].between(0, 1).all()
    retrieval = pd.read_csv(out / "retrieval.csv").set_index("source")
    assert retrieval.loc["random_init", "n_queries"] == 109  # every patient has 2-3 ECGs
    printed = capsys.readouterr().out
    assert "sex auroc" in printed and "retrieval random_init: top-1" in printed
