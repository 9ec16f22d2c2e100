"""The schema and the reference pages: open to all, every asset served by the project itself."""
import re

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def client(db):
    return APIClient()


def test_the_schema_is_public_and_describes_v1_only(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.") and schema["info"]["version"] == "1.0.0"
    assert all(path.startswith("/api/v1/") for path in schema["paths"])
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer",
        "description": "an API key (manage.py apikeys create): sluice_<prefix>_<secret>"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert {"400", "401", "403", "404", "405", "406", "429"} <= set(operation["responses"]), (method, path)
            if method == "post":
                assert "Idempotency-Key" in [p["name"] for p in operation.get("parameters", [])]


@pytest.mark.parametrize("page", ["/api/v1/reference/", "/api/v1/reference/redoc/"])
def test_the_reference_pages_load_their_assets_from_the_project(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(url.startswith("/api/v1/reference/assets/") for url in assets), assets
    assert "cdn" not in html.lower() and "/api/v1/schema/" in html
    for url in assets:
        served = client.get(url)
        assert served.status_code == 200, url
        b"".join(served.streaming_content)
