"""The metric log on a remote workdir (a local folder standing in for ``gs://``: ``is_remote`` is
made to say so): records uploaded in parts at checkpoints and once whole at the end, so the bytes
written grow linearly with the records; a running log reads complete up to its last flush; a
resumed one drops the steps it will redo, in the final file and in the parts."""

import pytest
from etils import epath

from pclr_jax.training import metric_log
from pclr_jax.training.metric_log import MetricLog, read_metrics


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A folder the log takes for remote, and the bytes of every write to it (appending, which
    remote objects cannot do, fails)."""
    monkeypatch.setattr(metric_log, "is_remote", lambda path: True)
    written = []
    path_class = type(epath.Path(tmp_path))
    open_ = path_class.open

    def counted_open(self, mode="r", *args, **kwargs):
        assert "a" not in mode, f"{self} opened for appending"
        file = open_(self, mode, *args, **kwargs)
        if "w" in mode:
            write = file.write
            file.write = lambda data: written.append(len(data)) or write(data)
        return file

    monkeypatch.setattr(path_class, "open", counted_open)
    return tmp_path, written


def _steps(workdir):
    return [r["step"] for r in read_metrics(workdir / "metrics.jsonl")]


def test_a_remote_log_uploads_every_record_at_most_twice(remote):
    workdir, written = remote
    log = MetricLog(workdir)
    log.truncate_after(0)
    for step in range(1, 401):
        log.write(step, "train", {"loss": 1.0 / step, "learning_rate": 1e-3})
        if step % 20 == 0:
            log.flush()  # a checkpoint every 20 records
        if step == 210:  # a running log reads complete up to its last flush
            assert _steps(workdir) == list(range(1, 201))
    log.close()
    assert _steps(workdir) == list(range(1, 401))
    assert not log.parts_dir.exists()
    final_bytes = (workdir / "metrics.jsonl").stat().st_size
    # Every record in its part, then in the final file: linear. Rewriting the whole file at every
    # record, as before, wrote about 200 times the final size here.
    assert final_bytes <= sum(written) <= 2 * final_bytes


def test_a_resumed_remote_log_drops_the_steps_it_will_redo(remote):
    workdir, _ = remote
    killed = MetricLog(workdir)
    killed.truncate_after(0)
    for step in range(1, 61):
        killed.write(step, "train", {"loss": float(step)})
        if step % 25 == 0:
            killed.flush()
    killed.write(50, "eval", {"retrieval_top1": 0.5})  # written, never uploaded: lost with the run
    assert _steps(workdir) == list(range(1, 51))  # no close: the parts hold what was flushed

    resumed = MetricLog(workdir)
    resumed.truncate_after(30)
    assert _steps(workdir) == list(range(1, 31))
    assert not resumed.parts_dir.exists()
    for step in range(31, 41):
        resumed.write(step, "train", {"loss": -float(step)})
    resumed.flush()
    resumed.close()
    records = read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 41))
    assert [r["loss"] for r in records[30:]] == [-float(s) for s in range(31, 41)]
