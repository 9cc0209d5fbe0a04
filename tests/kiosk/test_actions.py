"""The kiosk's actions over real HTTP, each checked against the engine's record: a value outside
its limits entered twice, a wrong bag at a hand-off, a label of another patient, a refusal that
records nothing."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx

from tests.kiosk.conftest import COI, PW, WRONG_COI, Served
from tests.kiosk.test_security import signed_in, start


def banner(html: str) -> tuple[str, str]:
    m = re.search(r'<div id="banner" class="banner ([a-z ]+)"[^>]*>(.*?)</div>', html, re.S)
    assert m, html[:2000]
    text = re.sub(r"<[^>]+>", " ", m.group(2))
    return m.group(1), unescape(" ".join(text.split()))


def at_inspect(c: httpx.Client, token: str, station: Any) -> None:
    start(c, token)
    e = station.engine
    e.scan("B1", COI, "op.alice")
    e.sign("B1", PW["op.alice"], "performed", "op.alice")
    e.sign("B1", PW["op.bob"], "verified", "op.bob")


def post(c: httpx.Client, token: str, path: str, **data: str) -> tuple[str, str]:
    r = c.post(path, data={"csrf": token, **data})
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return banner(r.text)


def test_a_value_outside_its_limits_is_recorded_only_when_entered_twice(
    kiosk: Served, station: Any
) -> None:
    c, token = signed_in(kiosk.url)
    at_inspect(c, token, station)
    led = station.engine.ledger
    head = led.head
    kind, text = post(c, token, "/b/B1/step/value", name="apheresis_volume", value="320")
    assert kind == "notice" and "outside the soft limit 100–300" in text
    assert led.head == head  # nothing recorded yet
    kind, text = post(c, token, "/b/B1/step/value", name="apheresis_volume", again="330")
    assert kind == "notice" and "330 mL is outside the soft limit" in text  # judged afresh
    assert led.head == head
    kind, text = post(c, token, "/b/B1/step/value", name="apheresis_volume", again="330")
    assert (
        kind == "ok"
        and text == "apheresis_volume = 330 mL recorded (soft limit breached: deviation raised)"
    )
    st = station.engine.state("B1")
    assert st.values["receipt/apheresis/inspect:apheresis_volume"]["limit"] == "soft"
    assert any(d.category == "limit_breach" for d in st.deviations.values())


def test_a_value_within_limits_is_recorded_at_once_and_a_typo_corrected_on_reentry(
    kiosk: Served, station: Any
) -> None:
    c, token = signed_in(kiosk.url)
    at_inspect(c, token, station)
    kind, _ = post(c, token, "/b/B1/step/value", name="apheresis_volume", value="2200")
    assert kind == "notice"
    kind, text = post(c, token, "/b/B1/step/value", name="apheresis_volume", again="220")
    assert (kind, text) == ("ok", "apheresis_volume = 220 mL recorded")
    assert not station.engine.state("B1").deviations


def test_refusals_are_the_engines_words_and_record_nothing(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    at_inspect(c, token, station)
    led = station.engine.ledger
    head = led.head
    for path, data, words in (
        ("/b/B1/step/value", {"name": "moi", "value": "3"}, "records no value 'moi'"),
        ("/b/B1/step/value", {"name": "apheresis_volume", "value": "lots"}, "is not a decimal number"),
        ("/b/B1/step/calculate", {}, "has no calculation"),
        ("/b/B1/step/verify", {"user_id": "op.zed", "password": "x"}, "is not a user of this station"),
        ("/b/B1/deviations/raise", {"reason": "   "}, "a deviation needs a reason"),
        ("/b/B1/deviations/comment", {"deviation_id": "DEV-9", "comment": "x"}, "does not exist"),
    ):  # fmt: skip
        kind, text = post(c, token, path, **data)
        assert kind == "refusal" and words in text, (path, text)
    assert led.head == head


def test_a_wrong_bag_stops_the_hand_off(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    start(c, token)
    kind, text = post(
        c, token, "/b/B1/handoff/record", from_party="APHERESIS-CENTRE-1", to_party="UNIT",
        place="goods-in", bag=WRONG_COI, shipper="", password=PW["op.alice"],
        receiver="op.bob", receiver_password=PW["op.bob"],
    )  # fmt: skip
    assert kind == "refusal stop" and text.startswith("STOP STOP: bag scan does not match")
    st = station.engine.state("B1")
    assert not st.custody and st.scans_rejected[-1]["role"] == "bag"


def test_a_label_of_another_patient_is_not_recorded_as_applied(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    start(c, token)
    head = station.engine.ledger.head
    kind, text = post(c, token, "/b/B1/labels/apply", kind="apheresis_bag", code="]C0garbage")
    assert kind == "refusal" and "cannot be read" in text
    assert station.engine.ledger.head == head  # a misread records nothing
    kind, text = post(c, token, "/b/B1/labels/apply", kind="apheresis_bag", code=WRONG_COI)
    assert kind == "refusal stop" and f"does not match the batch's COI {COI}" in text
    assert "Nothing was applied; recorded with a deviation" in text
    # the near miss is in the record, no label is counted as applied
    events = station.engine.ledger.batch_events("B1", telemetry=False)
    kinds = [e.kind for e in events if e.seq > head[0]]
    assert kinds == ["custody.refused", "deviation.raised"]
    head = station.engine.ledger.head
    kind, text = post(c, token, "/b/B1/labels/preview", kind="product_bag", count="2", gtin="123")
    assert kind == "refusal" and "GTIN must be 14 digits" in text
    kind, text = post(c, token, "/b/B1/labels/preview", kind="shipper", count="many")
    assert kind == "refusal" and "whole number from 1 to 1000" in text
    # the shipper never carries a material's GTIN (the TexMACS medium's) as its own
    kind, text = post(c, token, "/b/B1/labels/preview", kind="shipper", gtin="09506000134352", serial="S-1")
    assert kind == "refusal" and "09506000134352" in text
    kind, text = post(c, token, "/b/B1/labels/preview", kind="shipper", sscc="095060000000000077")
    assert kind == "notice"
    assert station.engine.ledger.head == head


def test_the_printers_file_comes_only_with_a_recorded_print(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    start(c, token)
    label = {"kind": "shipper", "count": "2", "gtin": "09506000134413", "serial": "SHP-0042"}
    r = c.post("/b/B1/labels/print", data={"csrf": token, **label})
    assert banner(r.text) == ("ok", f"printed 2 shipper label(s) for {COI}")
    m = re.search(r'id="label-pdf" href="([^"]+)"', r.text)
    assert m
    other, _ = signed_in(kiosk.url, "op.bob")
    assert other.get(m.group(1)).status_code == 404  # not that session's
    got = c.get(m.group(1))
    assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
    from io import BytesIO

    from pypdf import PdfReader

    assert len(PdfReader(BytesIO(got.content)).pages) == 2  # one page a label printed
    assert c.get(m.group(1)).status_code == 404  # once
    printed = [e for e in station.engine.ledger.batch_events("B1") if e.kind == "label.printed"]
    assert [(e.payload["label"], e.payload["count"]) for e in printed] == [("shipper", 2)]
