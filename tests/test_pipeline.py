"""Pipeline assembly that needs no Ray: the stages' plan, how many images a generation stage takes
per call, how a stage's time is shared among its rows."""

from __future__ import annotations

import pytest

from curate.config import load_config
from curate.pipeline import StageActor, images_per_call, run_stage_on_table, stage_actor_class, stage_plan
from curate.rows import new_row, to_table
from tests.conftest import REPO


def test_generation_stages_take_enough_images_for_one_full_model_batch():
    cfg = load_config(REPO / "pipelines" / "ps3.yaml", [
        "caption.natural.backend=hf", "caption.natural.batch_size=256", "retarget.backend=hf",
        "retarget.batch_size=130", "select.max_boxes=4", "ray.cpu_batch_size=4"])
    assert images_per_call(cfg, cfg.caption.natural) == 64  # 256 crops at 4 boxes per image
    assert images_per_call(cfg, cfg.retarget) == 33  # rounded up: a batch is never left short
    few = load_config(REPO / "pipelines" / "ps3.yaml", ["caption.natural.backend=hf", "caption.natural.batch_size=8",
                                                        "ray.cpu_batch_size=4"])
    assert images_per_call(few, few.caption.natural) == 4  # never below the CPU stages' batch
    vllm = load_config(REPO / "pipelines" / "ps3.yaml", [])  # ray.data.llm sizes its own batches
    assert images_per_call(vllm, vllm.caption.natural) == vllm.ray.cpu_batch_size


def test_gpu_stages_sharing_one_gpu_each_get_an_actor():
    from curate.pipeline import plan_actor_pools

    shares = [("regions", 0.6), ("caption", 0.2), ("retarget", 0.2)]
    pools = plan_actor_pools(shares, {"CPU": 16, "GPU": 1}, 16)
    assert [(p.limit, p.initial) for p in pools] == [(1, 1), (1, 1), (1, 1)]  # one model copy per GPU
    pools = plan_actor_pools(shares, {"CPU": 16, "GPU": 1}, 16, actors_per_gpu=3)
    assert [(p.limit, p.initial) for p in pools] == [(1, 1), (3, 1), (3, 1)]
    pools = plan_actor_pools(shares, {"CPU": 16, "GPU": 4}, 16)
    assert [p.limit for p in pools] == [4, 4, 4]


def test_the_mask_stage_starts_with_what_the_other_stages_leave():
    from curate.pipeline import plan_actor_pools

    # half a GPU per mask actor: two would fit alone, but the captioner needs its share
    masks, caption = plan_actor_pools([("regions", 0.5), ("caption", 0.5)], {"CPU": 16, "GPU": 1}, 16,
                                      actors_per_gpu=2)
    assert (masks.limit, masks.initial) == (2, 1)
    masks, caption = plan_actor_pools([("regions", 1), ("caption", 1)], {"CPU": 16, "GPU": 8}, 16)
    assert (masks.limit, masks.initial) == (8, 7)
    # CPU stages: as many mask actors as CPUs allow beside one caption actor and one ingest task
    masks, caption = plan_actor_pools([("regions", 0), ("caption", 0)], {"CPU": 4}, 4)
    assert (masks.limit, masks.initial) == (4, 4) and caption.initial == 1  # 6 would fit: max_actors caps
    masks, caption = plan_actor_pools([("regions", 0), ("caption", 0)], {"CPU": 2}, 2)
    assert masks.initial == 2  # 2 x 0.5 + caption 0.5 + ingest 0.5 = 2 CPUs


