"""The one Ray runner of every output kind (``curate run`` and ``curate augment canvas``).

driver:   list in batches (numbered: member + ordinal = identity); on resume the ledger actors
          (routed by member hash, seeded from the committed parts) say which are committed; the
          rest go to the object store in plan-sized blocks
  -> the kind's stages (a RunKind's ``stages``: ray.data operators from listed rows to finished rows)
  -> write    (actors: dedup claims with the ledger actors routed by key, shards + parts written to
               the output, local or object storage; only the small part rows come back)
driver:   counts and progress from the part rows; the kind's run writes index + manifest at the end

What differs between kinds is a RunKind: how an input is named, its Sink (curate/io/writing.py) and
its stages. The committer (curate/io/committer.py) is shared too, so every kind gets the same
ownership, lock, verified resume, object-storage output and exactly-once commits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from curate.io import interrupt
from curate.io.committer import CommitTarget, Committer
from curate.io.fs import DRIVER_CWD_ENV, driver_cwd
from curate.io.index import read_part
from curate.io.layout import OutputLayout
from curate.io.ledger import Ledger, members, route
from curate.io.progress import StageBoard
from curate.io.shared_output import check_output_shared
from curate.io.sources import block_sizes, rechunk, rechunk_by_group
from curate.io.writing import Sink, StreamWriter, write_table

log = logging.getLogger("curate")

STORAGE_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS"}


def init_ray(cfg) -> None:
    """Join ``cfg.ray.address`` (or RAY_ADDRESS), else start a private local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # Workers write the output: the driver's object-storage settings go with them.
    storage = {name: value for name, value in os.environ.items() if name in STORAGE_ENV}
    # relative local paths (inputs, output) name the driver's folders on every node
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning", DRIVER_CWD_ENV: driver_cwd(),
                                **storage}}
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


def configure_ray_data(cfg) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress
    ctx.verbose_progress = False
    if not cfg.ray.verbose:
        quiet_ray_data_console()


# ---------------------------------------------------------------- resume and dedup state


def skip_committed(table: pa.Table, ledger, identity_columns: tuple[str, ...] = ("uri",)) -> pa.Table:
    """Drop the listed inputs that a verified part already holds. The ledger's actors decide (one
    call per listing batch and actor), so whoever lists keeps no set of committed inputs."""
    if not table.num_rows:
        return table
    done = ledger.skip(members(table, identity_columns), table["ordinal"].to_pylist())
    return table.filter(pa.array([not d for d in done]))


class ShardNumbers:
    """Shard numbers for write tasks: one per write attempt, so a retry never collides (the ledger's
    first actor hands them out)."""

    def __init__(self, first: int):
        self.next_number = first

    def take_number(self) -> int:
        self.next_number += 1
        return self.next_number - 1


class LedgerActor(ShardNumbers):
    """One shard of the run's ledger (curate/io/ledger.py), seeded from the committed parts itself.
    The first one also hands out shard numbers (one process fewer than a counter of its own)."""

    def __init__(self, index: int, count: int, root: str, parts: list[str], first_number: int,
                 identity_columns: tuple[str, ...], part_schema: pa.Schema):
        super().__init__(first_number)
        self.ledger = Ledger(index, count, identity_columns)
        layout = OutputLayout.at(root)
        columns = [*identity_columns, "status", "key"]
        for name in parts:
            self.ledger.seed(read_part(layout.parts_dir / name, part_schema, columns))

    def skip(self, uris, ordinals):
        return self.ledger.skip(uris, ordinals)

    def claim(self, keys, uris, ordinals):
        return self.ledger.claim(keys, uris, ordinals)

    def skipped(self) -> int:
        return self.ledger.n_skipped


class LedgerClient:
    """The ledger seen from the driver (skip) and the writers (claim): calls routed to the actor
    that holds each member or key."""

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


