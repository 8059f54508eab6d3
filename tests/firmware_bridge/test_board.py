"""The bridge's serial link against the reference emulator, through a real pseudo-terminal:
handshake and runs, and every fault PROTOCOL.md says the bridge survives."""

from __future__ import annotations

import threading

import pytest

from firmware_bridge import codec
from firmware_bridge.board import (
    BoardError,
    BoardLink,
    BoardResetError,
    BoardTimeoutError,
    BridgeError,
    PortError,
)
from firmware_bridge.emulator import BoardSpec, EmulatedBoard
from firmware_bridge.records import to_result

EXACT = {"kws_micro": 12.5, "slow": 40.0}  # ms per run


def make_board(tmp_path, **spec):
    spec = {"models": dict(EXACT), "noise": 0.0, "per_frame": 10, **spec}
    return EmulatedBoard(BoardSpec(**spec), link=str(tmp_path / "ttyBOARD")).start()


def make_link(board, **kw):
    options = {"timeout_s": 0.5, "retries": 2, "stall_timeout_s": 0.5, "reopen_s": 0.05, **kw}
    link = BoardLink(board.port, **options)
    link.open()
    return link


@pytest.fixture
def board(tmp_path):
    b = make_board(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def link(board):
    lk = make_link(board)
    yield lk
    lk.close()


def test_handshake_ping_and_health(board, link):
    hello = link.hello_request()
    assert hello.board == "fleetbench emulated board" and hello.clock_hz == 64_000_000
    assert hello.models == ("kws_micro", "slow") and hello.boot_id == board.boot_id
    assert hello.reset_cause_text == "power-on"
    assert link.ping() > 0
    health = link.health()
    assert health.die_temp_c == 41.5 and health.supply_v == 3.3 and health.free_bytes == 18_432
    assert link.stats.requests == 3 and link.stats.retries == 0 and link.decoder.stats.crc_errors == 0


@pytest.mark.parametrize("timer", ["cycles", "us"])
def test_a_run_streams_every_sample_and_converts_the_mcu_clock_to_ns(tmp_path, timer):
    board = make_board(tmp_path, timer=timer)
    link = make_link(board)
    try:
        seen = []
        run = link.bench("kws_micro", 95, warmup=3, progress=lambda done, total: seen.append((done, total)))
        assert run.samples_ns == (12_500_000,) * 95 and run.missing == 0
        assert run.timer_hz == (64_000_000 if timer == "cycles" else 1_000_000)
        assert seen[0] == (10, 95) and seen[-1] == (95, 95) and len(seen) == 10  # ten RESULT frames
        result = to_result(run, link.health())
        assert result.stats.p50_ms == 12.5 and result.stats.n == 95 and result.warnings == ()
        assert result.timer.impl == "mcu" and result.timer.resolution_ns == (
            16 if timer == "cycles" else 1000
        )
        assert result.device.temperatures_c == (("mcu_die", 41.5),) and result.model.path == "board:kws_micro"
    finally:
        link.close()
        board.stop()


def test_a_lost_reply_is_asked_again_with_the_same_id(board, link):
    board.corrupt_next(1)  # the HELLO answering the first try
    assert link.hello_request().board == "fleetbench emulated board"
    assert link.stats.retries == 1 and link.stats.timeouts == 1 and link.decoder.stats.crc_errors == 1


def test_a_lost_accept_does_not_lose_the_run(board, link):
    link.hello_request()
    board.corrupt_next(1)  # the ACCEPT: its RESULT frames say the same
    run = link.bench("kws_micro", 30)
    assert len(run.samples_ns) == 30 and board.runs_done == 1 and link.stats.retries == 0


def test_garbage_on_the_line_is_counted_and_skipped(board, link):
    link.hello_request()
    board.send_garbage(b"\xff\xfe boot noise \x00 \x13\x37\x00")
    run = link.bench("kws_micro", 20)
    assert len(run.samples_ns) == 20
    assert link.decoder.stats.malformed == 2 and link.decoder.stats.garbage_bytes >= 14


def test_a_lost_result_frame_costs_its_samples_and_says_so(board, link):
    link.hello_request()
    board.corrupt_next(2)  # the ACCEPT and the first RESULT frame
    run = link.bench("kws_micro", 100)
    assert len(run.samples_ns) == 90 and run.missing == 10
    assert to_result(run).warnings == ("10 of 100 samples were lost to corrupted frames on the serial line",)


def test_a_run_missing_more_than_a_tenth_is_failed(board, link):
    link.hello_request()
    board.corrupt_next(3)  # the ACCEPT and two RESULT frames: 20 %
    with pytest.raises(BridgeError, match=r"20 of 100 samples of 'kws_micro' .* were lost"):
        link.bench("kws_micro", 100)


def test_a_stall_times_out_clearly_and_the_bridge_recovers(board, link):
    link.hello_request()
    board.stall(after_samples=30)
    with pytest.raises(
        BoardTimeoutError, match=r"stalled during 'kws_micro': nothing for 0.5 s after 30 of 100"
    ):
        link.bench("kws_micro", 100)
    with pytest.raises(BoardTimeoutError, match=r"did not answer PING within 0.5 s \(3 tries\)"):
        link.ping()
    board.resume()  # the hung firmware carries on: its late frames are dropped as stale
    assert board.idle.wait(10)
    assert link.ping() > 0
    run = link.bench("kws_micro", 10)
    assert len(run.samples_ns) == 10
    assert link.stats.stalls == 1 and link.stats.stale >= 7


def test_a_reset_mid_run_fails_the_run_and_discards_its_samples(board, link):
    first = link.hello_request()
    board.reset(after_samples=35)  # while measuring the 35th: the frame of runs 31-40 never leaves
    with pytest.raises(
        BoardResetError, match=r"restarted during 'kws_micro' after 30 of 100 runs .*software"
    ):
        link.bench("kws_micro", 100)
    assert link.stats.resets == 1 and link.hello.boot_id != first.boot_id
    assert link.decoder.stats.malformed == 1  # the ROM's boot banner
    run = link.bench("kws_micro", 10)
    assert run.hello.boot_id == board.boot_id and len(run.samples_ns) == 10


def test_unplug_and_replug_when_idle(board, link):
    link.hello_request()
    board.unplug()
    assert _wait_cleared(link.connected)
    with pytest.raises(PortError, match=r"not open"):
        link.ping()
    board.replug()
    hello = link.wait_hello(10)
    assert hello.boot_id == board.boot_id and hello.reset_cause_text == "power-on"
    assert len(link.bench("kws_micro", 10).samples_ns) == 10
    assert link.stats.reopens == 1 and link.stats.resets == 1


def test_unplug_mid_run_fails_the_run(board, link):
    link.hello_request()
    board.stall(after_samples=20)
    halfway = threading.Event()
    errors = []

    def run():
        try:
            link.bench("kws_micro", 100, progress=lambda done, total: done >= 20 and halfway.set())
        except BridgeError as err:
            errors.append(err)

    link.stall_timeout_s = 30.0
    worker = threading.Thread(target=run)
    worker.start()
    assert halfway.wait(10)
    board.unplug()
    worker.join(10)
    assert len(errors) == 1 and isinstance(errors[0], PortError)
    assert "went away during 'kws_micro' after 20 of 100 runs" in str(errors[0])
    board.replug()
    assert link.wait_hello(10).boot_id == board.boot_id


def test_a_second_bench_while_one_runs_is_refused_busy(tmp_path):
    board = make_board(tmp_path, realtime=True)
    link = make_link(board, stall_timeout_s=5.0)
    try:
        link.hello_request()
        started = threading.Event()
        worker = threading.Thread(
            target=link.bench, args=("slow", 30), kwargs={"progress": lambda d, t: started.set()}
        )
        worker.start()
        assert started.wait(10)
        with pytest.raises(BoardError, match=r"ERROR 4 \(busy\)") as err:
            link.bench("kws_micro", 5)
        assert err.value.code == codec.ErrorCode.BUSY
        assert link.health().die_temp_c == 41.5  # answered between two inferences
        worker.join(10)
    finally:
        link.close()
        board.stop()


def test_an_unknown_model_is_the_boards_answer(board, link):
    with pytest.raises(BoardError, match=r"ERROR 3 \(unknown model\) to BENCH: no model 'nope'"):
        link.bench("nope", 10)


def test_a_silent_line_is_named(board):
    board.stall()
    link = make_link(board, timeout_s=0.2)
    try:
        with pytest.raises(
            BoardTimeoutError, match=r"did not answer HELLO_REQ within 0.2 s \(3 tries\).*baud"
        ):
            link.hello_request()
    finally:
        link.close()


def test_a_missing_port_is_one_sentence(tmp_path):
    with pytest.raises(PortError, match=r"'.*nothing' cannot be opened: it does not exist"):
        BoardLink(str(tmp_path / "nothing")).open()


def test_a_port_in_use_is_named(board, link):
    with pytest.raises(PortError, match=r"another program .* has it open"):
        BoardLink(board.port).open()


def _wait_cleared(event: threading.Event, timeout_s: float = 10.0) -> bool:
    """threading.Event has no wait-for-clear: poll it (the reader thread clears it)."""
    import time

    deadline = time.monotonic() + timeout_s
    while event.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not event.is_set()
