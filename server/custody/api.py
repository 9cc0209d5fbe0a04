"""The custody (chain of identity) and transfer-licence API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from server.custody import service as custody
from server.custody.schemas import (
    CustodyBody,
    LicenceBody,
    LicenceCheck,
    LicenceOut,
    StepRecorded,
    Timeline,
)
from server.db import Licence
from server.errors import ServerError
from server.people.auth import DB, AccessDep, Now, Scope, require
from server.people.service import Principal
from server.schemas import PathCoi

router = APIRouter(tags=["custody"])

ReadCustody = Annotated[Principal, Depends(require("custody.read", Scope.COI))]
RecordCustody = Annotated[Principal, Depends(require("custody.record", Scope.COI))]
ReadLicences = Annotated[Principal, Depends(require("alerts.read", Scope.SITES))]
ManageLicences = Annotated[Principal, Depends(require("licence.manage", Scope.ORG))]


@router.get("/v1/custody/{coi}", response_model=Timeline)
def custody_timeline(coi: PathCoi, who: ReadCustody, db: DB) -> Any:
    return custody.timeline(db, custody.coi_from_path(coi))


@router.post("/v1/custody/{coi}/events", status_code=201, response_model=StepRecorded)
def custody_event(
    coi: PathCoi, body: CustodyBody, who: RecordCustody, db: DB, a: AccessDep, now: Now
) -> Any:
    try:
        row = custody.record(
            db, who, at=now(), coi=custody.coi_from_path(coi), kind=body.kind,
            from_party=body.from_party, to_party=body.to_party, place=body.place,
            bag_scan=body.bag_scan, shipper_scan=body.shipper_scan,
            parties=[(p.user_id, p.password, p.meaning) for p in body.parties],
            licence_id=body.licence_id, max_failures=a.settings.max_failed_logins,
        )  # fmt: skip
    except ServerError:
        # What the refusal recorded (a counted password failure, an audited scan mismatch and
        # its alert) is kept while the request fails.
        db.commit()
        raise
    return {"event": row.id, "kind": row.kind, "coi": row.coi}


@router.get("/v1/licences", response_model=list[LicenceOut])
def licences(
    who: ReadLicences,
    db: DB,
    now: Now,
    expiring_within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
) -> Any:
    today = now().date()
    out = [custody.licence_json(db, x, today) for x in db.scalars(select(Licence))]
    if expiring_within_days is not None:
        out = [x for x in out if x["days_left"] <= expiring_within_days]
    return sorted(out, key=lambda x: x["valid_until"])


@router.post("/v1/licences", status_code=201, response_model=LicenceOut)
def add_licence(body: LicenceBody, who: ManageLicences, db: DB, now: Now) -> Any:
    lic = custody.add_licence(
        db, who, at=now(), licence_id=body.licence_id, classification=body.classification,
        authority=body.authority, holder=body.holder, valid_until=body.valid_until,
        links=[(x.object_type, x.object_id) for x in body.links], reason=body.reason,
    )  # fmt: skip
    db.flush()
    return custody.licence_json(db, lic, now().date())


@router.post("/v1/licences/check", response_model=LicenceCheck)
def check_licences(who: ManageLicences, db: DB, a: AccessDep, now: Now) -> Any:
    alerts = custody.check_licences(db, at=now(), warn_days=a.settings.licence_warning_days)
    return {"alerts": [x.message for x in alerts]}
