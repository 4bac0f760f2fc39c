"""The corpus pipeline's stages as a ray.data plan, run by curate/runner.py (which also runs
``curate augment canvas``); the stages know nothing of Ray.

driver:   list in batches (numbered: URI + ordinal = identity); on resume the ledger actors (routed
          by URI hash) say which are committed; the rest go to the object store in plan-sized blocks
  -> ingest   (CPU tasks: read, validate, orient, route)
  -> regions  (actor pool, model loaded once per actor: masks + salient boxes)
  -> documents (CPU actor pool, only when natural masks hold a GPU and pages use the OCR detector:
               pages' text-line regions and OCR captions, kept off the GPU actors)
  -> caption  (actor pool: OCR for documents, MLLM for natural images with the hf backend)
  -> retarget (actor pool, hf backend: captions -> questions)
  -> [vllm backends: one request row per region -> ray.data.llm processor(s) -> grouped back by image]
  -> write    (actors: dedup claims with the ledger actors routed by key, shards + parts written to the
               output, local or object storage; only the small part rows come back)
driver:   counts and progress from the part rows; index + manifest at the end (curate/io/corpus.py)
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from curate import backends
from curate.config import PipelineConfig
from curate.io import interrupt
from curate.io.corpus import BlockSink, CorpusRun
from curate.io.pacing import Pacer, lead_rows
from curate.io.sources import SourceError, listed_batches
from curate.records import QuarantineReason
from curate.rows import add_timing, quarantine, to_table
from curate.runner import IncompleteRun, Listed, RunKind, run_kind, take_commits
from curate.stages.ingest import IngestStage

log = logging.getLogger("curate")


# ---------------------------------------------------------------- stage adapters (no Ray imports)


def run_stage_on_table(stage_name: str, process: Callable[[list[dict]], list[dict]], table: pa.Table,
                       kinds: tuple[str, ...] | None = None) -> pa.Table:
    """Apply a stage to a block; a failing batch is retried row by row so one bad image is
    quarantined with the error instead of taking its neighbours (or the run) down. The stage's time
    is shared among the live rows of ``kinds`` (all when None): the rows it works on."""
    def works_on(row: dict) -> bool:
        return row["status"] == "ok" and (kinds is None or row["kind"] in kinds)

    rows = table.to_pylist()
    live = sum(1 for r in rows if works_on(r))
    start = time.perf_counter()
    try:
        rows = process(rows)
    except Exception:
        rows = [_process_one(stage_name, process, r) for r in table.to_pylist()]
    per_row = (time.perf_counter() - start) / max(live, 1)
    for row in rows:
        if works_on(row):
            add_timing(row, stage_name, per_row)
    return to_table(rows)


def _process_one(stage_name: str, process: Callable[[list[dict]], list[dict]], row: dict) -> dict:
    if row["status"] != "ok":
        return row
    try:
        return process([row])[0]
    except Exception as e:
        detail = f"{stage_name}: {type(e).__name__}: {e}"
        log.warning("%s failed on %s: %s", stage_name, row["uri"], traceback.format_exc(limit=3))
        return quarantine(row, QuarantineReason.stage_error.value, detail)


def ingest_batch(table: pa.Table, cfg: PipelineConfig) -> pa.Table:
    """Ingest as plain Ray tasks (no model to keep): one IngestStage per block."""
    return to_table(IngestStage(cfg).process(table.to_pylist()))


def board_reader(progress) -> Callable[[], dict[str, dict]]:
    """A reader of each stage's rows and calls running on the run's board (a ProgressActor)."""
    import ray

    return lambda: ray.get(progress.pacing_view.remote())


class StageActor:
    """Ray actor wrapper: builds the stage (and its model) once, then maps blocks; tells the run's
    progress board (a ProgressActor) what it is doing."""

    def __init__(self, stage_cls: type, cfg: PipelineConfig, progress=None, pace: tuple[str, int] | None = None,
                 tells_calls: bool = False):
        logging.basicConfig(level=logging.WARNING)
        self.progress, self.name, self.calls = progress, stage_cls.name, 0
        self.tells_calls = tells_calls  # the stage another one paces itself by: its calls running are read
        self.pacer = None
        if pace is not None and progress is not None:  # (downstream stage, rows this one may be ahead)
            self.pacer = Pacer(self.name, pace[0], pace[1], board_reader(progress),
                               on_wait=lambda waiting: self._tell("waiting", self.name, waiting))
        self._tell("loading", self.name)
        self.stage = stage_cls(cfg)
        self._tell("ready", self.name)

    def __del__(self):
        # Ray Data releases an actor it scales down gracefully, which runs this: the board counts
        # the actors still running (a pool shrinks and regrows with new actors; benchmarks/RESULTS.md).
        # An actor whose stage failed to build never said it was ready.
        if hasattr(self, "stage"):
            try:
                self._tell("stopped", self.name)
            except Exception:  # Ray already gone (the worker's own exit): nobody is left to tell
                pass

    def _tell(self, method: str, *args) -> None:
        if self.progress is not None:  # fire and forget: progress never slows a stage
            getattr(self.progress, method).remote(*args)

    def __call__(self, table: pa.Table) -> pa.Table:
        if self.pacer is not None:
            self.pacer.wait()  # outside the stage's timing: waiting is not work
        first = self.calls == 0
        self.calls += 1
        if first:
            self._tell("first_batch", self.name, True)
        # the board tells calls apart: actors' calls end in any order
        call_id = uuid.uuid4().hex if self.tells_calls else None
        if self.tells_calls:
            self._tell("call", self.name, call_id, True)
        try:
            out = run_stage_on_table(self.stage.name, self.stage.process, table, getattr(self.stage, "kinds", None))
        finally:
            if self.tells_calls:
                self._tell("call", self.name, call_id, False)
        if first:
            self._tell("first_batch", self.name, False)
        self._tell("rows", self.name, out.num_rows)
        return out


# ---------------------------------------------------------------- Ray plan


ACTOR_CPUS = 0.5  # CPUs a stage actor (GPU or not) and an ingest task reserve in Ray's accounting


class PlanError(ValueError):
    """The stages' actors cannot all run at once on this Ray cluster (Ray would wait forever)."""


