"""Patient retrieval against a brute-force ranking, hand-computed cases and exhaustive chance."""

import itertools
import math

import numpy as np
import pytest

from pclr_jax.evaluation.retrieval import prob_positive_in_first, retrieval_accuracy


def brute_force(x, patients, groups, ks):
    """Sorts every query's candidates by cosine similarity (no ties in random data)."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits = {k: [] for k in ks}
    chance = {k: [] for k in ks}
    for i in range(len(x)):
        candidates = [j for j in range(len(x)) if groups[j] != groups[i]]
        same = [j for j in candidates if patients[j] == patients[i]]
        if not same:
            continue
        order = sorted(candidates, key=lambda j: -float(unit[i] @ unit[j]))
        n, p = len(candidates), len(same)
        for k in ks:
            hits[k].append(any(patients[j] == patients[i] for j in order[:k]))
            chance[k].append(1 - math.comb(n - p, k) / math.comb(n, k) if k <= n else 1.0)
    return {k: np.mean(hits[k]) for k in ks}, {k: np.mean(chance[k]) for k in ks}, len(hits[ks[0]])


def random_set(seed):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(25), rng.integers(1, 5, 25))
    groups = np.arange(len(patients))
    # A few recordings stored twice (e.g. 100 Hz and 500 Hz copies): same group, near-equal rows.
    copies = rng.choice(len(patients), 6, replace=False)
    patients = np.concatenate([patients, patients[copies]])
    groups = np.concatenate([groups, groups[copies]])
    centres = rng.normal(size=(25, 8))
    x = centres[patients] + rng.normal(scale=1.2, size=(len(patients), 8))
    x[len(groups) - 6 :] = x[copies] + rng.normal(scale=0.01, size=(6, 8))
    return x, patients, groups


@pytest.mark.parametrize("block_elements", [1, 500, 2**24])
def test_matches_brute_force_for_any_block_size(block_elements):
    x, patients, groups = random_set(0)
    ks = (1, 3, 5)
    result = retrieval_accuracy(x, patients, ks, groups, block_elements=block_elements)
    hits, chance, n_queries = brute_force(x, patients, groups, ks)
    assert result["n_queries"] == n_queries
    assert result["n_ecgs"] == len(x)
    for k in ks:
        assert result[f"retrieval_top{k}"] == pytest.approx(hits[k], abs=1e-12)
        assert result[f"chance_top{k}"] == pytest.approx(chance[k], abs=1e-12)
    assert 0 < result["chance_top1"] < result["retrieval_top1"] <= result["retrieval_top5"]


def test_string_patient_ids_and_float32_input():
    x, patients, groups = random_set(1)
    names = np.array([f"ptbxl_{p}" for p in patients], dtype=object)
    a = retrieval_accuracy(x.astype(np.float32), names, (1, 5), groups)
    hits, _, _ = brute_force(x.astype(np.float32).astype(np.float64), patients, groups, (1, 5))
    assert a["retrieval_top1"] == pytest.approx(hits[1])
    assert a["retrieval_top5"] == pytest.approx(hits[5])


def test_hand_computed_case_with_a_tie():
    # Patient A: e0, e1 (close). Patient B: e2 = (0, 1), e3 = (-1, 0).
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    result = retrieval_accuracy(x, np.array(["A", "A", "B", "B"]), (1, 2))
    # e0 -> e1 hit; e1 -> e0 hit; e3 -> e2 (cos 0 beats -1, -0.99) hit;
    # e2: e1 (cos 0.11) first, then e0 and e3 tie at cos 0 -> top-1 miss, top-2 hit with p = 1/2.
    assert result["retrieval_top1"] == pytest.approx(3 / 4)
    assert result["retrieval_top2"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    # 3 candidates, 1 positive per query.
    assert result["chance_top1"] == pytest.approx(1 / 3)
    assert result["chance_top2"] == pytest.approx(2 / 3)


def test_collapsed_embeddings_score_exactly_chance():
    x, patients, groups = random_set(2)
    result = retrieval_accuracy(np.ones_like(x), patients, (1, 5), groups)
    assert result["retrieval_top1"] == pytest.approx(result["chance_top1"], abs=1e-12)
    assert result["retrieval_top5"] == pytest.approx(result["chance_top5"], abs=1e-12)


def test_copies_of_one_recording_are_neither_queries_nor_positives():
    # Patient A: one ECG stored twice (identical rows). Patient B: two different ECGs.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.2, 1.0]])
    patients = np.array([0, 0, 1, 1])
    without_groups = retrieval_accuracy(x, patients, (1,))
    assert without_groups["n_queries"] == 4 and without_groups["retrieval_top1"] == 1.0
    with_groups = retrieval_accuracy(x, patients, (1,), np.array([7, 7, 8, 9]))
    assert with_groups["n_queries"] == 2
    assert with_groups["query_rows"].tolist() == [2, 3]
    # Query 2 sees 3 candidates (both copies of A count), one positive.
    assert with_groups["chance_top1"] == pytest.approx(1 / 3)
    assert with_groups["retrieval_top1"] == 1.0


def test_no_patient_with_two_ecgs_gives_nan():
    result = retrieval_accuracy(np.eye(3), np.array([1, 2, 3]))
    assert result["n_queries"] == 0 and math.isnan(result["retrieval_top1"])


@pytest.mark.parametrize("n_neg,n_pos", [(4, 2), (3, 1), (0, 2), (2, 3)])
def test_chance_formula_matches_exhaustive_enumeration(n_neg, n_pos):
    items = [0] * n_neg + [1] * n_pos
    orders = list(itertools.permutations(items))
    for m in range(-1, n_neg + n_pos + 2):
        expected = np.mean([any(order[: max(m, 0)]) for order in orders])
        assert prob_positive_in_first(m, n_neg, n_pos) == pytest.approx(expected)


def test_bad_input_is_named():
    x = np.ones((3, 2))
    x[1] = 0.0
    with pytest.raises(ValueError, match=r"zero norm .* rows \[1\]"):
        retrieval_accuracy(x, np.array([0, 0, 1]))
    x[1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite .* rows \[1\]"):
        retrieval_accuracy(x, np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="spans several patients"):
        retrieval_accuracy(np.ones((2, 2)), np.array([0, 1]), ecg_groups=np.array([5, 5]))
