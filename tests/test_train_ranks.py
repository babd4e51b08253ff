"""The pieces of a data-parallel run that need no process group: shards and the job's ending."""

from __future__ import annotations

import types

from engine import protocol
from engine.train.distributed import DistContext, shard_bounds
from engine.train.launch import decide_outcome


def test_shards_cover_the_global_batch_in_order():
    for n in range(1, 9):
        for world in (1, 2, 3, 4):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(3, 1, 2) == (2, 3)
    assert shard_bounds(1, 1, 2) == (1, 1)  # an empty shard


def test_a_rank_with_an_empty_shard_trains_a_stand_in_with_weight_zero():
    from engine.data.dataset import BatchSpec, SampleSpec

    batch = BatchSpec(7, 1, (64, 64), (SampleSpec(3, False, "a", 1),))
    rank1 = DistContext(rank=1, world_size=2)
    shard = rank1.shard(batch)
    assert shard.weight == 0.0 and shard.n_global == 1 and len(shard.batch.samples) == 1
    rank0 = DistContext(rank=0, world_size=2).shard(batch)
    assert rank0.weight == 1.0 and rank0.batch.samples == batch.samples
    single = DistContext.single().shard(batch)
    assert single.batch is batch and single.weight == 1.0


def _failure(exitcode, timestamp=0):
    return types.SimpleNamespace(exitcode=exitcode, timestamp=timestamp)


def test_a_dead_rank_makes_the_run_interrupted_naming_it():
    results = {
        0: {"rank": 0, "status": "failed", "error": {"message": "Connection closed by peer"}, "time": 5}
    }
    status, lora, error = decide_outcome(results, {1: _failure(-9, 3), 0: _failure(1, 6)}, 2)
    assert status == protocol.INTERRUPTED and lora is None
    assert error["message"].startswith("rank 1 of 2 was killed by SIGKILL; then rank 0: Connection closed")
    assert error["where"] == "rank 1" and "resume" in error["hint"]


def test_a_rank_error_fails_the_run_with_its_rank():
    results = {
        0: {"status": "failed", "error": {"message": "peer gone"}, "time": 9},
        1: {"status": "failed", "error": {"message": "the loss became nan", "where": "train"}, "time": 4},
    }
    status, _, error = decide_outcome(results, {0: _failure(1), 1: _failure(1)}, 2)
    assert status == protocol.FAILED
    assert error["message"] == "rank 1 of 2: the loss became nan" and error["where"] == "train"


def test_rank_zero_speaks_for_a_clean_ending():
    done = {
        0: {"status": "done", "lora": "/r/x.safetensors", "error": None, "time": 2},
        1: {"status": "done", "error": None},
    }
    assert decide_outcome(done, {}, 2) == ("done", "/r/x.safetensors", None)
    # stopped before training: rank 1 then lost its peer in a barrier; that is not the run's failure
    stopped = {
        0: {"status": "stopped", "error": None, "time": 2},
        1: {"status": "failed", "error": {"message": "x"}, "time": 3},
    }
    assert decide_outcome(stopped, {1: _failure(1)}, 2)[0] == "stopped"
    # no report at all from rank 0 (the agent itself was stopped first)
    assert decide_outcome({}, {}, 2)[0] == protocol.INTERRUPTED


def test_resume_may_change_devices_but_not_the_global_batch(tmp_path):
    import json

    from engine.config import load_config_text
    from engine.train.resume import global_batch_change

    state = tmp_path / "step000004"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"global_batch_size": 4}))

    def cfg(batch, devices):
        return load_config_text(
            f'name = "r"\n[train]\nbatch_size = {batch}\ndevices = {devices}\n', workspace=tmp_path
        )

    for batch, devices in ((4, 1), (2, 2), (1, 4), (1, "[0, 3, 5, 6]")):
        assert global_batch_change(state, {}, cfg(batch, devices)) is None
    saved, now, what, fit = global_batch_change(state, {}, cfg(2, 1))
    assert (saved, now) == (4, 2)
    assert what.startswith("the global batch goes from 4 to 2 samples (train.batch_size 2 x 1 device(s))")
    assert fit == "set train.batch_size = 4 for 1 device(s)"
    assert global_batch_change(state, {}, cfg(1, 3))[3] == "use a device count that divides 4"
    # the number of ranks actually running counts (a torchrun launch), not the config's devices
    assert global_batch_change(state, {}, cfg(1, 1), world=4) is None
    # a state from before devices existed: its config's batch size on one device
    (state / "state.json").write_text("{}")
    assert global_batch_change(state, {"train.batch_size": 2}, cfg(1, 2)) is None
    assert global_batch_change(state, {"train.batch_size": 2}, cfg(2, 2))[:2] == (2, 4)
    assert global_batch_change(state, {}, cfg(2, 2)) is None  # nothing recorded: nothing to compare
