"""Every text the kiosk shows, in one catalogue ready for translation.

Templates and views ask :func:`t` for a text by key; ``{name}`` fields are filled from keyword
arguments.  A translation is another mapping with the same keys (:func:`check_catalogue` says
which keys or fields it lacks).  The engine's own messages (refusals, outcomes) are shown exactly
as the engine words them: one rule, one message, in the record's language.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

EN: dict[str, str] = {
    # frame
    "app.title": "Station {unit}",
    "app.skip": "Skip to content",
    "app.signed_in_as": "Signed in: {name} ({user})",
    "app.sign_out": "Sign out",
    "nav.batches": "Batches",
    "nav.step": "Current step",
    "nav.deviations": "Deviations",
    "nav.labels": "Labels",
    "nav.handoff": "Hand-offs",
    "nav.telemetry": "Telemetry",
    "nav.history": "History",
    "nav.devices": "Devices",
    "nav.sync": "Sync",
    "nav.label": "Screens",
    "banner.stop": "STOP",
    "banner.refused": "Refused",
    # sign in
    "signin.title": "Sign in",
    "signin.lead": "Scan your badge, or enter your user id.",
    "signin.user_id": "User id",
    "signin.next": "Next",
    "signin.password_for": "Password for {name} ({user})",
    "signin.password": "Password",
    "signin.submit": "Sign in",
    "signin.other_user": "Not you? Start again",
    "signin.expired": "Your session ended after {minutes} minutes without activity. Sign in again.",
    "signin.signed_out": "Signed out.",
    # batches
    "batches.title": "Batches on unit {unit}",
    "batches.none": "No batch has been started on this unit.",
    "batches.batch": "Batch",
    "batches.coi": "Chain of identity",
    "batches.progress": "Progress",
    "batches.open": "Open",
    "batches.start": "Start a batch",
    "batches.start_lead": "Scan the chain-of-identity label on the patient's apheresis bag.",
    "batches.batch_id": "Batch id",
    "batches.scan_coi": "Patient's COI (scan)",
    "batches.password": "Your password (e-signature)",
    "batches.start_button": "Start batch",
    "batches.bad_id": (
        "batch id {given!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', "
        "such as B-2026-0042"
    ),
    "batches.step_of": "step {n} of {total}",
    "batches.completed": "completed",
    # step
    "step.title": "Batch {batch}: current step",
    "step.header": "Step {n} of {total}",
    "step.unit_operation": "Unit procedure {up} · operation {op} · phase {phase}",
    "step.critical": "Critical: a second person verifies",
    "step.instruction": "Instruction",
    "step.expects": "What this step expects",
    "step.scan_next": "Scan {what}",
    "step.scan_later": "Then: {what}",
    "step.scan_example": "Format: {fmt}. Example: {example}",
    "step.scan_field": "Scanned code",
    "step.scan_button": "Record scan",
    "step.scan_hint": (
        "Pull the scanner's trigger: the code goes to this step without a touch. "
        "A code can also be typed here."
    ),
    "step.value_limits": "Limits: hard {hard}, soft {soft}",
    "step.no_limit": "none",
    "step.value_button": "Record",
    "step.value_label": "{name} in {unit}",
    "step.outside_limits": (
        "{name} = {value} {unit} is outside the {which} limit {limit} {unit}. "
        "Enter the value again to record it (a deviation will be raised), or enter the "
        "right value."
    ),
    "step.reenter_label": "Enter {name} again, in {unit}",
    "step.calculation": "Calculation: {what}",
    "step.calculate_button": "Calculate",
    "step.sign_performed": "Sign: performed by {name}",
    "step.sign_password": "Your password",
    "step.sign_button": "Sign",
    "step.verify_open": "Second-person verification",
    "step.verify_title": "Second-person verification of step {n}",
    "step.verify_lead": (
        "A second, different person checks the step and signs 'verified' with their own user "
        "id and password. Performed by: {performers}."
    ),
    "step.verify_user": "Verifier's user id (or scan their badge)",
    "step.verify_password": "Verifier's password",
    "step.verify_button": "Verify and sign",
    "step.cancel": "Cancel",
    "step.nothing": "This step expects nothing more.",
    "step.completed": "Batch {batch} is completed: every step is signed.",
    "step.recorded": "Recorded so far",
    "step.value_current": "{value} {unit}",
    "step.corrected_from": "corrected; recorded first as {value} {unit}",
    "step.correct_button": "Correct",
    "step.correct_title": "Correct {name} of step {step}",
    "step.correct_lead": (
        "A correction is recorded as a new event with your name, the time, the reason, the "
        "old and the new value; the original stays in the record."
    ),
    "step.correct_value": "New value in {unit}",
    "step.correct_reason": "Reason",
    "step.correct_password": "Your password (e-signature)",
    "step.correct_submit": "Record correction",
    # scan formats (examples of each barcode the station reads)
    "fmt.patient_material": "ISBT 128 chain of identity, &/CH then 13 characters",
    "fmt.final_product": (
        "GS1 DataMatrix of the product bag: (01) GTIN, (17) expiry YYMMDD, (21) serial, "
        "(251) the patient's COI; or this batch's own bag label, batch/lot (10) = batch id"
    ),
    "fmt.cartridge": "GS1 DataMatrix: (01) cartridge GTIN, (17) expiry YYMMDD, (21) serial",
    "fmt.reagent": "GS1: (01) GTIN and (10) lot, from the local materials list",
    "fmt.equipment": "GS1 GIAI, AI (8004) then the asset id from the equipment list",
    "ex.patient_material": "&/CHA999926ABC123",
    "ex.final_product": "(01)09506000134345(17)271231(21)BAG1(251)&/CHA999926ABC123",
    "ex.cartridge": "(01)09506000134376(17)271231(21)CART-0001",
    "ex.reagent": "(01)09506000134352(10)TM2611",
    "ex.equipment": "(8004)UNIT-0001",
    "role.patient_material": "the patient's material (COI)",
    "role.final_product": "the final product bag",
    "role.cartridge": "the cartridge",
    "role.reagent": "reagent {material}",
    "role.equipment": "the equipment",
    # deviations
    "dev.title": "Deviations of batch {batch}",
    "dev.none": "No deviation has been raised.",
    "dev.id": "Deviation",
    "dev.step": "Step",
    "dev.category": "Category",
    "dev.severity": "Severity",
    "dev.reason": "Reason",
    "dev.comments": "Comments",
    "dev.links": "Linked to",
    "dev.state": "State",
    "dev.open": "open",
    "dev.closed": "closed: {reason}",
    "dev.raise": "Raise a deviation",
    "dev.raise_button": "Raise",
    "dev.comment": "Comment on a deviation",
    "dev.comment_text": "Comment",
    "dev.comment_button": "Add comment",
    "dev.commented": "Comment added to {id}.",
    "dev.link": "Link two deviations",
    "dev.link_other": "Linked to",
    "dev.link_button": "Link",
    "dev.linked": "{id} linked to {other}.",
    # labels
    "labels.title": "Labels of batch {batch}",
    "labels.counts": "Label counts",
    "labels.kind": "Label",
    "labels.printed": "Printed",
    "labels.applied": "Applied",
    "labels.destroyed": "Destroyed",
    "labels.balanced": "Balanced",
    "labels.yes": "yes",
    "labels.no": "no",
    "labels.none": "No label has been printed for this batch.",
    "labels.print": "Print labels",
    "labels.count": "Number of labels",
    "labels.din": "DIN (ISBT 128, optional)",
    "labels.gtin": "GTIN (product bag; a shipper's own, never a material's)",
    "labels.sscc": "SSCC (shipper: 18 digits, GS1 AI 00)",
    "labels.lot": "Batch/lot",
    "labels.expiry": "Expiry (product bag)",
    "labels.serial": "Serial",
    "labels.product": "Product text",
    "labels.preview_button": "Preview",
    "labels.preview": "Preview of the {kind} label (printing {count})",
    "labels.preview_alt": "Preview of the {kind} label for COI {coi}",
    "labels.print_button": "Print {count}",
    "labels.printed_ok": "{count} {kind} label(s) printed.",
    "labels.pdf": "Label file for the printer (PDF)",
    "labels.pdf_gone": (
        "this label file was already fetched or is not this session's: print again to record "
        "new labels"
    ),
    "labels.apply": "Apply a label (scan it on the item)",
    "labels.apply_scan": "Scan of the applied label",
    "labels.apply_button": "Record applied",
    "labels.applied_ok": "1 {kind} label applied.",
    "labels.destroy": "Destroy labels",
    "labels.destroy_reason": "Reason",
    "labels.destroy_button": "Record destroyed",
    "labels.destroyed_ok": "{count} {kind} label(s) destroyed.",
    "labels.reconcile": "Reconcile",
    "labels.reconcile_lead": (
        "A dry run shows the counts first; nothing is recorded until you confirm."
    ),
    "labels.dry_run_button": "Dry run",
    "labels.dry_run": "Dry run: printed = applied + destroyed for each label?",
    "labels.dry_balanced": "Every label kind balances.",
    "labels.dry_unbalanced": "Not balanced: reconciling now records a major deviation.",
    "labels.reconcile_button": "Record reconciliation",
    "labels.reconciled": "Labels reconciled: {state}.",
    "labels.state_balanced": "balanced",
    "labels.state_unbalanced": "NOT balanced, deviation raised",
    # hand-offs
    "handoff.title": "Hand-offs of batch {batch}",
    "handoff.chain": "Custody so far",
    "handoff.none": "No hand-off has been recorded.",
    "handoff.new": "Record a hand-off (two people sign)",
    "handoff.from": "From (party)",
    "handoff.to": "To (party)",
    "handoff.place": "Place",
    "handoff.bag": "Bag (scan its COI label)",
    "handoff.shipper": "Shipper (scan its label; optional)",
    "handoff.giver": "Hands over: {name} ({user})",
    "handoff.giver_password": "Your password",
    "handoff.receiver": "Receives: user id (or scan their badge)",
    "handoff.receiver_password": "Receiver's password",
    "handoff.button": "Sign the hand-off",
    "handoff.done": "Hand-off from {src} to {dst} recorded, signed by both.",
    # devices
    "devices.title": "Devices of unit {unit}",
    "devices.none": "No device is attached to this station.",
    "devices.name": "Device",
    "devices.kind": "Kind",
    "devices.state": "State",
    "devices.detail": "Port / detail",
    "devices.last": "Last reading",
    "devices.alarms": "Alarms",
    "devices.connected": "connected",
    "devices.disconnected": "not connected",
    # telemetry
    "tele.title": "Telemetry of batch {batch}",
    "tele.none": "No reading has been recorded for this batch.",
    "tele.summary": (
        "{count} readings, min {min}, max {max}, last {last} {unit}; {excursions} outside limits"
    ),
    "tele.limits": "limits {limits} {unit}",
    "tele.chart": "{channel} over time, in {unit}, with its limits",
    # sync
    "sync.title": "Sync of unit {unit}",
    "sync.unsynced": "Events not yet synced",
    "sync.last_receipt": "Last receipt from the server",
    "sync.server_head": "Server holds up to event",
    "sync.alarm": "Alarm",
    "sync.never": "never",
    "sync.unknown": "unknown",
    "sync.no_alarm": "none",
    # history
    "hist.title": "History of batch {batch}",
    "hist.seq": "#",
    "hist.time": "Time",
    "hist.who": "Who",
    "hist.what": "What",
    "hist.correction": (
        "CORRECTION of event {corrects}: {name} of step {step} from {old} to {new}; "
        "by {by}; reason: {reason}"
    ),
    # errors
    "err.csrf": "This form is out of date (its security token does not match). Reload the page.",
    "err.no_batch": "batch {batch} has not been started on this unit",
    "err.missing": "{field} is required",
    "err.count": "the number of labels must be a whole number from 1 to 1000, got {given!r}",
    "err.expiry": "expiry {given!r} is not a date (YYYY-MM-DD)",
    "err.not_found": "Not found: {path}",
}

CATALOGUES: dict[str, Mapping[str, str]] = {"en": EN}


def t(key: str, lang: str = "en", /, **fields: object) -> str:
    """The text for ``key`` in ``lang`` (English when the key is not translated), filled in."""
    text = CATALOGUES.get(lang, EN).get(key) or EN[key]
    return text.format(**fields) if fields else text


def fields_of(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def check_catalogue(other: Mapping[str, str]) -> list[str]:
    """What a translation lacks or adds, compared with English: an empty list when complete."""
    problems = [f"missing key {k}" for k in EN if k not in other]
    problems += [f"unknown key {k}" for k in other if k not in EN]
    problems += [
        f"key {k}: fields {sorted(fields_of(EN[k]))}, translation has {sorted(fields_of(v))}"
        for k, v in other.items()
        if k in EN and fields_of(EN[k]) != fields_of(v)
    ]
    return problems