def test_a_cpu_stage_between_gpu_stages_starts_with_a_quarter_of_the_cpus():
    from curate.pipeline import plan_actor_pools

    stages = [("regions", 0.6), ("documents", 0), ("caption", 0.2), ("retarget", 0.2)]
    masks, documents, caption, retarget = plan_actor_pools(stages, {"CPU": 16, "GPU": 1}, 16, actors_per_gpu=2)
    assert (documents.limit, documents.initial) == (16, 4) and caption.initial == retarget.initial == 1
    # only from the CPUs left: 4 CPUs hold one actor of each stage and an ingest task, and one more
    assert plan_actor_pools(stages, {"CPU": 4, "GPU": 1}, 4)[1].initial == 1
    # after a CPU pipeline's first stage, from what its actors left (16 x 0.5 CPUs; on 4 CPUs, none)
    masks, caption = plan_actor_pools([("regions", 0), ("caption", 0)], {"CPU": 16}, 16)
    assert (masks.initial, caption.initial) == (16, 4)


@pytest.mark.parametrize("stages,resources,short", [
    ([("regions", 0.6), ("caption", 0.6)], {"CPU": 16, "GPU": 1}, "1.2 GPUs"),
    ([("regions", 1), ("caption", 0), ("retarget", 0)], {"CPU": 1.5, "GPU": 1}, "2 CPUs"),
])
def test_stages_that_cannot_run_together_are_refused_with_what_each_asks(stages, resources, short):
    from curate.pipeline import PlanError, plan_actor_pools

    with pytest.raises(PlanError, match=short) as refused:
        plan_actor_pools(stages, resources, 4)
    assert all(name in str(refused.value) for name, _ in stages)


def test_the_plan_keeps_documents_off_the_gpu_mask_actor():
    def plan(sets, gpus, cpus=16):
        cfg = load_config(REPO / "pipelines" / "ps3.yaml", sets)
        return [(cls.__name__, g) for cls, g, _ in stage_plan(cfg, gpus, cpus)]

    hf = ["caption.natural.backend=hf", "retarget.backend=hf"]
    assert plan(hf, True) == [("NaturalRegionsStage", 1.0), ("DocumentStage", 0),
                              ("NaturalCaptionStage", 1.0), ("RetargetStage", 1.0)]
    assert plan(hf, False)[:2] == [("RegionsStage", 0), ("CaptionStage", 0)]  # no GPU: both kinds, as before
    same_masks = ["masks.document=null", *hf]
    assert plan(same_masks, True)[0] == ("RegionsStage", 1.0)
    assert plan(hf, True, cpus=2)[0] == ("RegionsStage", 1.0)  # no CPUs to spare for a stage of its own


def test_the_masks_are_paced_by_an_hf_caption_stage_when_asked():
    from curate.pipeline import ActorPool, masks_pace

    def pace(sets, limits=(1, 8, 1, 1)):
        cfg = load_config(REPO / "pipelines" / "ps3.yaml", sets)
        stages = stage_plan(cfg, True, 16)
        return masks_pace(cfg, stages, [ActorPool(cls.name, n, 1) for (cls, _, _), n in zip(stages, limits)])

    hf = ["caption.natural.backend=hf", "caption.natural.batch_size=720", "retarget.backend=hf"]
    assert pace(hf) is None  # unpaced unless asked
    assert pace([*hf, "ray.masks_lead_calls=3"]) == ("caption", 3 * 180)  # calls of 180 images
    assert pace([*hf, "ray.masks_lead_calls=2"], limits=(1, 8, 2, 1)) == ("caption", 3 * 180)  # two caption actors
    with pytest.raises(Exception, match="masks_lead_calls paces the masks by an hf caption stage"):
        pace(["ray.masks_lead_calls=3"])  # vLLM captions come after every actor stage: nothing to pace by
    with pytest.raises(Exception, match="masks_lead_calls"):
        load_config(REPO / "pipelines" / "ps3.yaml", [*hf, "ray.masks_lead_calls=1"])  # a call must gather


