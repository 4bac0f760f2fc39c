"""Ray glue of the corpus pipeline: turns a PipelineConfig into a ray.data plan and runs it (the stages
know nothing of Ray; ``curate augment canvas`` has its own small plan in curate/augment/run.py).

sources (listed on the driver, already-committed inputs skipped)
  -> ingest   (CPU tasks: read, validate, orient, route)
  -> regions  (actor pool, model loaded once per actor: masks + salient boxes)
  -> caption  (actor pool: OCR for documents, MLLM for natural images with the hf backend)
  -> retarget (actor pool, hf backend: captions -> questions)
  -> [vllm backends: one request row per region -> ray.data.llm processor(s)]
  -> writer   (driver: reassembles request rows; shards + parts + index + manifest, see curate/io/corpus.py)
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
from curate.io.corpus import CorpusWriter
from curate.io.sources import SourceError, list_inputs
from curate.records import QuarantineReason
from curate.rows import ROW_SCHEMA, add_timing, quarantine, to_table
from curate.stages.ingest import IngestStage

log = logging.getLogger("curate")


# ---------------------------------------------------------------- stage adapters (no Ray imports)


def run_stage_on_table(stage_name: str, process: Callable[[list[dict]], list[dict]], table: pa.Table) -> pa.Table:
    """Apply a stage to a block; a failing batch is retried row by row so one bad image is
    quarantined with the error instead of taking its neighbours (or the run) down."""
    rows = table.to_pylist()
    live = sum(1 for r in rows if r["status"] == "ok")
    start = time.perf_counter()
    try:
        rows = process(rows)
    except Exception:
        rows = [_process_one(stage_name, process, r) for r in table.to_pylist()]
    per_row = (time.perf_counter() - start) / max(live, 1)
    for row in rows:
        if row["status"] == "ok":
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
    """Ray actor wrapper: builds the stage (and its model) once, then maps blocks."""

    def __init__(self, stage_cls: type, cfg: PipelineConfig):
        logging.basicConfig(level=logging.WARNING)
        self.stage = stage_cls(cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        return run_stage_on_table(self.stage.name, self.stage.process, table)


# ---------------------------------------------------------------- Ray plan


def init_ray(cfg: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if address:
        node_ip = {"_node_ip_address": cfg.ray.node_ip_address} if cfg.ray.node_ip_address else {}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **node_ip)
    else:
        # "local" starts a private instance even when another cluster on this machine left its
        # address file behind; its services listen on loopback only.
        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=cfg.ray.num_cpus,
                 include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, configure_logging=True, logging_level=logging.WARNING)


def quiet_ray_data_console() -> None:
    """Ray Data logs a status block every 10 s when stderr is no terminal (144 lines for a 3-minute
    run): keep those in its session log file and only warnings on the console."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.WARNING)


