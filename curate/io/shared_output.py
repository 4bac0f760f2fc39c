"""Whether every node of a Ray cluster sees a local output folder as the driver does.

On a cluster of several machines, write tasks run on every node and write a local ``--output`` on
the disk of the node they run on. Unless that folder is one shared filesystem mounted at the same
path everywhere, shards and parts would scatter over the nodes' own disks: the driver would count
samples whose files it cannot find. So before such a run the driver writes a probe file with a
random token into the output's ``.curate/`` and asks one task on each node to read it back.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass

from curate.io.ownership import OutputRefused

log = logging.getLogger("curate")

PROBE_TIMEOUT_S = 120.0  # a node that has not answered by then is reported, not waited for


class OutputNotShared(OutputRefused):
    """A local output that some node of the cluster does not see as the driver does."""


@dataclass(frozen=True)
class NodeView:
    """What one node's probe task found: the token it read (None: no such file there), or the error;
    ``answered`` False when the task did not come back in time."""

    address: str
    token: str | None
    error: str | None = None
    answered: bool = True


def read_probe(path: str) -> tuple[str | None, str | None]:
    """(token, error) of the probe file at ``path`` on the node this runs on."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), None
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"


def blind_nodes(views: list[NodeView], token: str) -> list[str]:
    """Each node that answered and does not see the driver's probe, with what it saw."""
    blind = []
    for view in views:
        if view.token == token or not view.answered:
            continue
        if view.error:
            seen = f"cannot read it ({view.error})"
        elif view.token is None:
            seen = "no such file"
        else:
            seen = "another run's file"
        blind.append(f"{view.address}: {seen}")
    return blind


def not_shared_message(root: str, blind: list[str], nodes: int) -> str:
    return (f"{root}: a local output must be one filesystem mounted at the same path on every node of the "
            f"cluster, and {len(blind)} of its {nodes} nodes do not see what the driver wrote there "
            f"({'; '.join(blind)}). Write to object storage (--output s3://BUCKET/PREFIX), mount a shared "
            "filesystem at this path on every node, or let the driver's node write every shard "
            "(--set output.writers=stream)")


def node_view(node: dict, ref, ready: bool) -> NodeView:
    """The NodeView of ``node`` (an entry of ``ray.nodes()``) from its probe task's result."""
    import ray

    address = node.get("NodeManagerAddress") or node["NodeID"]
    if not ready:
        return NodeView(address, None, answered=False)
    try:
        return NodeView(address, *ray.get(ref))
    except ray.exceptions.RayError:  # the node went away while answering
        return NodeView(address, None, answered=False)


def check_output_shared(root: str, probe_dir: str) -> None:
    """Raise OutputNotShared when a live node of the Ray cluster does not see ``probe_dir`` (a
    folder inside the local output ``root``) as the driver does. One node: nothing to check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) < 2:
        return
    token = secrets.token_hex(16)
    path = os.path.join(os.path.abspath(probe_dir), f"probe-{token[:8]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(read_probe)
        pending = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(path) for node in nodes]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=PROBE_TIMEOUT_S)
        views = [node_view(node, ref, ref in ready) for node, ref in zip(nodes, pending)]
    finally:
        os.remove(path)
    silent = [view.address for view in views if not view.answered]
    if silent:  # a node lost or too busy to run a task: it may yet write, so say so, but do not refuse
        log.warning("cannot tell whether node(s) %s see the output %s (no answer in %g s): a local output must be "
                    "one filesystem mounted at the same path on every node", ", ".join(silent), root,
                    PROBE_TIMEOUT_S)
    blind = blind_nodes(views, token)
    if blind:
        raise OutputNotShared(not_shared_message(root, blind, len(nodes)))
    log.debug("all %d nodes see the output %s", len(nodes), root)
