"""The start-up lines the server prints are the ones its launchers parse."""

from __future__ import annotations

import pytest

from bertserve.announce import SERVICES, parse_started, started_line


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "localhost"])
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_started_line_round_trip(service: str, host: str) -> None:
    assert parse_started(started_line(service, host, 8123)) == (service, host, 8123)


def test_other_lines_are_not_start_lines() -> None:
    assert parse_started("bertserve ready") is None
    assert parse_started("Started SomethingElse at 127.0.0.1:80") is None