def build_dataset(cfg: PipelineConfig, pending: list[dict]):
    """ray.data plan for the pending inputs (rows in curate.rows format)."""
    import ray

    from curate.stages.caption import CaptionStage
    from curate.stages.regions import RegionsStage
    from curate.stages.retarget import RetargetStage

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress
    ctx.verbose_progress = False
    if not cfg.ray.verbose:
        quiet_ray_data_console()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    max_actors = cfg.ray.max_concurrency or max(1, cpus)
    # Small input blocks so ingest starts at once and spreads over every CPU.
    table = to_table(pending)
    step = max(1, min(cfg.ray.ingest_batch_size, -(-len(pending) // (2 * cpus))), -(-len(pending) // 20000))
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(pending), step)])
    ds = ds.map_batches(ingest_batch, fn_kwargs={"cfg": cfg}, batch_format="pyarrow",
                        batch_size=cfg.ray.ingest_batch_size, num_cpus=0.5)
    gpus_in_cluster = int(ray.cluster_resources().get("GPU", 0))
    mask_gpus = cfg.masks.num_gpus if gpus_in_cluster else 0
    if cfg.masks.num_gpus and not gpus_in_cluster:
        log.warning("no GPU in the Ray cluster: the %s mask generator runs on CPU (slow)", cfg.masks.natural.backend)
    natural = cfg.caption.natural
    caption_gpus = natural.num_gpus if gpus_in_cluster and getattr(natural, "runs_in_actor", False) else 0
    stages = [
        (RegionsStage, mask_gpus, cfg.masks.batch_size or cfg.ray.cpu_batch_size),
        (CaptionStage, caption_gpus, cfg.ray.cpu_batch_size),
    ]
    if cfg.retarget.runs_in_actor:
        stages.append((RetargetStage, cfg.retarget.num_gpus if gpus_in_cluster else 0, cfg.ray.cpu_batch_size))
    for stage_cls, gpus, batch_size in stages:
        # GPU stages get one actor per GPU; CPU stages scale with the CPUs.
        limit = max(1, int(gpus_in_cluster / gpus)) if gpus else max_actors
        ds = ds.map_batches(
            StageActor, fn_constructor_kwargs={"stage_cls": stage_cls, "cfg": cfg}, batch_format="pyarrow",
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=limit),
            num_cpus=0.5 if not gpus else 1, num_gpus=gpus or None,
        )
    return add_llm_steps(ds, cfg)


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
    return ds


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
                 on_note: Callable[[str], None] | None = None, allow_empty: bool = False) -> RunResult:
    """Run (or resume) the pipeline described by ``cfg``; returns the final counts.

    ``verify``: on resume, check every committed shard's sha256 (sizes are always checked).
    """
    check_backends(cfg)
    writer = CorpusWriter(cfg.output.path, cfg, verify=verify).open()
    try:
        for note in writer.notes:
            if on_note:
                on_note(note)
        # Each committed occurrence of a URI skips one listed occurrence, so an input listed twice
        # is accounted the same way (written, then duplicate) after a resume as in a clean run.
        remaining = writer.done_counts.copy()
        listed = 0
        pending: list[dict] = []
        for row in list_inputs(cfg.sources):
            listed += 1
            if remaining[row["uri"]] > 0:
                remaining[row["uri"]] -= 1
                continue
            pending.append(row)
        del remaining
        if not listed and not allow_empty:
            raise SourceError(f"no input image in {', '.join(src.path for src in cfg.sources)} "
                              "(pass --allow-empty to accept an empty run)")
        skipped = listed - len(pending)
        if on_start:
            on_start(len(pending), skipped)
        for i, row in enumerate(_process(cfg, pending), start=1):
            writer.add(row)
            if on_progress:
                on_progress(i, len(pending))
        writer.finish()
    except KeyboardInterrupt:
        interrupt.ignore_further()
        writer.interrupted()
        raise
    except BaseException:
        writer.abort()
        raise
    counts = writer.tally.counts
    return RunResult(counts.read, counts.written, counts.quarantined, skipped, str(writer.layout.root))


def _process(cfg: PipelineConfig, pending: list[dict]) -> Iterator[dict]:
    # Rows quarantined while listing skip Ray; the rest stream through it.
    to_ray = []
    for row in pending:
        if row["status"] == "quarantined":
            yield row
        else:
            to_ray.append(row)
    if not to_ray:
        return
    init_ray(cfg)
    interrupt.install()  # after Ray's start, which sets handlers of its own
    ds = build_dataset(cfg, to_ray)
    if not llm_steps(cfg):
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            yield from batch.cast(ROW_SCHEMA).to_pylist()
        return
    from curate.backends.llm_vllm import Reassembler

    reassembler = Reassembler(lambda row, answers: merge_llm_answers(cfg, row, answers))
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        for request in batch.to_pylist():
            row = reassembler.add(request)
            if row is not None:
                yield row
    if reassembler.incomplete():
        raise RuntimeError(f"ray.data.llm returned no answer for part of {len(reassembler.incomplete())} "
                           f"images, e.g. {reassembler.incomplete()[0]}")
