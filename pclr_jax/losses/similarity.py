"""Shared machinery of the contrastive losses: global columns and block-wise similarity statistics.

Sharding convention. A loss runs either on one device (``axis_name=None``) or inside
``jax.shard_map`` over a mesh axis (``axis_name='data'``) with its inputs split by rows. In the
sharded case every device scores its own LOCAL rows (the "queries") against the COLUMNS of the
whole global batch, gathered from every device with ``lax.all_gather(..., tiled=True)``; the gather
is differentiable (its transpose is a reduce-scatter), so gradients reach the device that owns a
column. Row ``i`` of device ``d`` is global row ``d * local_batch + i`` (see :func:`row_offset`).

Memory. The dense path materialises the ``(queries, columns)`` similarity matrix and is
differentiated by JAX. With ``chunk_size`` set, the columns are walked ``chunk_size`` at a time with
``lax.scan``, per-row statistics combined across blocks with a running ("online") logsumexp, and
the backward pass recomputes each block's logits (a custom VJP in :func:`contrastive_row_stats`, a
checkpointed scan body in :func:`scan_column_blocks`) instead of storing them: forward AND backward
hold a few ``(queries, chunk_size)`` blocks at a time, never ``(queries, columns)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# Similarities run at full float32 precision on every backend (TF32 or one bf16 pass, the
# defaults of recent GPUs and TPUs, would blur logits divided by a small temperature); they are
# a tiny share of a step's work.
HIGHEST = lax.Precision.HIGHEST

# Above this many (query, column) logits the dense path would hold several (n, m) float32 arrays
# of over 256 MiB each (logits, masks, softmax and their gradients): contrastive_row_stats then
# walks the columns in blocks by itself (auto_chunk_size), unless the caller chose a chunk_size.
DENSE_MAX_ELEMENTS = 2**26

# tf.math.l2_normalize's default: x / sqrt(max(sum(x ** 2), 1e-12)).
L2_EPSILON = 1e-12


def l2_normalize(x: jax.Array, epsilon: float = L2_EPSILON) -> jax.Array:
    """Rows of ``x`` ``(batch, dim)`` scaled to unit L2 norm, as ``tf.math.l2_normalize``."""
    return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), epsilon))


def gather_rows(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The global batch: ``x`` ``(local_batch, ...)`` from every device, in device order.

    Returns ``(devices * local_batch, ...)``; the identity when ``axis_name`` is None.
    """
    if axis_name is None:
        return x
    return lax.all_gather(x, axis_name, tiled=True)


def row_offset(local_batch: int, axis_name: str | None) -> jax.Array | int:
    """Global index of this device's first row: ``axis_index * local_batch`` (0 unsharded)."""
    if axis_name is None:
        return 0
    return lax.axis_index(axis_name) * local_batch


def global_batch_size(local_batch: int, axis_name: str | None) -> int:
    """``local_batch`` times the number of devices along ``axis_name`` (a Python int)."""
    if axis_name is None:
        return local_batch
    return local_batch * lax.axis_size(axis_name)


