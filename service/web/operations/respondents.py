"""The respondent's side: opening a link, and its QR code."""

from __future__ import annotations

from ..doc_schemas import OpenedLink
from ..qr import DEFAULT_ECC, ECC_LEVELS, FORMATS, KINDS, QR_INTEGERS, qr_path
from .common import FORMBRICKS, NOTHING_TO_OPEN, PUBLIC, Operation, errors, ok, op, path, query_int


def _qr_ops() -> dict[tuple[str, str], Operation]:
    """The QR code routes: an SVG and a PNG one per kind of link (service/web/qr.py's KINDS)."""
    options = [
        {"name": "ecc", "in": "query", "required": False,
         "description": "Error-correction level (at least this one: a higher one is used when the code's size "
                        "allows it); lower case is accepted too",
         "schema": {"type": "string", "enum": list(ECC_LEVELS), "default": DEFAULT_ECC}},
        query_int("scale", "Pixels per module", QR_INTEGERS),
        query_int("border", "Quiet zone around the code, in modules (4 is the standard's)", QR_INTEGERS),
    ]
    out: dict[tuple[str, str], Operation] = {}
    for prefix, link in KINDS.items():
        for kind, media in FORMATS.items():
            out[("GET", qr_path(prefix, kind))] = op(
                f"qr_{link.name}_{kind}", f"The QR code of {link.what} ({kind.upper()})", "respondents",
                {**ok({"type": "string", "format": "binary"} if kind == "png" else {"type": "string"},
                      f"The link's URL (`PUBLIC_BASE_URL/{prefix}/<token>`) as a QR code; "
                      "`Cache-Control: private, no-store`", media=media),
                 **errors(FORMBRICKS, 404, 410, 422, e404=NOTHING_TO_OPEN,
                          e422="An option out of its bounds, named in `details`")},
                description="Checked as opening the link checks it (a forged token is 404 before any lookup, an "
                            "expired link or a survey not in progress 410); showing the code is not an open. "
                            "Unknown query parameters are ignored.",
                parameters=[path("token", link.token), *options], security=PUBLIC)
    return out


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/c/{token}"): op(
        "open_contact_link", "Open a contact link", "respondents",
        {"302": {"description": "To the survey's `redirectUrl`, with `surveyId` and `contactId` added"},
         **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
         **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
        parameters=[path("token", "The link's signed token (JWT)")], security=PUBLIC),
    ("GET", "/s/{token}"): op(
        "open_short_contact_link", "Open a short contact link (a survey with `linkFormat` short)",
        "respondents",
        {"302": {"description": "To the survey's `redirectUrl`, with `surveyId` and `contactId` added"},
         **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
         **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
        description="Answered exactly as `/c/{token}`: a forged token is 404 before any database query; an "
                    "expired or revoked link, or a survey not in progress, is 410.",
        parameters=[path("token", "32 characters of base64url: key tag, survey number, contact id, expiry "
                                  "hour, link generation and a 96-bit HMAC-SHA256 (50 when an id passes 2^32)")],
        security=PUBLIC),
    ("GET", "/l/{token}"): op(
        "open_created_link", "Open a created (Filum) survey link", "respondents",
        {"302": {"description": "To the survey's `redirectUrl`, with `surveyId`, `publicId` and each "
                                "metadata field's `variable` added"},
         **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
         **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
        parameters=[path("token", "`<kid>.<public_id>.<mac>`")], security=PUBLIC),
    **_qr_ops(),
}
