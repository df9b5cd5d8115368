"""Error messages are fixed strings per status, the same on every Python version."""

from __future__ import annotations

import json

from service.core.errors import PayloadTooLarge, ValidationFailed
from service.web.errors import FORMBRICKS, phrase, render


def test_messages_are_the_references_names_not_the_running_pythons() -> None:
    # Python 3.13's HTTPStatus says "Unprocessable Content" and "Content Too Large"
    assert phrase(422) == "Unprocessable Entity"
    assert phrase(413) == "Request Entity Too Large"
    assert phrase(404) == "Not Found"
    assert phrase(599) == "Error"


def test_formbricks_422_body_names_unprocessable_entity() -> None:
    response = render(FORMBRICKS, ValidationFailed([]))
    assert response.status == 422 and isinstance(response.body, bytes)
    assert json.loads(response.body)["error"]["message"] == "Unprocessable Entity"


def test_formbricks_413_keeps_its_own_message() -> None:
    response = render(FORMBRICKS, PayloadTooLarge(10))
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["error"]["message"] == "Request body too large (limit 10 bytes)"