def _column_blocks(columns: dict[str, jax.Array], chunk_size: int) -> dict[str, jax.Array]:
    """``columns`` padded to a multiple of ``chunk_size`` and split into ``(blocks, chunk, ...)``,
    plus ``'valid'``: False on the padding."""
    m = jax.tree.leaves(columns)[0].shape[0]
    n_blocks = -(-m // chunk_size)
    pad = n_blocks * chunk_size - m

    def to_blocks(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape((n_blocks, chunk_size) + x.shape[1:])

    return {**{k: to_blocks(x) for k, x in columns.items()}, "valid": to_blocks(jnp.ones(m, bool))}


def _scan_blocks(step: Callable, init: Any, blocks: dict[str, jax.Array]) -> tuple[Any, Any]:
    """``lax.scan(step, init, blocks)`` with the first block run before the scan, so that the carry
    has the step's output type: inside shard_map a carry built from constants is device-invariant
    while the step's output is device-varying. Returns ``(carry, stacked per-block outputs)``."""
    carry, first = step(init, jax.tree.map(lambda x: x[0], blocks))
    carry, rest = lax.scan(step, carry, jax.tree.map(lambda x: x[1:], blocks))
    stacked = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return carry, stacked


def scan_column_blocks(
    body: Callable[[Any, dict[str, jax.Array]], Any],
    init: Any,
    columns: dict[str, jax.Array],
    chunk_size: int | None,
) -> Any:
    """Folds ``body(carry, block)`` over the columns, all at once or ``chunk_size`` at a time.

    Args:
      body: ``(carry, block) -> carry``; ``block`` is ``columns`` restricted to some columns plus
        ``'valid'``, a boolean ``(block_columns,)`` mask that is False on padding.
      init: the initial carry (a pytree of per-query arrays).
      columns: arrays whose leading axis is the column axis (length ``m``).
      chunk_size: None or 0 for one dense block of all ``m`` columns; otherwise the columns are
        padded to a multiple of ``chunk_size`` and scanned block by block with a checkpointed
        body, so that automatic differentiation recomputes each block rather than storing it.

    Returns:
      The final carry.
    """
    m = jax.tree.leaves(columns)[0].shape[0]
    if not chunk_size or chunk_size >= m:
        return body(init, {**columns, "valid": jnp.ones((m,), bool)})
    step = jax.checkpoint(lambda carry, block: (body(carry, block), None))
    return _scan_blocks(step, init, _column_blocks(columns, chunk_size))[0]


class TopOne(NamedTuple):
    """The arg-max column of each query row so far, ``(queries,)``, with ml4h's tie rule.

    ``score``: the highest admissible logit; ``key``: the tie-break key of the first column that
    reaches it (the smallest key wins, as ``argmax`` returns the first maximum); ``positive``:
    whether that column is a positive of the row.
    """

    score: jax.Array
    key: jax.Array
    positive: jax.Array


# Tie-break keys stay below this; it also marks "no column yet".
_NO_KEY = 2**31 - 1
# Added to the key of a column that precedes the row's rank offset, so that it sorts after all
# columns from the offset on (column indices stay far below it).
_WRAP = 2**30


def empty_top_one(n: int) -> TopOne:
    """:class:`TopOne` of ``n`` rows that have seen no column."""
    return TopOne(
        score=jnp.full((n,), -jnp.inf, jnp.float32),
        key=jnp.full((n,), _NO_KEY, jnp.int32),
        positive=jnp.zeros((n,), bool),
    )


def column_keys(column_index: jax.Array, rank_offsets: jax.Array | None) -> jax.Array:
    """Tie-break keys ``(n, c)`` of the columns ``column_index`` ``(c,)`` for ``(n,)`` row offsets.

    A row with offset ``o`` ranks its columns ``o, o + 1, ..., m - 1, 0, ..., o - 1``: ml4h scores
    a view-a row against ``[b, a]`` and a view-b row against ``[a, b]``, which over the columns
    ``[a; b]`` is offset ``G`` for view a and ``0`` for view b. None: offset 0 for every row.
    """
    keys = column_index[None, :].astype(jnp.int32)
    if rank_offsets is None:
        return keys
    return keys + jnp.where(column_index[None, :] < rank_offsets[:, None], _WRAP, 0)


def update_top_one(
    carry: TopOne, scores: jax.Array, keys: jax.Array, positive: jax.Array
) -> TopOne:
    """``carry`` after one block of columns: ``scores`` ``(n, c)`` (-inf where inadmissible),
    their tie-break ``keys`` and ``positive`` masks. A strict arg-max: a block's maximum replaces
    the carry's when it is higher, or equal with a smaller key (so a tie never counts as correct
    unless the positive is the first maximal column, as in ml4h's ``simclr_accuracy``)."""
    scores = lax.stop_gradient(scores)
    block_score = jnp.max(scores, axis=1)
    at_max = scores == block_score[:, None]
    block_key = jnp.min(jnp.where(at_max, keys, _NO_KEY), axis=1)
    block_positive = jnp.any(positive & at_max & (keys == block_key[:, None]), axis=1)
    take = (block_score > carry.score) | ((block_score == carry.score) & (block_key < carry.key))
    return TopOne(
        score=jnp.where(take, block_score, carry.score),
        key=jnp.where(take, block_key, carry.key),
        positive=jnp.where(take, block_positive, carry.positive),
    )


class RowStats(NamedTuple):
    """Per-query statistics of the logits over the admissible (non-self) columns, ``(queries,)``.

    ``logsumexp`` over every admissible column; ``positive_sum`` and ``positive_count``: sum and
    number of the logits of the positive columns (same id, not self); ``row_max``: maximum logit
    over every admissible column; ``top_one``: the arg-max column (:class:`TopOne`).
    """

    logsumexp: jax.Array
    positive_sum: jax.Array
    positive_count: jax.Array
    row_max: jax.Array
    top_one: TopOne

    def mean_positive_nll(self) -> jax.Array:
        """``-(1/|P|) sum_p log softmax(p)`` per query: the multi-positive cross-entropy."""
        count = jnp.maximum(self.positive_count, 1.0)
        return self.logsumexp - self.positive_sum / count

    def top1_is_positive(self) -> jax.Array:
        """1.0 where the arg-max admissible column (ties: the first in the row's rank order) is a
        positive, else 0.0. A fully collapsed batch scores the chance rate, not 1."""
        return self.top_one.positive.astype(jnp.float32)


class _Rows(NamedTuple):
    """The query side of :func:`contrastive_row_stats` (positions None: no self-exclusion;
    rank_offsets None: ties go to the lowest column index)."""

    queries: jax.Array
    ids: jax.Array
    positions: jax.Array | None
    rank_offsets: jax.Array | None


def _block_logits(
    rows: _Rows, block: dict[str, jax.Array], temperature: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits ``(n, c)`` of one column block and its admissible (not self) and positive masks."""
    logits = jnp.dot(rows.queries, block["keys"].T, precision=HIGHEST) / temperature
    admissible = jnp.broadcast_to(block["valid"][None, :], logits.shape)
    if rows.positions is not None:
        admissible = admissible & (rows.positions[:, None] != block["positions"][None, :])
    positive = admissible & (rows.ids[:, None] == block["ids"][None, :])
    return logits, admissible, positive


def _accumulate(
    carry: RowStats, rows: _Rows, block: dict[str, jax.Array], temperature: float
) -> RowStats:
    """``carry`` updated with one column block (online logsumexp; maxima as constants)."""
    logits, admissible, positive = _block_logits(rows, block, temperature)
    neg_inf = jnp.float32(-jnp.inf)
    scores = jnp.where(admissible, logits, neg_inf)
    block_max = lax.stop_gradient(jnp.max(scores, axis=1))
    new_max = jnp.maximum(carry.row_max, block_max)
    # A row with no admissible column yet keeps max -inf; shift by 0 there to avoid inf - inf.
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    block_sum = jnp.sum(jnp.exp(jnp.where(admissible, logits - shift[:, None], neg_inf)), axis=1)
    total = jnp.exp(carry.logsumexp - shift) + block_sum
    # log(0) has an infinite derivative (times a zero one: NaN): keep it out of the graph.
    has_mass = total > 0
    keys = column_keys(block["index"], rows.rank_offsets)
    return RowStats(
        logsumexp=jnp.where(has_mass, shift + jnp.log(jnp.where(has_mass, total, 1.0)), neg_inf),
        positive_sum=carry.positive_sum + jnp.sum(jnp.where(positive, logits, 0.0), axis=1),
        positive_count=carry.positive_count + jnp.sum(positive, axis=1, dtype=jnp.float32),
        row_max=new_max,
        top_one=update_top_one(carry.top_one, scores, keys, positive),
    )


def _empty_stats(n: int) -> RowStats:
    zeros = jnp.zeros((n,), jnp.float32)
    empty = jnp.full((n,), -jnp.inf, jnp.float32)
    return RowStats(empty, zeros, zeros, empty, empty_top_one(n))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _chunked_row_stats(
    rows: _Rows, columns: dict[str, jax.Array], temperature: float, chunk_size: int
) -> RowStats:
    """Block-by-block :class:`RowStats` whose backward pass recomputes each block's logits."""
    return _chunked_forward(rows, columns, temperature, chunk_size)[0]


def _chunked_forward(
    rows: _Rows, columns: dict[str, jax.Array], temperature: float, chunk_size: int
) -> tuple[RowStats, tuple]:
    blocks = _column_blocks(columns, chunk_size)
    step = lambda carry, block: (_accumulate(carry, rows, block, temperature), None)
    stats, _ = _scan_blocks(step, _empty_stats(rows.queries.shape[0]), blocks)
    return stats, (rows, columns, stats.logsumexp)


def _chunked_backward(
    temperature: float, chunk_size: int, residuals: tuple, cotangent: RowStats
) -> tuple:
    """d/d(queries, keys) of ``g_lse . logsumexp + g_pos . positive_sum``, block by block.

    With ``p = softmax`` over the admissible columns, ``dL/dlogit = g_lse p + g_pos [positive]``;
    the other statistics are constants (counts) or carry no gradient (maxima).
    """
    rows, columns, logsumexp = residuals
    g_lse = cotangent.logsumexp[:, None]
    g_pos = cotangent.positive_sum[:, None]

    def step(d_queries: jax.Array, block: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        logits, admissible, positive = _block_logits(rows, block, temperature)
        probs = jnp.where(admissible, jnp.exp(logits - logsumexp[:, None]), 0.0)
        d_logits = (g_lse * probs + jnp.where(positive, g_pos, 0.0)) / temperature
        d_block_queries = jnp.matmul(d_logits, block["keys"], precision=HIGHEST)
        return d_queries + d_block_queries, jnp.matmul(d_logits.T, rows.queries, precision=HIGHEST)

    blocks = _column_blocks(columns, chunk_size)
    d_queries, d_key_blocks = _scan_blocks(step, jnp.zeros_like(rows.queries), blocks)
    m = columns["keys"].shape[0]
    d_keys = d_key_blocks.reshape((-1,) + d_key_blocks.shape[2:])[:m]
    no_grad = lambda tree: jax.tree.map(lambda _: None, tree)
    d_rows = _Rows(d_queries, None, None, None)
    d_columns = {**no_grad(columns), "keys": d_keys}
    return d_rows, d_columns


_chunked_row_stats.defvjp(_chunked_forward, _chunked_backward)


def contrastive_row_stats(
    queries: jax.Array,
    keys: jax.Array,
    query_ids: jax.Array,
    key_ids: jax.Array,
    *,
    temperature: float,
    query_positions: jax.Array | None = None,
    key_positions: jax.Array | None = None,
    query_rank_offsets: jax.Array | None = None,
    chunk_size: int | None = None,
) -> RowStats:
    """Logits ``queries @ keys.T / temperature`` reduced per query row, densely or block by block.

    Args:
      queries: ``(n, dim)`` float32 (already L2-normalised by the caller).
      keys: ``(m, dim)`` float32.
      query_ids, key_ids: ``(n,)``, ``(m,)`` int32; a column is a positive of a row when the ids
        are equal (and it is not the row itself).
      temperature: softmax temperature.
      query_positions, key_positions: ``(n,)``, ``(m,)`` int32 global positions; a column whose
        position equals the row's is the row itself and is excluded (the ``-1e9`` mask of SimCLR).
        None (both) when queries and keys are disjoint sets.
      query_rank_offsets: ``(n,)`` int32, the column each row's tie-break order starts from
        (:func:`column_keys`); None: column order. Only ``top1_is_positive`` depends on it.
      chunk_size: None for the dense ``(n, m)`` computation, differentiated by JAX, up to
        ``n * m = DENSE_MAX_ELEMENTS`` logits and blocks of :func:`auto_chunk_size` columns
        above; 0 for the dense computation at any size; else the number of columns per block:
        a ``lax.scan`` with an online logsumexp forward and a custom VJP that recomputes each
        block's logits backward, so that neither pass holds more than a few ``(n, chunk_size)``
        arrays.

    Returns:
      :class:`RowStats`; the maxima are constants for differentiation (the logsumexp's gradient is
      exact without them).
    """
    if (query_positions is None) != (key_positions is None):
        raise ValueError("give both query_positions and key_positions, or neither")
    m = keys.shape[0]
    rows = _Rows(queries, query_ids, query_positions, query_rank_offsets)
    columns = {"keys": keys, "ids": key_ids, "index": jnp.arange(m, dtype=jnp.int32)}
    if key_positions is not None:
        columns["positions"] = key_positions
    if chunk_size is None:
        chunk_size = auto_chunk_size(queries.shape[0], m)
    if not chunk_size or chunk_size >= m:
        dense = {**columns, "valid": jnp.ones((m,), bool)}
        return _accumulate(_empty_stats(queries.shape[0]), rows, dense, temperature)
    return _chunked_row_stats(rows, columns, temperature, chunk_size)


def auto_chunk_size(n: int, m: int, max_elements: int | None = None) -> int | None:
    """Columns per block for ``n`` queries against ``m`` columns when no ``chunk_size`` is given:
    ``None`` (dense) while ``n * m <= max_elements`` (default ``DENSE_MAX_ELEMENTS``), else the
    largest power of two with ``n * chunk <= max_elements`` (at least 1)."""
    max_elements = DENSE_MAX_ELEMENTS if max_elements is None else max_elements
    if n * m <= max_elements:
        return None
    return 1 << max(0, (max_elements // max(n, 1)).bit_length() - 1)


def check_views(z_a: jax.Array, z_b: jax.Array, patient_ids: jax.Array) -> None:
    """Raises ``ValueError`` unless ``z_a``, ``z_b`` are ``(batch, dim)`` and ids ``(batch,)``."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"z_a and z_b must both be (local_batch, dim); got {z_a.shape} and {z_b.shape}"
        )
    if patient_ids.shape != z_a.shape[:1]:
        raise ValueError(
            f"patient_ids must be (local_batch,) = ({z_a.shape[0]},); got {patient_ids.shape}"
        )


class TwoViews(NamedTuple):
    """Both views as one query set (this device's rows) and one column set (the global batch).

    Queries are ``[a_local; b_local]`` ``(2 n, dim)``; columns ``[a_global; b_global]``
    ``(2 G, dim)``, all L2-normalised float32. Positions index the columns (``a_j`` is ``j``,
    ``b_j`` is ``G + j``; a query's position is its own column), ``*_pairs`` the global pair index
    ``j`` and ``*_patients`` the patient id, each ``(2 n,)`` or ``(2 G,)`` int32.
    ``query_rank_offsets`` ``(2 n,)``: ml4h's column order for the accuracy's ties, the other
    view first (``G`` for view-a rows, ``0`` for view-b rows; :func:`column_keys`).
    """

    queries: jax.Array
    keys: jax.Array
    query_positions: jax.Array
    key_positions: jax.Array
    query_pairs: jax.Array
    key_pairs: jax.Array
    query_patients: jax.Array
    key_patients: jax.Array
    query_rank_offsets: jax.Array


def two_view_layout(
    z_a: jax.Array, z_b: jax.Array, patient_ids: jax.Array, axis_name: str | None
) -> TwoViews:
    """:class:`TwoViews` of ``(local_batch, dim)`` projections, gathered over ``axis_name``."""
    check_views(z_a, z_b, patient_ids)
    n = z_a.shape[0]
    g = global_batch_size(n, axis_name)
    h_a = l2_normalize(z_a.astype(jnp.float32))
    h_b = l2_normalize(z_b.astype(jnp.float32))
    local_pairs = row_offset(n, axis_name) + jnp.arange(n, dtype=jnp.int32)
    global_pairs = jnp.arange(g, dtype=jnp.int32)
    global_patients = gather_rows(patient_ids.astype(jnp.int32), axis_name)
    return TwoViews(
        queries=jnp.concatenate([h_a, h_b]),
        keys=jnp.concatenate([gather_rows(h_a, axis_name), gather_rows(h_b, axis_name)]),
        query_positions=jnp.concatenate([local_pairs, g + local_pairs]),
        key_positions=jnp.concatenate([global_pairs, g + global_pairs]),
        query_pairs=jnp.tile(local_pairs, 2),
        key_pairs=jnp.tile(global_pairs, 2),
        query_patients=jnp.tile(patient_ids.astype(jnp.int32), 2),
        key_patients=jnp.tile(global_patients, 2),
        query_rank_offsets=jnp.repeat(jnp.array([g, 0], jnp.int32), n),
    )