def ledger_size(cfg) -> int:
    import ray

    return cfg.ray.ledger_actors or max(1, min(16, int(ray.cluster_resources().get("CPU", 1)) // 8))


def start_ledger(cfg, committer: Committer, identity_columns: tuple[str, ...]) -> LedgerClient:
    """The ledger's actors, seeded from the committed parts; the first hands out shard numbers."""
    import ray

    n = ledger_size(cfg)
    layout = committer.layout
    parts = [p.name for p in layout.part_files()]
    # the resume and dedup state lives as long as the driver
    actor = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node())(LedgerActor)
    return LedgerClient([actor.remote(i, n, str(layout.root), parts, committer.next_number, identity_columns,
                                      committer.part_schema) for i in range(n)])


# ---------------------------------------------------------------- writers


class WriteActor:
    """The write stage as a small actor pool: a few long-lived writer processes rather than a new
    worker process for every write task (on a laptop each costs seconds of CPU to start)."""

    def __init__(self, sink: Sink):
        self.sink = sink

    def __call__(self, table: pa.Table) -> pa.Table:
        return write_table(table, self.sink)


class StreamWriterActor:
    """``output.writers: stream``: one of the run's writers, beside the driver (curate.io.writing.StreamWriter)."""

    def __init__(self, sink: Sink):
        self.writer = StreamWriter(sink)

    def add(self, table: pa.Table) -> pa.Table:
        return self.writer.add_table(table)

    def flush(self) -> pa.Table:
        return self.writer.flush_table()


class StreamForward:
    """The plan's write stage in stream mode: hands each batch to the writer its content routes to
    (the same writer on a retry, which knows the batch) and passes on what that writer committed."""

    def __init__(self, writers: list):
        self.writers = writers

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        # the first row's ordinal names the batch (unique in the listing), without copying a row's bytes
        first = str(table["ordinal"][0].as_py()) if table.num_rows else ""
        return ray.get(self.writers[route(first, len(self.writers))].add.remote(table))


def writer_mode(cfg) -> str:
    """stream or blocks (``output.writers``; auto, and for outputs without the key: stream on a
    one-node cluster)."""
    import ray

    chosen = getattr(cfg.output, "writers", "auto")
    if chosen != "auto":
        return chosen
    return "stream" if sum(1 for node in ray.nodes() if node.get("Alive")) == 1 else "blocks"


def start_stream_writers(sink: Sink) -> list:
    """Stream writers beside the driver: their open shards live as long as the run (a worker
    node's loss must not take rows that Ray Data already counts as done)."""
    import ray

    actor = ray.remote(num_cpus=0, scheduling_strategy=on_driver_node())(StreamWriterActor)
    return [actor.remote(sink) for _ in range(max(1, int(ray.cluster_resources().get("CPU", 1)) // 16))]


def add_write_stage(ds, cfg, sink: Sink, writers: list | None):
    """The plan's last operator: through ``writers`` (stream mode) or by blocks on the workers."""
    import ray

    # Writing is upload and copy work: no CPU reserved (Ray Data's per-operator reservation would
    # take it from the stages), one writer per 16 CPUs.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(ray.cluster_resources().get("CPU", 1)) // 16))
    if writers:
        # Whole blocks as the last stage makes them: a batch size would hold rows back until it filled.
        return ds.map_batches(StreamForward, fn_constructor_kwargs={"writers": writers},
                              batch_format="pyarrow", batch_size=None, num_cpus=0, compute=pool)
    return ds.map_batches(WriteActor, fn_constructor_kwargs={"sink": sink}, batch_format="pyarrow",
                          batch_size=cfg.output.shard_max_samples, num_cpus=0, compute=pool)


def check_writers_see_output(layout: OutputLayout) -> None:
    """Refuse a local output that some node of a several-node cluster does not share (OutputNotShared)."""
    if layout.remote:
        return
    check_output_shared(str(layout.root), str(layout.meta_dir))


def make_and_write(table: pa.Table, make: Callable[[pa.Table], pa.Table], sink: Sink) -> pa.Table:
    """A write task that first makes its rows (a RunKind's ``make_in_writer``): only part rows leave it."""
    return write_table(make(table), sink)


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


# ---------------------------------------------------------------- progress


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

    def stopped(self, name: str) -> None:
        self.board.stopped(name)

    def first_batch(self, name: str, started: bool) -> None:
        self.board.first_batch(name, started)

    def rows(self, name: str, n: int) -> None:
        self.board.rows(name, n)

    def snapshot(self) -> dict:
        return self.board.snapshot()

    def call(self, name: str, call_id: str, started: bool) -> None:
        self.board.call(name, call_id, started)

    def waiting(self, name: str, started: bool) -> None:
        self.board.waiting(name, started)

    def pacing_view(self) -> dict[str, dict]:
        return self.board.pacing_view()


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


# ---------------------------------------------------------------- the driver loop


class IncompleteRun(RuntimeError):
    """The plan ended with inputs that no writer committed (their rows went with a failed writer)."""


@dataclass
class Listed:
    """What the listing found, told by ``run_kind``'s ``on_listed``: every listed input, and those
    left to do (listed minus the rows the parts already hold: the progress bar's total)."""

    inputs: int = 0
    to_do: int = 0

    def set(self, listed: int, resumed_rows: int) -> None:
        # Each committed occurrence of an input skips one listed one; the exact count of skips is
        # the ledger's, known at the end.
        self.inputs, self.to_do = listed, max(listed - resumed_rows, 0)


def take_commits(results: Iterator[list[dict] | int], committed: Callable[[list[dict]], None], listed: Listed,
                 output: str, what: str, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Hand each commit's part rows from ``run_kind`` to ``committed`` as they come; returns how many
    listed inputs the ledger skipped. Raises IncompleteRun when inputs are left that no writer
    committed (``what`` names the samples in its message)."""
    done = skipped = 0
    for rows in results:
        if isinstance(rows, int):  # the ledger's count of skipped inputs, last
            skipped = rows
            continue
        committed(rows)
        done += len(rows)
        if on_progress:
            on_progress(done, max(listed.to_do, done))
    lost = listed.inputs - skipped - done
    if lost > 0:
        raise IncompleteRun(f"{lost} inputs were not committed (a writer failed with a shard open); the committed "
                            f"{what} are kept in {output}: run the same command again to redo the rest")
    return skipped


# Rows per block when the listing is cut along shared groups: row groups of up to 64 rows (half of it)
# are never cut, and equal groups of up to 128 get a block each (HF datasets writes images 100 to a group).
GROUP_BLOCK_ROWS = 128


@dataclass(frozen=True)
class RunKind:
    """What a kind of output gives the runner.

    ``identity_columns``: the listing's (and the parts') columns that name an input.
    ``sink``: (commit target, shard numbers, ledger) -> the kind's Sink for the writers.
    ``stages``: (dataset of listed rows, progress board actor) -> dataset of finished rows.
    ``block_rows``: listed rows per block of the plan's first operator.
    ``groups``: each listed row's group of shared input (a parquet table's row groups), if any: the
    listing's blocks are then cut along the groups (rechunk_by_group).
    ``paced``: a stage paces itself by the progress board's counts (which then exists even when no
    display reads it).
    ``make_in_writer``: the kind's last step, run inside its write task on each batch of at most
    ``block_rows`` rows (then every batch is its own shards): rows whose bytes are large and quick
    to make (canvases) are written where they are made instead of being copied to a writer process
    (10% of a laptop's canvas run, benchmarks/RESULTS.md).
    """

    identity_columns: tuple[str, ...]
    sink: Callable[[CommitTarget, Callable[[], int], LedgerClient], Sink]
    stages: Callable[[object, object], object]
    block_rows: int
    paced: bool = False
    make_in_writer: Callable[[pa.Table], pa.Table] | None = None
    groups: Callable[[pa.Table], list[int]] | None = None


def run_kind(cfg, run, kind: RunKind, listing: Iterator[pa.Table], on_listed: Callable[[int], None],
             on_status: Callable[[dict | str], None] | None = None) -> Iterator[list[dict] | int]:
    """The Ray run of ``run`` (a CorpusRun or CanvasRun, opened): yields the part rows of each
    commit as the writers return them, then the number of listed inputs the ledger skipped as
    already committed. ``on_status`` hears what is starting (a phrase) and then, every second, the
    stages' board (curate.io.progress)."""
    import ray

    status = on_status or (lambda _: None)
    status("starting Ray")
    init_ray(cfg)
    RAY_SESSION["dir"] = session_dir()
    interrupt.install()  # after Ray's start, which sets handlers of its own
    status("listing inputs")
    ledger = start_ledger(cfg, run.committer, kind.identity_columns)
    resuming = run.resumed_rows > 0
    listed = 0

    def pending() -> Iterator[pa.Table]:
        nonlocal listed
        for table in listing:
            listed += table.num_rows
            yield skip_committed(table, ledger, kind.identity_columns) if resuming else table

    # Only inputs still to do go to the object store, in blocks sized for the plan: the driver
    # keeps their refs, never the listing.
    blocks = (rechunk(pending(), block_sizes(kind.block_rows)) if kind.groups is None
              else rechunk_by_group(pending(), kind.groups, block_sizes(GROUP_BLOCK_ROWS)))
    refs = [ray.put(block) for block in blocks]
    on_listed(listed)
    if not refs:  # every input committed already (or none listed): the bar says so, not "listing inputs"
        status("nothing left to do")
    if refs:
        configure_ray_data(cfg)
        sink = kind.sink(run.target, NumberClient(ledger.actors[0]), ledger)
        # the board's actor only when someone watches it or paces by it (one process fewer on a laptop)
        board = ray.remote(num_cpus=0)(ProgressActor).remote() if on_status or kind.paced else None
        ds = kind.stages(ray.data.from_arrow_refs(refs), board)
        if kind.make_in_writer is not None:
            writers = None
            # Batches of block_rows: past the first 4,096 blocks the input blocks grow (block_sizes),
            # and a call holds every row it makes until it commits them.
            ds = ds.map_batches(make_and_write, fn_kwargs={"make": kind.make_in_writer, "sink": sink},
                                batch_format="pyarrow", batch_size=kind.block_rows, num_cpus=1)
        else:
            writers = start_stream_writers(sink) if writer_mode(cfg) == "stream" else None
            ds = add_write_stage(ds, cfg, sink, writers)
        if not writers:  # tasks on every node write: a local output must be the same folder on each
            check_writers_see_output(run.committer.layout)
        status("starting the stages")
        watch = BoardWatcher(board, status).start() if board is not None else None
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
