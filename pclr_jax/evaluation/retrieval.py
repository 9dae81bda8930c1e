"""Patient retrieval: is an ECG's nearest neighbour (cosine similarity) of the same patient?

Every ECG whose patient has at least two distinct ECGs is a query. Its candidates are all other
ECGs of the set except itself and copies of the same recording (``ecg_groups``: e.g. the 100 Hz and
500 Hz files of one PTB-XL ``ecg_id``); its positives are the candidates of the same patient.
Top-k accuracy is the fraction of queries whose k most similar candidates contain a positive.

Ties are resolved by a uniformly random order, in expectation: a query whose best positive is tied
with ``t_neg`` negatives and ``t_pos`` positives (including itself) and ranked behind ``g`` strictly
better negatives scores ``1 - C(t_neg, m) / C(t_neg + t_pos, m)`` with ``m = k - g``. So a collapsed
encoder (all embeddings equal) scores exactly the chance level, never better.

The chance level is the same expectation for a random ranking of all candidates, query by query:
``1 - C(n_neg, k) / C(n_neg + n_pos, k)``, averaged over the queries.

``retrieval_intervals`` puts a bootstrap interval over test patients around top-k accuracy: the
gallery stays as it is and each query counts as often as its patient is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pclr_jax.evaluation.resampling import resampling_plan

# Cosine similarities closer than this are ties (float64 products of unit vectors).
TIE_TOLERANCE = 1e-9
# Elements of one block of the query x candidate similarity matrix (float64: 128 MiB; the
# block's temporaries bring the peak to about 0.6 GiB).
DEFAULT_BLOCK_ELEMENTS = 2**24


def prob_positive_in_first(m: np.ndarray, n_neg: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Probability that a random order of ``n_neg`` negatives and ``n_pos`` >= 1 positives has a
    positive among its first ``m`` items (``m <= 0`` gives 0): ``1 - C(n_neg, m) / C(n, m)``.

    All arguments broadcast; returns float64.
    """
    m, n_neg, n_pos = np.broadcast_arrays(
        np.asarray(m, np.int64), np.asarray(n_neg, np.int64), np.asarray(n_pos, np.int64)
    )
    all_negative = np.ones(m.shape, np.float64)
    for i in range(int(m.max(initial=0))):
        factor = np.clip(n_neg - i, 0, None) / np.maximum(n_neg + n_pos - i, 1)
        all_negative = np.where(i < m, all_negative * factor, all_negative)
    return np.where(m > 0, 1.0 - all_negative, 0.0)


def _dense_ids(values: np.ndarray, name: str, n: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {values.shape}")
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise ValueError(f"{name} has NaN at rows {np.flatnonzero(np.isnan(values))[:10]}")
    return np.unique(values, return_inverse=True)[1].reshape(n)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"embeddings have non-finite values at rows {bad[:10].tolist()}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"embeddings have zero norm (cosine undefined) at rows {zero[:10].tolist()}"
        )
    return x / norms


