"""Ray glue of the corpus pipeline: turns a PipelineConfig into a ray.data plan and runs it (the stages
know nothing of Ray; ``curate augment canvas`` has its own small plan in curate/augment/run.py).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from curate import backends
from curate.config import PipelineConfig
from curate.io import interrupt
from curate.io.corpus import BlockSink, CorpusRun, StreamWriter, write_block
from curate.io.index import PART_SCHEMA, read_part
from curate.io.layout import OutputLayout
from curate.io.ledger import Ledger, identity, route
from curate.io.progress import StageBoard
from curate.io.sources import SourceError, block_sizes, listed_batches, rechunk
from curate.records import QuarantineReason
from curate.rows import ROW_SCHEMA, add_timing, quarantine, to_table
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


class StageActor:
    """Ray actor wrapper: builds the stage (and its model) once, then maps blocks; tells the run's
    progress board (a ProgressActor) what it is doing."""

    def __init__(self, stage_cls: type, cfg: PipelineConfig, progress=None):
        logging.basicConfig(level=logging.WARNING)
        self.progress, self.name, self.calls = progress, stage_cls.name, 0
        self._tell("loading", self.name)
        self.stage = stage_cls(cfg)
        self._tell("ready", self.name)

    def _tell(self, method: str, *args) -> None:
        if self.progress is not None:  # fire and forget: progress never slows a stage
            getattr(self.progress, method).remote(*args)

    def __call__(self, table: pa.Table) -> pa.Table:
        first = self.calls == 0
        self.calls += 1
        if first:
            self._tell("first_batch", self.name, True)
        out = run_stage_on_table(self.stage.name, self.stage.process, table, getattr(self.stage, "kinds", None))
        if first:
            self._tell("first_batch", self.name, False)
        self._tell("rows", self.name, out.num_rows)
        return out


class ProgressActor:
    """The run's StageBoard (curate.io.progress), fed by the stage actors, read by the driver."""

    def __init__(self):
        self.board = StageBoard()

    def plan(self, names: list[str]) -> None:
        self.board.plan(names)

    def loading(self, name: str) -> None:
        self.board.loading(name)

    def ready(self, name: str) -> None:
        self.board.ready(name)

    def first_batch(self, name: str, started: bool) -> None:
        self.board.first_batch(name, started)

    def rows(self, name: str, n: int) -> None:
        self.board.rows(name, n)

    def snapshot(self) -> dict:
        return self.board.snapshot()


# ---------------------------------------------------------------- Ray plan


STORAGE_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS"}


def init_ray(cfg: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # Workers write the output: the driver's object-storage settings go with them.
    storage = {name: value for name, value in os.environ.items() if name in STORAGE_ENV}
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning", **storage}}
    if address:
        node_ip = {"_node_ip_address": cfg.ray.node_ip_address} if cfg.ray.node_ip_address else {}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **node_ip)
    else:
        # "local" starts a private instance even when another cluster on this machine left its
        # address file behind; its services listen on loopback only.
        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus,
                 include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, configure_logging=True, logging_level=logging.WARNING)


RAY_SESSION: dict[str, str | None] = {"dir": None}  # the last run's Ray session directory (its logs)


def session_dir() -> str | None:
    try:
        import ray._private.worker as worker  # the session path has no public accessor

        return worker._global_node.get_session_dir_path()
    except Exception:  # a Ray without it: the logs stay where Ray put them
        return None


def quiet_ray_data_console() -> None:
    """Ray Data logs a status block every 10 s when stderr is no terminal (144 lines for a 3-minute
    run): keep those in its session log file and only warnings on the console."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.WARNING)


def skip_committed(table: pa.Table, ledger) -> pa.Table:
    """Drop the listed inputs that a verified part already holds. The ledger's actors decide (one
    call per listing batch and actor), so whoever lists keeps no set of committed URIs."""
    if not table.num_rows:
        return table
    done = ledger.skip(table["uri"].to_pylist(), table["ordinal"].to_pylist())
    return table.filter(pa.array([not d for d in done]))


def write_batch(table: pa.Table, sink: BlockSink) -> pa.Table:
    """The write stage: this batch's shards and parts go to the output from the worker."""
    rows = table.cast(ROW_SCHEMA).to_pylist()
    return pa.Table.from_pylist(write_block(rows, sink), schema=PART_SCHEMA)


class WriteActor:
    """The write stage as a small actor pool: a few long-lived writer processes rather than a new
    worker process for every write task (on a laptop each costs seconds of CPU to start)."""

    def __init__(self, sink: BlockSink):
        self.sink = sink

    def __call__(self, table: pa.Table) -> pa.Table:
        return write_batch(table, self.sink)


