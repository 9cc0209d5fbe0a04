"""Issue 18, item 9: confusable user ids could be created (Cyrillic letters, full-width letters,
ids differing only in case).  Now a user id is ASCII ``[a-z0-9._-]``, stored in lower case (a
login folds the id it is given), and refused when its skeleton (0/o, 1/i/l, rn/m, vv/w, and
'.', '_', '-' alike) equals an existing id's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.errors import Unprocessable
from server.people.ids import new_user_id, skeleton
from tests.server.conftest import Server
from tests.server.qa import PASSWORD, TEMPORARY, add_people, login


def create(server: Server, user_id: str) -> httpx.Response:
    with server.admin() as c:
        return c.post(
            "/v1/people",
            json={
                "user_id": user_id,
                "printed_name": "Someone",
                "password": TEMPORARY,
                "roles": [{"role": "qa_reviewer", "site_id": "SITE-A"}],
                "reason": "confusable id attempt",
            },
        )


def test_confusable_ids_are_refused(server: Server, tmp_path: Path) -> None:
    add_people(server, {"rev.willa": ("Willa Reviewer", [("qa_reviewer", "SITE-A")])})
    refused = {
        "r\u0435v.willa": (422, "U+0435"),  # Cyrillic small ie
        "\uff52\uff45\uff56.willa": (422, "U+FF45"),  # full-width letters
        "rev.willa\u200b": (422, "U+200B"),  # zero-width space
        "Rev.Willa": (409, "already exists"),  # only the case differs
        "rev_willa": (409, "confused"),
        "rev-willa": (409, "confused"),
        "rev.vvilla": (409, "confused"),  # vv reads as w
        "rev.wi11a": (409, "confused"),  # 1 reads as l
        "rev.willa..": (422, "start and end"),
        "system": (422, "reserved"),
        "x" * 65: (422, "64"),
    }
    for uid, (status, words) in refused.items():
        r = create(server, uid)
        assert r.status_code == status and words in r.text, (uid, r.status_code, r.text)
    with server.admin() as c:
        ids = [p["user_id"] for p in c.get("/v1/people").json()]
    assert ids == ["rev.willa"]
    # Stored in lower case; a login folds the id it is given.
    r = create(server, "Rev.Bert")
    assert r.status_code == 201 and r.json()["user_id"] == "rev.bert", r.text
    assert login(server, "REV.WILLA").get("/v1/me").json()["user_id"] == "rev.willa"
    r = httpx.post(
        server.url + "/v1/auth/token", json={"user_id": "r\u0435v.willa", "password": PASSWORD}
    )
    assert r.status_code == 401


IDS = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True)
SWAPS = {"o": "0", "0": "o", "l": "1", "1": "i", "i": "l", "m": "rn", "w": "vv", ".": "_", "-": "."}


@given(IDS, st.data())
def test_ids_fold_and_confusables_share_a_skeleton(uid: str, data: st.DataObject) -> None:
    if uid in ("system", "edge", "anonymous"):
        return
    assert new_user_id(uid) == uid == new_user_id(uid.upper())
    positions = [i for i, c in enumerate(uid) if c in SWAPS]
    if positions:
        i = data.draw(st.sampled_from(positions))
        twin = uid[:i] + SWAPS[uid[i]] + uid[i + 1 :]
        assert skeleton(twin) == skeleton(uid), (uid, twin)


@given(IDS, st.characters(min_codepoint=0x80), st.data())
def test_any_non_ascii_character_is_refused(uid: str, ch: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(uid)))
    with pytest.raises(Unprocessable, match="ASCII"):
        new_user_id(uid[:i] + ch + uid[i:])
