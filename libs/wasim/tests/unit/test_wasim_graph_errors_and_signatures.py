"""Graph error documents and webhook signatures, as Meta's clients parse them."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from esquadrao_wasim.errors import PAIR_RATE_LIMIT, RATE_LIMIT, graph_error_body
from esquadrao_wasim.simulator import PhoneNumber, StatusEvent
from esquadrao_wasim.webhooks import envelope, sign, status_value

pytestmark = pytest.mark.unit


def test_a_graph_error_has_meta_s_shape() -> None:
    body = graph_error_body(RATE_LIMIT)

    error = body["error"]
    assert set(error) == {"message", "type", "code", "error_data", "fbtrace_id"}
    assert error["message"] == "(#130429) Rate limit hit"
    assert error["type"] == "OAuthException"
    assert error["code"] == 130429
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"]


def test_details_and_subcode_can_be_given() -> None:
    error = graph_error_body(PAIR_RATE_LIMIT, "to the same number", subcode=33)["error"]

    assert error["error_data"]["details"] == "to the same number"
    assert error["error_subcode"] == 33


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"object":"whatsapp_business_account"}'

    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()

    assert sign("secret", body) == f"sha256={expected}"
    assert sign("other", body) != sign("secret", body)


def test_a_status_callback_echoes_the_message_id_as_biz_opaque_callback_data() -> None:
    number = PhoneNumber(
        phone_number_id="1", display_phone_number="+55 11 4000-0000", access_token="t"
    )
    event = StatusEvent("wamid.X", "msg-1", "5511988887777", "delivered", 1700000000)

    payload = envelope(number, status_value(number, event))

    assert payload["object"] == "whatsapp_business_account"
    (entry,) = payload["entry"]
    assert entry["id"] == "1"
    (change,) = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["metadata"] == {"display_phone_number": "551140000000", "phone_number_id": "1"}
    assert value["statuses"] == [
        {
            "id": "wamid.X",
            "status": "delivered",
            "timestamp": "1700000000",
            "recipient_id": "5511988887777",
            "biz_opaque_callback_data": "msg-1",
        }
    ]