@dataclass(frozen=True)
class ActorPool:
    name: str
    limit: int
    initial: int


def plan_actor_pools(stages: list[tuple[str, float]], resources: dict, max_actors: int,
                     actors_per_gpu: int = 1) -> list[ActorPool]:
    """Actor pool sizes for stages given as (name, GPUs per actor; 0 for CPU stages).

    Every stage needs one actor running at once for rows to flow (ingest tasks and writers too),
    so that minimum must fit the cluster, or Ray waits forever: refused with what each stage asks
    for. GPU stages get up to one actor per share of the GPUs; CPU stages scale with the CPUs. The
    first stage (masks, the heavy one in every pipeline) starts with as many actors as fit beside
    one of each other GPU stage: growing from one actor on measured utilisation costs the first
    seconds of every run, and taking every GPU would starve the stages after it. CPU stages after
    it start with up to a quarter of the CPUs, from what is left: their actors are cheap to start,
    and Ray Data grows a pool from one actor only once its queue has built (on an H200, the one
    documents actor held the photos behind it for the first 20 s of a run; benchmarks/RESULTS.md)."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    need_cpus = ACTOR_CPUS * (len(stages) + 1)  # one actor per stage and one ingest task
    need_gpus = sum(g for _, g in stages)
    if need_gpus > gpus + 1e-9 or need_cpus > cpus + 1e-9:
        asks = ", ".join(f"{name} {ACTOR_CPUS:g} CPU" + (f" + {g:g} GPU" if g else "") for name, g in stages)
        raise PlanError(
            f"the stages cannot run at once on this Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs): one actor of each "
            f"needs {need_cpus:g} CPUs and {need_gpus:g} GPUs ({asks}, ingest {ACTOR_CPUS:g} CPU). Lower the "
            "stages' num_gpus so that they add up to the GPUs (e.g. masks 0.6, captions 0.2, questions 0.2 on "
            "one GPU) or give Ray more CPUs (ray.num_cpus)")
    pools = []
    spare = cpus - need_cpus  # CPUs beyond one actor of each stage
    for i, (name, share) in enumerate(stages):
        limit = max(1, min(int(gpus / share + 1e-9), int(gpus) * actors_per_gpu)) if share else max_actors
        initial = 1
        if i == 0:
            fit = int(spare / ACTOR_CPUS + 1e-9) + 1
            if share:
                fit = min(fit, int((gpus - need_gpus) / share + 1e-9) + 1)
            initial = max(1, min(limit, fit))
        elif not share:
            initial = max(1, min(limit, int(cpus) // 4, int(spare / ACTOR_CPUS + 1e-9) + 1))
        spare -= (initial - 1) * ACTOR_CPUS
        pools.append(ActorPool(name, limit, initial))
    return pools


def stage_actor_class(stage_cls: type) -> type:
    """``StageActor`` under the stage's name, so that Ray's operator names, its workers' process titles
    and its dashboard say which stage an actor runs (``MapBatches(CaptionStageActor)``) rather than
    one name for every stage."""
    return type(f"{stage_cls.__name__}Actor", (StageActor,), {"__doc__": StageActor.__doc__})


def corpus_stages(cfg: PipelineConfig, ds, progress=None):
    """The corpus's stages over the listed rows (a ray.data Dataset): ingest tasks, the actor stages
    of ``stage_plan``, then any ray.data.llm steps; the runner adds the write stage."""
    import ray

    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    max_actors = cfg.ray.max_concurrency or max(1, cpus)
    ds = ds.map_batches(ingest_batch, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                        batch_size=cfg.ray.ingest_batch_size, num_cpus=0.5)
    gpus_in_cluster = int(resources.get("GPU", 0))
    if cfg.masks.num_gpus and not gpus_in_cluster:
        log.warning("no GPU in the Ray cluster: the %s mask generator runs on CPU (slow)", cfg.masks.natural.backend)
    stages = stage_plan(cfg, gpus_in_cluster > 0, cpus)
    pools = plan_actor_pools([(cls.name, gpus) for cls, gpus, _ in stages], resources, max_actors,
                             cfg.ray.actors_per_gpu)
    if progress is not None:
        progress.plan.remote([cls.name for cls, _, _ in stages])
    pace = masks_pace(cfg, stages, pools) if progress is not None else None
    for i, ((stage_cls, gpus, batch_size), pool) in enumerate(zip(stages, pools)):
        ds = ds.map_batches(
            stage_actor_class(stage_cls),
            fn_constructor_kwargs={"stage_cls": stage_cls, "cfg": cfg, "progress": progress,
                                   "pace": pace if i == 0 else None,
                                   "tells_calls": pace is not None and stage_cls.name == pace[0]},
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool.limit, initial_size=pool.initial),
            num_cpus=ACTOR_CPUS, num_gpus=gpus or None,
        )
    return add_llm_steps(ds, cfg)


def stage_plan(cfg: PipelineConfig, gpus_in_cluster: bool, cpus: int) -> list[tuple[type, float, int]]:
    """The actor stages in plan order, as (stage class, GPUs per actor, rows per batch); documents
    in a CPU stage of their own where ``documents_apart`` says so."""
    from curate.stages.caption import CaptionStage, NaturalCaptionStage
    from curate.stages.documents import PAGES_PER_CALL, DocumentStage, documents_apart
    from curate.stages.regions import NaturalRegionsStage, RegionsStage
    from curate.stages.retarget import RetargetStage

    mask_gpus = cfg.masks.num_gpus if gpus_in_cluster else 0
    natural = cfg.caption.natural
    caption_gpus = natural.num_gpus if gpus_in_cluster and getattr(natural, "runs_in_actor", False) else 0
    mask_batch = cfg.masks.batch_size or cfg.ray.cpu_batch_size
    # masks first either way: plan_actor_pools sizes the first stage
    if documents_apart(cfg, mask_gpus, cpus):
        stages = [(NaturalRegionsStage, mask_gpus, mask_batch), (DocumentStage, 0, PAGES_PER_CALL),
                  (NaturalCaptionStage, caption_gpus, images_per_call(cfg, natural))]
    else:
        stages = [(RegionsStage, mask_gpus, mask_batch), (CaptionStage, caption_gpus, images_per_call(cfg, natural))]
    if cfg.retarget.runs_in_actor:
        stages.append((RetargetStage, cfg.retarget.num_gpus if gpus_in_cluster else 0,
                       images_per_call(cfg, cfg.retarget)))
    return stages


def masks_pace(cfg: PipelineConfig, stages: list[tuple[type, float, int]],
               pools: list[ActorPool]) -> tuple[str, int] | None:
    """(the caption stage's name, rows the mask stage may be ahead of it) for the plan's first
    stage, or None where ``ray.masks_lead_calls`` is unset (the config refuses it without an hf
    caption stage to pace by)."""
    if cfg.ray.masks_lead_calls is None:
        return None
    from curate.stages.caption import CaptionStage

    for (stage_cls, _, rows_per_call), pool in zip(stages, pools):
        if stage_cls.name == CaptionStage.name:
            return stage_cls.name, lead_rows(cfg.ray.masks_lead_calls, rows_per_call, pool.limit)
    return None


def images_per_call(cfg: PipelineConfig, section) -> int:
    """Images per batch of a generation stage run in an actor: enough for one full model batch
    (``batch_size`` prompts, one per box, at most ``max_boxes`` per image). A caption or
    question batch of a few images' boxes leaves the GPU decoding a handful of rows at a time."""
    if not getattr(section, "runs_in_actor", False) or not getattr(section, "batch_size", None):
        return cfg.ray.cpu_batch_size
    return max(cfg.ray.cpu_batch_size, -(-section.batch_size // max(1, cfg.select.max_boxes)))


def llm_steps(cfg: PipelineConfig) -> list[str]:
    """Stages that run as ray.data.llm processors (vllm backends), in order."""
    steps = []
    if getattr(cfg.caption.natural, "runs_in_ray_llm", False):
        steps.append("caption")
    if cfg.retarget.runs_in_ray_llm:
        steps.append("retarget")
    return steps


def add_llm_steps(ds, cfg: PipelineConfig):
    """Explode image rows into request rows and run the vLLM processors over them."""
    from curate.backends.llm_vllm import build_processor
    from curate.stages.caption import caption_requests
    from curate.stages.retarget import chain_question_request, question_requests

    steps = llm_steps(cfg)
    if not steps:
        return ds
    natural, retarget = cfg.caption.natural, cfg.retarget
    if steps[0] == "caption":
        ds = ds.flat_map(lambda row: caption_requests(row, natural))
        ds = build_processor(natural, multimodal=True)(ds)
        if "retarget" in steps:
            ds = ds.map(lambda row: chain_question_request(row, natural, retarget))
    else:
        ds = ds.flat_map(lambda row: question_requests(row, retarget))
    if "retarget" in steps:
        ds = build_processor(retarget, multimodal=False)(ds)
    # Each image's answered requests meet again in a Ray shuffle, on the workers (image bytes never
    # pass through the driver); the shuffle is a barrier, so writing starts when the LLM work ends.
    return ds.groupby("uri").map_groups(lambda t: regroup_answers(t, cfg), batch_format="pyarrow")


def regroup_answers(requests: pa.Table, cfg: PipelineConfig) -> pa.Table:
    """One image's request rows -> its finished row (the merge of every step's answers)."""
    from curate.backends.llm_vllm import Reassembler

    done = []
    reassembler = Reassembler(lambda row, answers: merge_llm_answers(cfg, row, answers))
    for request in requests.to_pylist():
        row = reassembler.add(request)
        if row is not None:
            done.append(row)
    if reassembler.incomplete():
        raise RuntimeError(f"ray.data.llm returned no answer for part of {reassembler.incomplete()[0]}")
    return to_table(done)


def merge_llm_answers(cfg: PipelineConfig, row: dict, answers: list[list]) -> dict:
    """Driver side of ``add_llm_steps``: put each step's answers back into the image row."""
    from curate.stages.caption import merge_captions
    from curate.stages.retarget import merge_questions

    for step, name in enumerate(llm_steps(cfg)):
        mine = [a[step] for a in answers]
        row = merge_captions(row, mine, cfg.caption.natural) if name == "caption" else \
            merge_questions(row, mine, cfg.retarget)
    return row


def check_backends(cfg: PipelineConfig) -> None:
    """Fail before starting Ray when the config names a backend that cannot run here."""
    for section in cfg.masks.sections():
        backends.check_available(section)
    if llm_steps(cfg):
        try:
            import ray.data.llm  # noqa: F401
            import vllm  # noqa: F401
        except ImportError as e:
            raise backends.BackendUnavailable(
                f"the vllm backend needs vLLM and ray.data.llm: pip install 'curate[vllm]' ({e})") from e
    for kind, section in (("natural", cfg.masks.natural), ("document", cfg.masks.document)):
        checkpoint = getattr(section, "checkpoint", None)
        if checkpoint and not checkpoint.startswith("hf://") and not os.path.isfile(checkpoint):
            raise backends.BackendUnavailable(f"masks.{kind}.checkpoint {checkpoint}: no such file (give a local "
                                              "path or hf://OWNER/REPO/FILE)")
    for section in (cfg.caption.natural, cfg.caption.document, cfg.retarget):
        backends.check_available(section)


@dataclass
class RunResult:
    read: int
    written: int
    quarantined: int
    skipped_done: int
    output: str


def run_pipeline(cfg: PipelineConfig, on_progress: Callable[[int, int], None] | None = None,
                 on_start: Callable[[int, int], None] | None = None, verify: bool = False,
                 on_note: Callable[[str], None] | None = None, allow_empty: bool = False,
                 on_status: Callable[[dict | str], None] | None = None, limit: int | None = None) -> RunResult:
    """Run (or resume) the pipeline described by ``cfg``; returns the final counts.

    ``verify``: on resume, check every committed shard's sha256 (sizes are always checked).
    ``limit``: only the first ``limit`` listed inputs (a trial; a later run without it continues the output).
    ``on_status``: what is starting, then the stages' rows in flight (see ``_process``).
    """
    check_backends(cfg)
    run = CorpusRun(cfg.output.path, cfg, verify=verify).open()
    try:
        for note in run.notes:
            if on_note:
                on_note(note)
        listing = Listed()

        def listed(n: int) -> None:
            if not n and not allow_empty:
                raise SourceError(f"no input image in {', '.join(src.path for src in cfg.sources)} "
                                  "(pass --allow-empty to accept an empty run)")
            listing.set(n, run.resumed_rows)
            if on_start:
                on_start(listing.to_do, n - listing.to_do)

        batches = listed_batches(cfg.sources, limit=limit)
        skipped = take_commits(_process(cfg, run, batches, listed, on_status), run.committed,
                               listing, str(cfg.output.path), "samples", on_progress)
        run.finish()
    except KeyboardInterrupt:
        interrupt.ignore_further()  # a second Ctrl-C must not cut the cleanup short
        run.interrupted()
        raise
    except IncompleteRun:  # what is committed stays, marked interrupted, for the same command to resume
        run.interrupted()
        raise
    except BaseException:
        run.abort()
        raise
    counts = run.tally.counts
    return RunResult(counts.read, counts.written, counts.quarantined, skipped, str(run.layout.root))


def _process(cfg: PipelineConfig, run: CorpusRun, listing: Iterator[pa.Table],
             on_listed: Callable[[int], None],
             on_status: Callable[[dict | str], None] | None = None) -> Iterator[list[dict] | int]:
    """The Ray run (curate.runner): yields the part rows of each commit as the writers return them,
    then the number of listed inputs the ledger skipped as already committed."""
    kind = RunKind(identity_columns=("uri",),
                   sink=lambda target, numbers, ledger: BlockSink(target, cfg, numbers, ledger),
                   stages=lambda ds, board: corpus_stages(cfg, ds, board),
                   block_rows=cfg.ray.ingest_batch_size, paced=cfg.ray.masks_lead_calls is not None)
    yield from run_kind(cfg, run, kind, listing, on_listed, on_status)
