"""The run's progress board: what each stage is doing while rows are in flight, and a smoothed rate."""

import pytest

from curate.io.progress import SmoothedRate, StageBoard, describe


def test_the_board_says_what_each_stage_is_doing():
    board = StageBoard()
    board.loading("regions")
    board.loading("caption")
    assert describe(board.snapshot(), {}) == "regions loading model | caption loading model"
    board.ready("regions")
    board.first_batch("regions", True)
    assert describe(board.snapshot(), {}) == "regions first batch | caption loading model"
    board.first_batch("regions", False)
    board.rows("regions", 8)
    board.ready("caption")
    assert describe(board.snapshot(), {"regions": 1.25}) == "regions 8 (1.2/s) | caption 0"
    assert list(board.snapshot()) == ["regions", "caption"]  # plan order


def test_nothing_reported_yet_reads_starting():
    assert describe({}, {}) == "starting"


def test_rate_is_smoothed_over_the_window_and_none_before_progress():
    rate = SmoothedRate(window_s=10)
    assert rate.add(0, now=0.0) is None
    assert rate.add(0, now=5.0) is None  # work not yet through: no rate, no ETA of zero
    assert rate.add(10, now=10.0) == pytest.approx(1.0)
    assert rate.add(40, now=12.0) == pytest.approx(40 / 7)  # over the last 10 s (from t=5): a burst moves it
    assert rate.add(50, now=20.0) == pytest.approx(40 / 10)  # samples older than the window leave it
    assert rate.add(50, now=40.0) is None  # nothing through for a whole window: no rate, no ETA


def test_the_plan_orders_the_stages_whatever_reports_first():
    board = StageBoard()
    board.loading("caption")  # its actor happened to start first
    board.plan(["regions", "caption"])
    board.rows("regions", 3)
    assert list(board.snapshot()) == ["regions", "caption"]
