"""DDP on CPU: two processes over gloo train from their own shards and end with the same weights."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(shards: str, out: str, steps: int):
    from curate.train.config import TrainConfig

    return TrainConfig.model_validate({
        "data": {"shards": [shards]}, "model": {"low_res": 32, "hi_res": 64, "select_k": 4},
        "optim": {"steps": steps, "batch_size": 2, "warmup_steps": 1}, "out": out, "log_every": 1})


def run_rank(rank: int, world: int, port: int, shards: str, out: str, steps: int = 3) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from curate.train.loop import train

    cfg = tiny(shards, out, steps).model_copy(update={"save_every": 1})

    def save(model) -> None:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")

    logs = train(cfg, on_end=save)
    torch.save(logs, f"{out}/logs{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_stay_in_sync(tmp_path):
    from tests.io.test_corpus import write_question_corpus

    write_question_corpus(tmp_path / "corpus", n=4)  # two shards: one per rank
    out = tmp_path / "train"
    out.mkdir()
    mp.spawn(run_rank, args=(2, free_port(), str(tmp_path / "corpus" / "shards" / "*.tar"), str(out)), nprocs=2)
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    initial = torch.load(out / "last.pt", weights_only=False)["model"]  # rank 0's checkpoint, the same weights
    torch.testing.assert_close(initial["logit_bias"], a["logit_bias"])
    logs0, logs1 = torch.load(out / "logs0.pt"), torch.load(out / "logs1.pt")
    assert [r["step"] for r in logs0] == [r["step"] for r in logs1] == [1, 2, 3]
    assert logs0[0]["contrast"] != logs1[0]["contrast"]  # each rank read its own shard
    assert (out / "log.jsonl").read_text().count("\n") == 3  # written by rank 0 alone


def test_a_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path):
    """The checkpoint holds the unwrapped model: a run with another number of ranks continues it
    (the schedule and step count go on; the data order is that of the new world size)."""
    from curate.train.loop import train
    from tests.io.test_corpus import write_question_corpus

    write_question_corpus(tmp_path / "corpus", n=4)
    out = tmp_path / "train"
    out.mkdir()
    shards = str(tmp_path / "corpus" / "shards" / "*.tar")
    mp.spawn(run_rank, args=(2, free_port(), shards, str(out), 2), nprocs=2)
    ranks = torch.load(out / "rank0.pt")
    resumed = train(tiny(shards, str(out), 4))
    assert [r["step"] for r in resumed] == [3, 4] and all(r["total"] == r["total"] for r in resumed)
    saved = torch.load(out / "last.pt", weights_only=False)
    assert saved["step"] == 4 and not torch.equal(saved["model"]["logit_bias"], ranks["logit_bias"])

