"""Pacing the mask stage by the captions: how far ahead it may be, and that it waits exactly while it
is that far ahead and a caption call is running."""

from curate.io.pacing import STALE_CALL_FLOOR_S, Pacer, lead_rows, live_calls, rows_ahead, should_wait


def test_rows_ahead_are_those_passed_on_and_not_yet_back():
    rows = {"regions": {"rows": 40}, "documents": {"rows": 38}, "caption": {"rows": 16}}
    assert rows_ahead(rows, "regions", "caption") == 24
    assert rows_ahead({"regions": {"rows": 4}}, "regions", "caption") == 4  # no caption call has returned yet
    assert rows_ahead({}, "regions", "caption") == 0


def test_the_lead_leaves_room_for_a_call_per_caption_actor_and_one_gathering():
    assert lead_rows(3, rows_per_call=180, downstream_actors=1) == 540
    assert lead_rows(2, rows_per_call=180, downstream_actors=2) == 540  # two calls running, a third gathering


def board(regions: int, caption: int, caption_calls: int, call_age_s: float = 5.0, longest_call_s: float = 0.0) -> dict:
    return {"regions": {"rows": regions, "call_ages_s": [], "longest_call_s": 0.0},
            "caption": {"rows": caption, "call_ages_s": [call_age_s] * caption_calls, "longest_call_s": longest_call_s}}


def test_the_masks_wait_only_while_far_ahead_and_a_caption_call_runs():
    assert should_wait(board(12, 0, 1), "regions", "caption", 12)
    assert not should_wait(board(11, 0, 1), "regions", "caption", 12)  # within the lead
    # no caption call running: the captions wait for rows (some may sit in a mask task's unfinished
    # output), so masks that waited now would wait forever
    assert not should_wait(board(30, 0, 0), "regions", "caption", 12)


def test_a_call_far_older_than_any_that_ended_is_taken_for_a_dead_actors():
    # calls of 30 s have ended: three times that is under the floor, which bounds a call's life
    assert live_calls([STALE_CALL_FLOOR_S - 1], longest_call_s=30.0) == 1
    assert live_calls([STALE_CALL_FLOOR_S + 1], longest_call_s=30.0) == 0
    # no call has ended yet (a slow first call): the floor alone
    assert live_calls([STALE_CALL_FLOOR_S - 1, 10.0], longest_call_s=0.0) == 2
    # calls of 60 s have ended: a call may run three times as long
    assert live_calls([170.0, 10.0], longest_call_s=60.0) == 2
    assert live_calls([190.0, 10.0], longest_call_s=60.0) == 1
    # a caption actor died mid-call and never said so: the masks go on as if no call ran
    assert not should_wait(board(30, 0, 1, call_age_s=STALE_CALL_FLOOR_S + 1, longest_call_s=30.0),
                           "regions", "caption", 12)


def test_the_pacer_goes_on_once_a_call_comes_back():
    boards = iter([board(12, 0, 1), board(12, 0, 1), board(12, 4, 1)])
    naps = []
    told = []
    pacer = Pacer("regions", "caption", limit=12, read_board=lambda: next(boards), poll_s=0.5, sleep=naps.append,
                  on_wait=told.append)
    pacer.wait()
    assert naps == [0.5, 0.5]
    assert told == [True, False]  # the display hears that the masks wait, once, and when they go on
    pacer.read_board = lambda: board(1, 0, 1)
    pacer.wait()
    assert told == [True, False]  # no wait, nothing told


def test_the_pacer_never_waits_past_its_backstop():
    naps = []
    pacer = Pacer("regions", "caption", limit=1, read_board=lambda: board(5, 0, 1), poll_s=1.0, max_wait_s=3.0,
                  sleep=naps.append)
    pacer.wait()
    assert naps == [1.0, 1.0, 1.0]
