"""Filum's create-link page as a FastAPI 0.99 + pydantic 1.10 app, and the recorder of its 422 answers.

Not part of the project's dependencies and never imported by the tests: it runs in a throwaway
virtualenv, and its answers are committed beside it as pydantic_v1_answers.json. To regenerate:

    python3.11 -m venv /tmp/fastapi-ref
    /tmp/fastapi-ref/bin/pip install 'fastapi==0.99.*' 'pydantic==1.10.*' 'httpx<0.28'
    /tmp/fastapi-ref/bin/python tests/contract/filum/reference_model.py > tests/contract/filum/pydantic_v1_answers.json

The model is the page (reference/filum-create-survey-links.txt) written the way FastAPI users
write it: `name` a string of 1-255 characters, whitespace trimmed; `metadata_mapping` an optional
list of at most 200 `{metadata_id: int, value: Any}`; extra fields ignored (pydantic's default).
The inputs are tests/contract/filum/inputs.json (shared with test_pydantic_parity.py).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import fastapi
import pydantic
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, conlist, constr

HERE = Path(__file__).parent
CAMPAIGN = "0b9c5f4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


class MetadataAssociation(BaseModel):
    metadata_id: int
    value: Any = None


class CreateSurveyLink(BaseModel):
    name: constr(strip_whitespace=True, min_length=1, max_length=255)
    metadata_mapping: conlist(MetadataAssociation, max_items=200) | None = None


app = FastAPI()


@app.post("/external/survey-campaigns/{survey_campaign_id}/links")
def create_survey_link(survey_campaign_id: UUID, body: CreateSurveyLink) -> dict[str, Any]:
    """The link itself is not the point: echo what pydantic read, so the table shows each coercion."""
    return {"survey_campaign_id": str(survey_campaign_id), "read": body.dict()}


def body_bytes(case: dict[str, Any]) -> bytes:
    """A case's body: text sent as UTF-8 (`raw`), or bytes (`raw_b64`); a case without `headers` is JSON."""
    return case["raw"].encode() if "raw" in case else base64.b64decode(case["raw_b64"])


def main() -> None:
    cases = json.loads((HERE / "inputs.json").read_text())
    client = TestClient(app)
    answers = {}
    for case in cases:
        path = f"/external/survey-campaigns/{case.get('campaign', CAMPAIGN)}/links{case.get('suffix', '')}"
        headers = case.get("headers", {"content-type": "application/json"})
        resp = client.post(path, content=body_bytes(case), headers=headers)
        answers[case["id"]] = {"status": resp.status_code, "body": resp.json() if resp.content else None}
    meta = {"fastapi": fastapi.__version__, "pydantic": pydantic.VERSION,
            "python": ".".join(map(str, sys.version_info[:3]))}
    json.dump({"generated_by": meta, "answers": answers}, sys.stdout, indent=1, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