def retrieval_accuracy(
    embeddings: np.ndarray,
    patient_ids: np.ndarray,
    k: Sequence[int] = (1, 5),
    ecg_groups: np.ndarray | None = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> dict[str, float | int | np.ndarray]:
    """Top-k same-patient retrieval by cosine similarity, with its chance level.

    Args:
        embeddings: ``(N, D)`` float; rows must be finite and non-zero.
        patient_ids: ``(N,)`` patient of each ECG (any hashable dtype; NaN is an error).
        k: the cut-offs to report.
        ecg_groups: ``(N,)`` optional recording id; rows sharing it are copies of one ECG: they
            count as one ECG of the patient and are never candidates for each other. ``None``:
            every row is a distinct ECG.
        block_elements: the similarity matrix is computed in row blocks of at most this many
            float64 elements, so memory stays bounded for any N.

    Returns:
        ``retrieval_top{k}`` and ``chance_top{k}`` (means over queries; NaN when there is no
        query), ``n_queries``, ``n_ecgs``, ``query_rows`` (the rows used as queries) and
        ``hits_top{k}`` (``(n_queries,)`` each query's expected top-k hit in [0, 1]).
    """
    ks = tuple(int(v) for v in k)
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be positive integers, got {k}")
    x = _unit_rows(embeddings)
    n = x.shape[0]
    patients = _dense_ids(patient_ids, "patient_ids", n)
    groups = np.arange(n) if ecg_groups is None else _dense_ids(ecg_groups, "ecg_groups", n)

    group_patients = np.full(groups.max(initial=-1) + 1, -1)
    group_patients[groups] = patients
    if (group_patients[groups] != patients).any():
        raise ValueError("an ecg_group spans several patients")
    group_size = np.bincount(groups, minlength=group_patients.size)
    ecgs_per_patient = np.bincount(group_patients, minlength=patients.max(initial=-1) + 1)
    rows_per_patient = np.bincount(patients, minlength=ecgs_per_patient.size)
    queries = np.flatnonzero(ecgs_per_patient[patients] >= 2)

    result: dict[str, float | int | np.ndarray] = {"n_queries": int(queries.size), "n_ecgs": n}
    hits = {kk: np.empty(queries.size) for kk in ks}
    chance = {kk: np.empty(queries.size) for kk in ks}
    block = max(1, min(n, block_elements // max(n, 1)))
    for start in range(0, queries.size, block):
        rows = queries[start : start + block]
        sims = x[rows] @ x.T
        candidate = groups[None, :] != groups[rows, None]
        positive = candidate & (patients[None, :] == patients[rows, None])
        negative = candidate & ~positive
        best = np.where(positive, sims, -np.inf).max(axis=1, keepdims=True)
        above = (negative & (sims > best + TIE_TOLERANCE)).sum(axis=1)
        tied = np.abs(sims - best) <= TIE_TOLERANCE
        tied_neg = (negative & tied).sum(axis=1)
        tied_pos = (positive & tied).sum(axis=1)
        n_pos = rows_per_patient[patients[rows]] - group_size[groups[rows]]
        n_neg = n - group_size[groups[rows]] - n_pos
        for kk in ks:
            hits[kk][start : start + rows.size] = prob_positive_in_first(
                kk - above, tied_neg, tied_pos
            )
            chance[kk][start : start + rows.size] = prob_positive_in_first(kk, n_neg, n_pos)
    for kk in ks:
        result[f"retrieval_top{kk}"] = float(hits[kk].mean()) if queries.size else float("nan")
        result[f"chance_top{kk}"] = float(chance[kk].mean()) if queries.size else float("nan")
        result[f"hits_top{kk}"] = hits[kk]
    result["query_rows"] = queries
    return result


def retrieval_intervals(
    result: dict,
    patient_ids: np.ndarray,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile-bootstrap bounds ``retrieval_top{k}_ci_low`` / ``_ci_high`` of a
    ``retrieval_accuracy`` result over resampled test patients (``patient_ids``: the ``(N,)`` ids
    given to ``retrieval_accuracy``): each query's hit is weighted by how often its patient is
    drawn. NaN bounds when there is no query."""
    rows = result["query_rows"]
    plan = resampling_plan(np.asarray(patient_ids)[rows], n_rows=len(rows))
    weights = plan.weights(np.random.default_rng(seed), n_bootstrap) if len(rows) else None
    tail = 100 * (1 - ci) / 2
    bounds = {}
    for key in [k for k in result if k.startswith("hits_top")]:
        name = key.replace("hits_", "retrieval_")
        if weights is None:
            low = high = float("nan")
        else:
            values = weights @ result[key] / weights.sum(axis=1)
            low, high = np.percentile(values, [tail, 100 - tail])
        bounds[f"{name}_ci_low"], bounds[f"{name}_ci_high"] = float(low), float(high)
    return bounds


def format_retrieval(result: dict, ks: Sequence[int] = (1, 5)) -> str:
    """One line: ``top-1 0.412 (chance 0.006)  top-5 ...  [312 queries among 1,000 ECGs]``."""
    parts = [
        f"top-{kk} {result[f'retrieval_top{kk}']:.3f} (chance {result[f'chance_top{kk}']:.3f})"
        for kk in ks
    ]
    return "  ".join(parts) + f"  [{result['n_queries']:,} queries among {result['n_ecgs']:,} ECGs]"