class StreamWriterActor:
    """``output.writers: stream``: one of the run's writers, beside the driver (curate.io.corpus.StreamWriter)."""

    def __init__(self, sink: BlockSink):
        self.writer = StreamWriter(sink)

    def add(self, table: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(self.writer.add(table.cast(ROW_SCHEMA).to_pylist()), schema=PART_SCHEMA)

    def flush(self) -> pa.Table:
        return pa.Table.from_pylist(self.writer.flush(), schema=PART_SCHEMA)


class StreamForward:
    """The plan's write stage in stream mode: hands each batch to the writer its content routes to
    (the same writer on a retry, which knows the batch) and passes on what that writer committed."""

    def __init__(self, writers: list):
        self.writers = writers

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        first = identity(table["uri"][0].as_py(), table["ordinal"][0].as_py()) if table.num_rows else ""
        return ray.get(self.writers[route(first, len(self.writers))].add.remote(table))


class ShardNumbers:
    """Shard numbers for write tasks: one per write attempt, so a retry never collides (canvas runs
    use it alone; the ledger's first actor hands them out for corpus runs)."""

    def __init__(self, first: int):
        self.next_number = first

    def take_number(self) -> int:
        self.next_number += 1
        return self.next_number - 1


class LedgerActor(ShardNumbers):
    """One shard of the run's ledger (curate/io/ledger.py), seeded from the committed parts itself.
    The first one also hands out shard numbers (one process fewer than a counter of its own)."""

    def __init__(self, index: int, count: int, root: str, parts: list[str], first_number: int = 0):
        super().__init__(first_number)
        self.ledger = Ledger(index, count)
        layout = OutputLayout.at(root)
        for name in parts:
            self.ledger.seed(read_part(layout.parts_dir / name, columns=["uri", "status", "key"]))

    def skip(self, uris, ordinals):
        return self.ledger.skip(uris, ordinals)

    def claim(self, keys, uris, ordinals):
        return self.ledger.claim(keys, uris, ordinals)

    def skipped(self) -> int:
        return self.ledger.n_skipped


class LedgerClient:
    """The ledger seen from the driver (skip) and the writers (claim): calls routed to the actor
    that holds each URI or key."""

    def __init__(self, actors: list):
        self.actors = actors

    def _routed(self, method: str, route_by: list[str], *columns: list) -> list:
        import ray

        n = len(self.actors)
        groups: dict[int, list[int]] = {}
        for i, text in enumerate(route_by):
            groups.setdefault(route(text, n), []).append(i)
        calls = {a: getattr(self.actors[a], method).remote(*([c[i] for i in idx] for c in columns))
                 for a, idx in groups.items()}
        out: list = [None] * len(route_by)
        for a, answers in zip(calls, ray.get(list(calls.values()))):
            for i, answer in zip(groups[a], answers):
                out[i] = answer
        return out

    def skip(self, uris, ordinals):
        return self._routed("skip", uris, uris, ordinals)

    def claim(self, keys, uris, ordinals):
        return self._routed("claim", keys, keys, uris, ordinals)


class NumberClient:
    def __init__(self, actor):
        self.actor = actor

    def __call__(self) -> int:
        import ray

        return ray.get(self.actor.take_number.remote())


def on_driver_node():
    """A scheduling strategy that keeps an actor on the driver's node: state the run needs until its
    end (numbers, ledger, open shards) must not go with a worker node that Ray Data survives losing."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def start_shard_numbers(first: int) -> NumberClient:
    """A number actor on the driver's node (see start_ledger), wrapped for the write tasks."""
    import ray

    return NumberClient(ray.remote(num_cpus=0, scheduling_strategy=on_driver_node())(ShardNumbers).remote(first))


def ledger_size(cfg: PipelineConfig) -> int:
    import ray

    return cfg.ray.ledger_actors or max(1, min(16, int(ray.cluster_resources().get("CPU", 1)) // 8))


def start_ledger(cfg: PipelineConfig, run: CorpusRun) -> LedgerClient:
    import ray

    n = ledger_size(cfg)
    parts = [p.name for p in run.layout.part_files()]
    # the resume and dedup state lives as long as the driver
    actor = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node())(LedgerActor)
    first = run.committer.next_number
    return LedgerClient([actor.remote(i, n, str(run.layout.root), parts, first) for i in range(n)])


ACTOR_CPUS = 0.5  # CPUs a stage actor (GPU or not) and an ingest task reserve in Ray's accounting


class IncompleteRun(RuntimeError):
    """The plan ended with inputs that no writer committed (their rows went with a failed writer)."""


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
    seconds of every run, and taking every GPU would starve the stages after it."""
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
    for i, (name, share) in enumerate(stages):
        limit = max(1, min(int(gpus / share + 1e-9), int(gpus) * actors_per_gpu)) if share else max_actors
        initial = 1
        if i == 0:
            fit = int((cpus - need_cpus) / ACTOR_CPUS + 1e-9) + 1  # CPUs left beside the others' minimum
            if share:
                fit = min(fit, int((gpus - need_gpus) / share + 1e-9) + 1)
            initial = max(1, min(limit, fit))
        pools.append(ActorPool(name, limit, initial))
    return pools


def build_dataset(cfg: PipelineConfig, chunks: list, sink: BlockSink, writers: list | None = None,
                  progress=None):
    """ray.data plan over the pending inputs (object refs of curate.rows tables): stages, then write
    (through ``writers``, StreamWriterActor handles, in stream mode; else by blocks on the workers)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress
    ctx.verbose_progress = False
    if not cfg.ray.verbose:
        quiet_ray_data_console()
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    max_actors = cfg.ray.max_concurrency or max(1, cpus)
    ds = ray.data.from_arrow_refs(chunks)
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
    for (stage_cls, gpus, batch_size), pool in zip(stages, pools):
        ds = ds.map_batches(
            StageActor, fn_constructor_kwargs={"stage_cls": stage_cls, "cfg": cfg, "progress": progress},
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool.limit, initial_size=pool.initial),
            num_cpus=ACTOR_CPUS, num_gpus=gpus or None,
        )
    ds = add_llm_steps(ds, cfg)
    # Writing is upload and copy work: no CPU reserved (Ray Data's per-operator reservation would
    # take it from the stages), one writer per 16 CPUs.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // 16))
    if writers:
        # Whole blocks as the last stage makes them: a batch size would hold rows back until it filled.
        return ds.map_batches(StreamForward, fn_constructor_kwargs={"writers": writers}, batch_format="pyarrow",
                              batch_size=None, num_cpus=0, compute=pool)
    return ds.map_batches(WriteActor, fn_constructor_kwargs={"sink": sink}, batch_format="pyarrow",
                          batch_size=cfg.output.shard_max_samples, num_cpus=0, compute=pool)


def stage_plan(cfg: PipelineConfig, gpus_in_cluster: bool, cpus: int) -> list[tuple[type, float, int]]:
    """The actor stages in plan order, as (stage class, GPUs per actor, rows per batch); documents
    in a CPU stage of their own where ``documents_apart`` says so."""
    from curate.stages.caption import CaptionStage, NaturalCaptionStage
    from curate.stages.documents import DocumentStage, documents_apart
    from curate.stages.regions import NaturalRegionsStage, RegionsStage
    from curate.stages.retarget import RetargetStage

    mask_gpus = cfg.masks.num_gpus if gpus_in_cluster else 0
    natural = cfg.caption.natural
    caption_gpus = natural.num_gpus if gpus_in_cluster and getattr(natural, "runs_in_actor", False) else 0
    mask_batch = cfg.masks.batch_size or cfg.ray.cpu_batch_size
    # masks first either way: plan_actor_pools sizes the first stage
    if documents_apart(cfg, mask_gpus, cpus):
        stages = [(NaturalRegionsStage, mask_gpus, mask_batch), (DocumentStage, 0, cfg.ray.cpu_batch_size),
                  (NaturalCaptionStage, caption_gpus, images_per_call(cfg, natural))]
    else:
        stages = [(RegionsStage, mask_gpus, mask_batch), (CaptionStage, caption_gpus, images_per_call(cfg, natural))]
    if cfg.retarget.runs_in_actor:
        stages.append((RetargetStage, cfg.retarget.num_gpus if gpus_in_cluster else 0,
                       images_per_call(cfg, cfg.retarget)))
    return stages


def writer_mode(cfg: PipelineConfig) -> str:
    """stream or blocks (``output.writers``; auto: stream on a one-node cluster)."""
    import ray

    if cfg.output.writers != "auto":
        return cfg.output.writers
    return "stream" if sum(1 for node in ray.nodes() if node.get("Alive")) == 1 else "blocks"


def start_stream_writers(cfg: PipelineConfig, sink: BlockSink) -> list:
    """Stream writers beside the driver: their open shards live as long as the run (a worker
    node's loss must not take rows that Ray Data already counts as done)."""
    import ray

    actor = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node())(StreamWriterActor)
    return [actor.remote(sink) for _ in range(max(1, int(ray.cluster_resources().get("CPU", 1)) // 16))]


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
                 on_status: Callable[[dict | str], None] | None = None) -> RunResult:
    """Run (or resume) the pipeline described by ``cfg``; returns the final counts.

    ``verify``: on resume, check every committed shard's sha256 (sizes are always checked).
    ``on_status``: what is starting, then the stages' rows in flight (see ``_process``).
    """
    check_backends(cfg)
    run = CorpusRun(cfg.output.path, cfg, verify=verify).open()
    try:
        for note in run.notes:
            if on_note:
                on_note(note)
        committed_before = run.resumed_rows
        state = {"total": 0}

        def listed(n: int) -> None:
            if not n and not allow_empty:
                raise SourceError(f"no input image in {', '.join(src.path for src in cfg.sources)} "
                                  "(pass --allow-empty to accept an empty run)")
            # Each committed occurrence of a URI skips one listed one; the exact count of skips is
            # the ledger's, known at the end.
            state["total"], state["listed"] = max(n - committed_before, 0), n
            if on_start:
                on_start(state["total"], n - state["total"])

        done = skipped = 0
        for rows in _process(cfg, run, listed_batches(cfg.sources), listed, on_status):
            if isinstance(rows, int):  # the ledger's count of skipped inputs, last
                skipped = rows
                continue
            run.committed(rows)
            done += len(rows)
            if on_progress:
                on_progress(done, max(state["total"], done))
        lost = state.get("listed", 0) - skipped - done
        if lost > 0:
            run.interrupted()
            raise IncompleteRun(f"{lost} inputs were not committed (a writer failed with a shard open); the "
                                f"committed samples are kept in {cfg.output.path}: run the same command again "
                                "to redo the rest")
        run.finish()
    except KeyboardInterrupt:
        interrupt.ignore_further()
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
    """The Ray run: yields the part rows of each commit as the writers return them, then the number
    of listed inputs the ledger skipped as already committed. ``on_status`` hears what is
    starting (a phrase) and then, every second, the stages' board (curate.io.progress)."""
    import ray

    status = on_status or (lambda _: None)
    status("starting Ray")
    init_ray(cfg)
    RAY_SESSION["dir"] = session_dir()
    interrupt.install()  # after Ray's start, which sets handlers of its own
    status("listing inputs")
    ledger = start_ledger(cfg, run)
    resuming = run.resumed_rows > 0
    listed = 0

    def pending() -> Iterator[pa.Table]:
        nonlocal listed
        for table in listing:
            listed += table.num_rows
            yield skip_committed(table, ledger) if resuming else table

    # Only inputs still to do go to the object store, in blocks sized for the plan: the driver
    # keeps their refs, never the listing.
    refs = [ray.put(block) for block in rechunk(pending(), block_sizes(cfg.ray.ingest_batch_size))]
    on_listed(listed)
    if refs:
        sink = BlockSink(run.target, cfg, NumberClient(ledger.actors[0]), ledger)
        writers = start_stream_writers(cfg, sink) if writer_mode(cfg) == "stream" else None
        board = ray.remote(num_cpus=0)(ProgressActor).remote()
        ds = build_dataset(cfg, refs, sink, writers, board)
        status("starting the stages")
        watch = BoardWatcher(board, status).start() if on_status else None
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
                yield batch.to_pylist()
        except KeyboardInterrupt:
            yield from flush_writers(writers, timeout=30)  # complete samples are committed
            raise
        finally:
            if watch:
                watch.stop()
        yield from flush_writers(writers)
    yield sum(ray.get([actor.skipped.remote() for actor in ledger.actors]))


class BoardWatcher:
    """Reads the stages' board every second on a thread and hands it to the display."""

    def __init__(self, board, on_status: Callable[[dict | str], None], every_s: float = 1.0):
        import threading

        self.board, self.on_status, self.every_s = board, on_status, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="curate-progress")

    def start(self) -> BoardWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.read()

    def read(self) -> None:
        import ray

        try:
            self.on_status(ray.get(self.board.snapshot.remote(), timeout=5))
        except Exception:  # a display must never end the run
            log.debug("progress board unavailable", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.read()  # the last counts, not those of up to a second ago


def flush_writers(writers: list | None, timeout: float | None = None) -> Iterator[list[dict]]:
    """The stream writers' open shards, committed (nothing to do in blocks mode)."""
    import ray

    for writer in writers or []:
        try:
            with interrupt.critical():
                rows = ray.get(writer.flush.remote(), timeout=timeout).to_pylist()
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:  # its rows are redone on resume
            log.warning("a writer's open shard was not committed: %s", e)
            continue
        yield rows
