"""``Prefer`` as /openapi.json documents it and as the server takes it: the server ignores
preferences it does not know and a ``wait`` it cannot read (RFC 7240), so the documented schema
must accept those values too. (It had ``pattern: ^wait=(10|[0-9])$``: a client generated from
it refused to send ``wait=5, respond-async``, and schemathesis' negative_data_rejection check
saw ``Prefer: b]oU%`` answered 202 and called the request wrongly accepted.)"""

from __future__ import annotations

import jsonschema
import pytest

from tests.support.api import pledge_body, write_headers
from tests.unit.pledge.api.conftest import Api

#: Values the server takes (none of them makes it wait past 1 s: the fakes never decide).
VALUES = ["wait=1, respond-async", "respond-async", "wait=1234567", "wait=abc", "return=minimal"]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
async def test_a_prefer_value_the_server_takes_is_one_the_schema_allows(
    api: Api, value: str
) -> None:
    response = await api.client.post(
        "/v1/campaigns/c-1/pledges",
        json=pledge_body("p-prefer"),
        headers=write_headers(f"k-{VALUES.index(value)}", Prefer=value),
    )
    assert response.status_code in (201, 202), response.text
    spec = (await api.client.get("/openapi.json")).json()
    schemas = [
        parameter["schema"]
        for path in spec["paths"].values()
        for operation in path.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "Prefer"
    ]
    assert len(schemas) >= 8  # every write documents it
    for schema in schemas:
        jsonschema.validate(value, schema)
