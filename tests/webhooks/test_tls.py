"""TLS to receivers: a private CA through ``ca_bundle`` (ORCH_WEBHOOK_CA_BUNDLE), verified for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.tls import Certs, make_certs
from tests.webhooks.helpers import FAST, deliveries_of, endpoint, publish, running_dispatcher
from webhooks.models import DeliveryStatus
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_receiver(certs: Certs) -> AsyncIterator[Receiver]:
    r = await Receiver().start(ssl_context=certs.server_context())
    yield r
    await r.stop()


async def test_a_receiver_behind_a_private_ca_is_refused_without_the_bundle(
    redis: Redis, tls_receiver: Receiver
) -> None:
    ep_id, _ = await endpoint(redis, tls_receiver.url)
    async with running_dispatcher(redis, FAST):
        await publish(redis)

        async def attempted() -> list:
            page, _ = await deliveries_of(redis).page(ep_id, status=None, limit=1, cursor=None)
            return page and page[0].attempts

        attempts = await wait_for(attempted)
    assert attempts[0].status_code is None and "certificate verify failed" in (attempts[0].error or "")
    assert tls_receiver.requests == []  # nothing was sent over an unverified connection


async def test_the_ca_bundle_lets_the_dispatcher_verify_a_private_ca(
    redis: Redis, tls_receiver: Receiver, certs: Certs
) -> None:
    ep_id, secret = await endpoint(redis, tls_receiver.url)
    settings = FAST.__class__(**{**FAST.__dict__, "ca_bundle": str(certs.ca)})
    async with running_dispatcher(redis, settings):
        msg_id = await publish(redis)
        await wait_for(lambda: tls_receiver.ids() == [msg_id])

        async def succeeded() -> bool:
            page, _ = await deliveries_of(redis).page(
                ep_id, status=DeliveryStatus.succeeded, limit=1, cursor=None
            )
            return bool(page)

        await wait_for(succeeded)
    [got] = tls_receiver.requests
    standard.Webhook(secret).verify(got.body, got.headers)
    svix_webhooks.Webhook(secret).verify(got.body, got.headers)


async def test_the_bundle_adds_to_the_system_cas_and_never_trusts_a_self_signed_server(
    certs: Certs, tmp_path: Path
) -> None:
    self_signed = await Receiver().start(ssl_context=certs.server_context(self_signed=True))
    sender = Sender(DispatcherSettings(allow_private=True, timeout=5.0, ca_bundle=str(certs.ca)))
    try:
        result = await sender.send(self_signed.url, message_id="msg_1", body="{}", secrets=["whsec_AAAA"])
    finally:
        await sender.close()
        await self_signed.stop()
    assert result.status is None and "certificate verify failed" in (result.attempt.error or "")


def test_a_bundle_that_is_not_pem_fails_at_start_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"bundle\.pem"):
        Sender(DispatcherSettings(ca_bundle=str(bad)))
    with pytest.raises(ValueError, match=r"missing\.pem"):
        Sender(DispatcherSettings(ca_bundle=str(tmp_path / "missing.pem")))
