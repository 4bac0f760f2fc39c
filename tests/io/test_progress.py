"""The run's progress board: what each stage is doing while rows are in flight, and a smoothed rate."""

import pytest

from curate.io.progress import LineEvery, SmoothedRate, StageBoard, describe, log_line, stage_series


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


def test_a_stage_with_several_actors_says_how_many_have_started():
    board = StageBoard()
    board.plan(["regions", "documents"])
    for _ in range(3):
        board.loading("documents")
        board.ready("documents")
    board.rows("documents", 5)
    assert describe(board.snapshot(), {}) == "documents loading model"  # its start, held for one read
    assert describe(board.snapshot(), {"documents": 0.5}) == "documents 5 (0.5/s, 3 actors)"
    assert describe(board.snapshot(), {}) == "documents 5 (3 actors)"
    line = log_line("0:00:10", "images", 0, 9, ["", "", describe(board.snapshot(), {}) + " | committed 0"])
    assert stage_series(line, "images") == {"documents": [(10, 5)]}


def test_a_phase_shorter_than_the_time_between_reads_is_still_shown_once():
    board = StageBoard()
    board.plan(["regions", "documents"])
    board.loading("regions")
    board.ready("regions")
    board.first_batch("regions", True)
    board.first_batch("regions", False)
    board.rows("regions", 2)
    board.loading("documents")  # still loading when read: shown live
    reads = [describe(board.snapshot(), {}) for _ in range(4)]
    assert reads == ["regions loading model | documents loading model",
                     "regions first batch | documents loading model",
                     "regions 2 | documents loading model",
                     "regions 2 | documents loading model"]
    board.ready("documents")
    board.loading("documents")  # a second actor of a running stage: no moment held
    assert describe(board.snapshot(), {}) == "regions 2 | documents 0"


def test_a_pacing_read_of_the_rows_leaves_the_displays_held_moments():
    board = StageBoard()
    board.loading("regions")
    board.ready("regions")
    board.call("regions", "c1", True)
    board.rows("regions", 4)
    assert board.pacing_view()["regions"]["rows"] == 4 and len(board.pacing_view()["regions"]["call_ages_s"]) == 1
    assert describe(board.snapshot(), {}) == "regions loading model"  # still there for the display
    board.waiting("regions", True)
    assert describe(board.snapshot(), {"regions": 2.0}) == "regions 4 (2.0/s, waiting for later stages)"
    board.waiting("regions", False)
    assert describe(board.snapshot(), {}) == "regions 4"


def test_calls_are_timed_by_the_boards_clock_and_told_apart_by_id():
    now = [100.0]
    board = StageBoard(clock=lambda: now[0])
    board.call("caption", "a", True)
    now[0] = 110.0
    board.call("caption", "b", True)  # a second actor's call
    now[0] = 140.0
    board.call("caption", "a", False)  # the first ends after 40 s, the second runs on
    board.call("caption", "gone", False)  # an end the board never saw begin changes nothing
    assert board.pacing_view()["caption"] == {"rows": 0, "call_ages_s": [30.0], "longest_call_s": 40.0}
    now[0] = 150.0
    board.call("caption", "b", False)
    assert board.pacing_view()["caption"] == {"rows": 0, "call_ages_s": [], "longest_call_s": 40.0}


def test_a_call_whose_actor_died_stops_holding_the_masks_back():
    from curate.io.pacing import STALE_CALL_FLOOR_S, should_wait

    now = [0.0]
    board = StageBoard(clock=lambda: now[0])
    board.rows("regions", 50)
    board.call("caption", "dies", True)  # its actor is killed: the call never ends
    assert should_wait(board.pacing_view(), "regions", "caption", limit=10)
    now[0] = STALE_CALL_FLOOR_S + 1
    assert not should_wait(board.pacing_view(), "regions", "caption", limit=10)
    board.call("caption", "next", True)  # the restarted actor's call is waited for again
    assert should_wait(board.pacing_view(), "regions", "caption", limit=10)


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


def test_a_log_gets_a_line_at_most_every_so_often():
    lines = LineEvery(every_s=10, start=100.0)
    assert [lines.due(now) for now in (100.0, 105.0, 110.0, 112.0, 119.9, 120.5)] == [
        False, False, True, False, False, True]  # counted from the last line, not from the start
    assert lines.elapsed(now=100.0 + 3725) == "1:02:05"


def test_a_log_of_progress_lines_reads_back_as_each_stage_over_time():
    board = StageBoard()
    board.plan(["regions", "caption"])
    board.rows("regions", 32)
    first = log_line("0:00:37", "images", 0, 300, ["", "", describe(board.snapshot(), {"regions": 2.3})
                                                    + " | committed 0"])
    board.rows("regions", 268)
    board.rows("caption", 64)
    second = log_line("0:01:32", "images", 64, 300, ["2.20 images/s", "ETA 1:47",
                                                     describe(board.snapshot(), {"caption": 2.2}) + " | committed 0"])
    log = "\n".join(["starting", first, "a warning in between", second])
    assert stage_series(log, "images") == {"regions": [(37, 32), (92, 300)], "caption": [(92, 64)]}
    assert stage_series(log, "canvases") == {}  # another run's unit


def test_actors_ray_data_stopped_leave_the_count_and_are_shown_stopped():
    board = StageBoard()
    board.plan(["documents"])
    for _ in range(4):
        board.loading("documents")
        board.ready("documents")
    board.rows("documents", 7)
    board.snapshot()  # the stage's start, held for one read
    board.stopped("documents")
    board.stopped("documents")
    board.loading("documents")
    board.ready("documents")  # the pool grows again with a new actor
    assert describe(board.snapshot(), {"documents": 2.0}) == "documents 7 (2.0/s, 3 actors, 2 stopped)"
