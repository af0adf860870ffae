"""What a request that no instance took within the cold-start hold gets, as Cloud Run answers it."""

from __future__ import annotations

from sandbox.instances import NO_INSTANCE_MESSAGE
from sandbox.proxy import cold_start_answer


def test_a_request_held_past_the_hold_while_the_instance_starts_gets_429_no_available_instance() -> None:
    response = cold_start_answer(starting=True)
    assert response.status_code == 429 and NO_INSTANCE_MESSAGE in bytes(response.body).decode()
    assert NO_INSTANCE_MESSAGE == "The request was aborted because there was no available instance."


def test_a_request_whose_instance_failed_to_start_gets_503() -> None:
    assert cold_start_answer(starting=False).status_code == 503
