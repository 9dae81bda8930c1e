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


def test_probe_command_with_network_baselines(tmp_path, monkeypatch, capsys):
    """``pclr probe --data ... --baseline random_init --baseline scratch`` on a stand-in split
    (the prepared-data reader is replaced by synthetic ECGs with a learnable label)."""
    import json

    import pandas as pd

    from pclr_jax.cli import main
    from pclr_jax.evaluation import inputs

    ecgs, y, _ = offset_task(160, 5)
    index = pd.DataFrame(
        {
            "sample_id": [f"r{i}" for i in range(160)],
            "record_id": [f"r{i}" for i in range(160)],
            "patient_id": np.arange(160) // 2,
            "af": np.where(np.arange(160) % 9 == 0, -1, y),  # -1: unknown, left out
        }
    )
    splits = {"train": slice(0, 120), "test": slice(120, 160)}
    monkeypatch.setattr(
        inputs,
        "load_split",
        lambda name, split, data_dir: (
            ecgs[splits[split]],
            index[splits[split]].reset_index(drop=True),
        ),
    )
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "out"
    argv = ["probe", "--data", "standin", "--data-dir", str(tmp_path), "--test-split", "test"]
    argv += ["--task", "af:binary", "--baseline", "random_init", "--baseline", "scratch"]
    argv += ["--encoder-config", str(config), "--sup-epochs", "4", "--sup-patience", "2"]
    argv += ["--sup-lr", str(FAST.learning_rate)]  # the compiled step of the tests above
    argv += ["--sizes", "40,all", "--repeats", "1", "--bootstrap", "50", "--out", str(out)]
    assert main(argv) == 0
    results = pd.read_csv(out / "results.csv").query("metric == 'auroc'")
    assert set(results["source"]) == {"random_init", "scratch"}
    unknown_test = (index["af"][120:] == -1).sum()
    assert (results["n_test"] == 40 - unknown_test).all()
    assert set(results["n_train"]) == {40, 120 - (index["af"][:120] == -1).sum()}
    assert results["value"].between(0, 1).all()
    assert "af auroc" in capsys.readouterr().out
