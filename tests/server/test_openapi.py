"""The API documents itself: every route declares its response model (or, for a PDF or a FHIR
bundle, the media type of its document), every operation its error responses as problem
details, and the document the bearer scheme (the Authorize button of /docs)."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import JSONResponse

from server.errors import MEDIA_TYPE

from .test_authz import UNSIGNED_PUBLIC, _app, api_routes, routes


def test_every_route_declares_its_response(tmp_path: Path) -> None:
    app = _app(tmp_path)
    missing = []
    for r in api_routes(app):
        documented = r.responses.get(200, {}).get("content")
        if r.response_model is None and not (r.response_class is not JSONResponse and documented):
            missing.append(f"{sorted(r.methods or ())} {r.path}")
    assert not missing, missing
    assert len(api_routes(app)) == 56  # 48 + the transparency log's eight (/v1/log/...)


def test_the_document_names_errors_and_the_bearer_scheme(tmp_path: Path) -> None:
    app = _app(tmp_path)
    doc = app.openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a session token (POST /v1/auth/token) or the bootstrap admin token",
    }
    assert doc["components"]["schemas"]["Problem"]["required"] == [
        "type", "title", "status", "detail"
    ]  # fmt: skip
    protected = {k for k, v in routes(app).items() if v}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status in ("401", "403", "404", "409", "422", "429"):
                assert list(op["responses"][status]["content"]) == [MEDIA_TYPE], (path, status)
            secured = "security" in op
            assert secured == ((method.upper(), path) in protected), (method, path)
            assert (method.upper(), path) not in UNSIGNED_PUBLIC or not secured
