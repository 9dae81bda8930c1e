"""Host syncs of the training loop: the stop signal is agreed inside the compiled step (one int32
max all-reduce), and a whole run reads nothing back from the devices between its sync steps
(logging, checkpoint, evaluation and last steps, and the step after a logging step, where that
step's metrics are read one step late).

The CPU backend ignores ``jax.transfer_guard`` (device memory is host memory), so reads are
counted where every device-to-host read of a ``jax.Array`` goes through: ``ArrayImpl._value``
(``np.asarray``, ``float``, ``int``, ``jax.device_get``).
"""

import collections
import threading

import jax
import numpy as np
from jax._src.array import ArrayImpl
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_train_step import LOSS_HPARAMS, TINY, _batch, _optimizer, _sharded

from configs import smoke
from pclr_jax.losses import get_loss
from pclr_jax.runtime.distributed import make_mesh
from pclr_jax.step.train_state import create_train_state, replicated
from pclr_jax.step.train_step import make_train_step
from pclr_jax.training import loop
from pclr_jax.training.metric_log import read_metrics


def _control(mesh, flags, nonfinite_step=0):
    sharding = NamedSharding(mesh, P("data"))
    return {
        "signals": jax.make_array_from_process_local_data(sharding, np.asarray(flags, np.int32)),
        "nonfinite_step": jax.device_put(np.int32(nonfinite_step), replicated(mesh)),
    }


def test_the_compiled_step_agrees_on_the_stop_signal_with_one_int32_max_all_reduce():
    mesh = make_mesh()
    optimizer, _ = _optimizer()
    loss = get_loss("ntxent", **LOSS_HPARAMS)
    step = make_train_step(TINY, get_loss("ntxent", **LOSS_HPARAMS), optimizer, mesh)
    state = create_train_state(TINY, loss, optimizer, jax.random.key(0), mesh)
    batch = _sharded(_batch(), mesh)
    control = _control(mesh, [0, 0, 0, 15, 0, 2, 0, 0])
    hlo = step.lower(state, batch, control).compile().as_text()
    agreed = [line for line in hlo.splitlines() if " s32[] all-reduce(" in line]
    assert len(agreed) == 1 and "pmax" in agreed[0], agreed

    # The lowest-numbered device holding a signal names it; none: 0. The first non-finite step
    # is carried through.
    state, metrics = step(state, batch, control)
    assert int(metrics["stop_signal"]) == 15 and int(metrics["nonfinite_step"]) == 0
    state, metrics = step(state, batch, _control(mesh, [0] * 8, nonfinite_step=7))
    assert int(metrics["stop_signal"]) == 0 and int(metrics["nonfinite_step"]) == 7


def test_a_run_reads_the_devices_only_at_sync_steps(tmp_path, tiny_synthetic_data_dir, monkeypatch):
    config = smoke.get_config()
    config.data.data_dir = str(tiny_synthetic_data_dir)
    config.model.unit_samples = (64,)
    config.model.unit_filters = (16,)
    config.total_steps = 12
    config.log_every_steps = 4
    config.checkpoint.every_steps = 6
    config.eval.every_steps = 12

    dispatched = [0]  # steps dispatched so far
    reads = collections.Counter()  # steps dispatched -> main-thread reads before the next one
    value = ArrayImpl._value

    def counted_value(self):
        if threading.current_thread() is threading.main_thread():
            reads[dispatched[0]] += 1
        return value.fget(self)

    def counting_make_train_step(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def counted_step(*step_args):
            result = step(*step_args)
            dispatched[0] += 1
            return result

        return counted_step

    monkeypatch.setattr(ArrayImpl, "_value", property(counted_value))
    monkeypatch.setattr(loop, "make_train_step", counting_make_train_step)
    loop.train_and_evaluate(config, tmp_path)

    assert dispatched[0] == 12
    # Reads: after step 5 and 9, the metrics of logging steps 4 and 8 (one step late); at 6, the
    # step checked before its checkpoint and the checkpoint itself. (Step 12, the last, and the
    # start-up reads, 0, are outside.) Nothing is read between those sync steps.
    assert {step for step in reads if 0 < step < 12} == {5, 6, 9}, reads
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [4, 8, 12, 12]
