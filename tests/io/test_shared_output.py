"""Whether every node sees a local output: the verdict from each node's probe (the cluster run that
refuses a node in a mount namespace of its own is in tests/e2e/test_cluster.py)."""

from __future__ import annotations

from curate.io.shared_output import NodeView, blind_nodes, not_shared_message, read_probe


def test_a_node_that_reads_another_token_or_none_is_blind_and_one_that_did_not_answer_is_not_judged():
    views = [NodeView("10.0.0.1", "t0k"), NodeView("10.0.0.2", None), NodeView("10.0.0.3", "old"),
             NodeView("10.0.0.4", None, "PermissionError: denied"), NodeView("10.0.0.5", None, answered=False)]
    assert blind_nodes(views, "t0k") == ["10.0.0.2: no such file", "10.0.0.3: another run's file",
                                         "10.0.0.4: cannot read it (PermissionError: denied)"]
    assert blind_nodes(views[:1], "t0k") == []


def test_the_refusal_names_the_nodes_and_three_ways_out():
    message = not_shared_message("/data/out", ["10.0.0.2: no such file"], 3)
    assert message.startswith("/data/out: a local output must be one filesystem mounted at the same path")
    assert "1 of its 3 nodes" in message and "10.0.0.2: no such file" in message
    for way_out in ("--output s3://", "mount a shared filesystem", "--set output.writers=stream"):
        assert way_out in message


def test_a_probe_is_read_back_or_said_missing(tmp_path):
    (tmp_path / "probe").write_text("abc")
    assert read_probe(str(tmp_path / "probe")) == ("abc", None)
    assert read_probe(str(tmp_path / "gone")) == (None, None)
    token, error = read_probe(str(tmp_path))  # a folder: an error, told as such
    assert token is None and error.startswith("IsADirectoryError")
