"""uvicorn's process-level lines, logged by both of the router's listeners, come out once."""

from __future__ import annotations

import logging

import pytest

from pcache.router.log_once import OncePerProcess


def _record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, args, None)


def test_the_second_listener_s_identical_line_is_dropped_within_the_window() -> None:
    now = [100.0]
    once = OncePerProcess(window_s=2.0, clock=lambda: now[0])
    assert once.filter(_record("Started server process [%d]", 42))
    assert not once.filter(_record("Started server process [%d]", 42))
    assert once.filter(_record("Started server process [%d]", 43))  # other arguments: another line
    now[0] += 5.0
    assert once.filter(_record("Started server process [%d]", 42))  # a later restart logs again


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_warnings_and_errors_always_pass(level: int) -> None:
    once = OncePerProcess(clock=lambda: 0.0)
    assert once.filter(_record("Exception in ASGI application", level=level))
    assert once.filter(_record("Exception in ASGI application", level=level))


def test_the_router_logs_each_uvicorn_start_line_once(caplog: pytest.LogCaptureFixture) -> None:
    from pcache.router.log_once import install

    install()
    install()  # idempotent
    logger = logging.getLogger("uvicorn.error")
    assert sum(isinstance(f, OncePerProcess) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        for _listener in ("data plane", "admin"):
            logger.info("Finished server process [%d]", 7)
    assert [r.getMessage() for r in caplog.records] == ["Finished server process [7]"]