def test_a_stage_of_some_kinds_times_only_their_rows():
    rows = [new_row(f"{kind}{i}.png", "t") for i, kind in enumerate(["document", "natural", "document"])]
    for row, kind in zip(rows, ["document", "natural", "document"]):
        row.update(status="ok", kind=kind)
    out = run_stage_on_table("documents", lambda rs: rs, to_table(rows), kinds=("document",)).to_pylist()
    assert [r["timings"] is not None and "documents" in r["timings"] for r in out] == [True, False, True]
    every = run_stage_on_table("regions", lambda rs: rs, to_table(rows)).to_pylist()
    assert all("regions" in r["timings"] for r in every)


def test_each_stage_actor_carries_its_stage_name_through_ray_serialisation():
    import cloudpickle

    from curate.stages.caption import NaturalCaptionStage
    from curate.stages.regions import NaturalRegionsStage

    stages = (NaturalRegionsStage, NaturalCaptionStage)
    classes = [cloudpickle.loads(cloudpickle.dumps(stage_actor_class(cls))) for cls in stages]
    assert [c.__name__ for c in classes] == ["NaturalRegionsStageActor", "NaturalCaptionStageActor"]
    assert all(issubclass(c, StageActor) for c in classes)


def board_handle(board):
    """A StageBoard's methods as a Ray actor handle offers them (``.remote``), called in place."""
    class Handle:
        def __getattr__(self, method):
            return type("Method", (), {"remote": staticmethod(getattr(board, method))})

    return Handle()


class PassOn:
    name = "regions"

    def __init__(self, cfg):
        pass

    def process(self, rows):
        return rows


def test_the_stage_a_pacer_reads_says_when_its_calls_run():
    from curate.io.progress import StageBoard

    board, seen = StageBoard(), []

    class Captions(PassOn):
        name = "caption"

        def process(self, rows):
            seen.append(len(board.pacing_view()["caption"]["call_ages_s"]))
            return rows

    StageActor(Captions, None, progress=board_handle(board), tells_calls=True)(to_table([new_row("b.png", "t")]))
    view = board.pacing_view()["caption"]
    assert seen == [1] and view["rows"] == 1 and view["call_ages_s"] == [] and view["longest_call_s"] >= 0


def test_a_paced_stage_actor_waits_before_a_batch_until_a_caption_call_comes_back(monkeypatch):
    from curate.io.progress import StageBoard

    board = StageBoard()
    monkeypatch.setattr("curate.pipeline.board_reader", lambda progress: board.pacing_view)
    actor = StageActor(PassOn, None, progress=board_handle(board), pace=("caption", 2))
    naps = []

    def a_caption_call_returns(seconds):
        naps.append(seconds)
        board.rows("caption", 1)

    actor.pacer.sleep = a_caption_call_returns
    one_row = to_table([new_row("a.png", "t")])
    actor(one_row), actor(one_row)
    # the masks do not tell their calls: only the stage they pace by does
    assert naps == [] and board.pacing_view()["regions"] == {"rows": 2, "call_ages_s": [], "longest_call_s": 0.0}
    board.call("caption", "c1", True)  # a caption call runs
    actor(one_row)  # two rows ahead: waits once, until the captions give one back
    assert len(naps) == 1 and board.pacing_view()["regions"]["rows"] == 3


def test_a_stage_actor_tells_the_board_it_stopped_once_ready_and_not_before():
    from curate.io.progress import StageBoard

    board = StageBoard()
    actor = StageActor(PassOn, None, progress=board_handle(board))
    assert board.stages["regions"].ready == 1
    del actor  # Ray Data's graceful release of an idle actor drops the last reference
    assert (board.stages["regions"].ready, board.stages["regions"].stopped) == (0, 1)

    class Broken(PassOn):
        def __init__(self, cfg):
            raise RuntimeError("no model")

    with pytest.raises(RuntimeError):
        StageActor(Broken, None, progress=board_handle(board))
    import gc
    gc.collect()  # the half-built actor goes without a word: it never said it was ready
    assert (board.stages["regions"].ready, board.stages["regions"].stopped) == (0, 1)
