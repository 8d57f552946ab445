"""The provider adapters one deployment runs, and which of them sends a given text.

    OPTLINE_PROVIDERS=twilio,telnyx  ──make_providers──▶  Providers
                                                          ├── .webhook("telnyx")   verifies and parses its webhooks
                                                          ├── .for_sender(rules, from_number, service_id)
                                                          │      the sender's `provider` in keywords.yaml,
                                                          │      else the first of OPTLINE_PROVIDERS
                                                          └── await .send(name, message)   asynchronous

Every send is awaited on the event loop: the REST adapters (Telnyx, Plivo, Vonage) are
async, Twilio sends through its library's async client (`TwilioProvider.send_async`), and
a synchronous adapter (the console, a test's) runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from app.errors import ConfigError
from app.keywords import Rules
from app.providers.base import OutboundSms, Provider, SendResult, WebhookProvider
from app.providers.console import ConsoleProvider
from app.settings import Settings

log = logging.getLogger("optline.providers")

AsyncSend = Callable[[OutboundSms], Awaitable[SendResult]]


class Providers:
    """The enabled adapters by name, in OPTLINE_PROVIDERS order; the first is the default."""

    def __init__(self, adapters: Mapping[str, Any], *, sends_everything: bool = False) -> None:
        if not adapters:
            raise ValueError("at least one provider is needed")
        self._adapters = dict(adapters)
        self.sends_everything = sends_everything  # one adapter for every sender, whatever keywords.yaml says
        self.default = next(iter(self._adapters))
        self._async: dict[str, AsyncSend] = {}
        for name, adapter in self._adapters.items():
            send_async = getattr(adapter, "send_async", None)
            if callable(send_async):
                self._async[name] = send_async
            elif inspect.iscoroutinefunction(adapter.send):
                self._async[name] = adapter.send

    @classmethod
    def single(cls, adapter: Provider | WebhookProvider) -> Providers:
        """One adapter, the default for every sender (tests, `optline simulate`)."""
        return cls({adapter.name: adapter}, sends_everything=True)

    @property
    def names(self) -> tuple[str, ...]:
        """The enabled providers, the default first."""
        return tuple(self._adapters)

    def get(self, name: str) -> Any | None:
        """The adapter called `name`, None when it is not enabled."""
        return self._adapters.get(name)

    def webhook(self, name: str) -> WebhookProvider | None:
        """The enabled adapter called `name` when it verifies and parses its own webhooks."""
        adapter = self._adapters.get(name)
        return adapter if isinstance(adapter, WebhookProvider) else None

    def name_for(self, rules: Rules | None, from_number: str | None, service_id: str | None) -> str:
        """The provider that sends from this sender: its configured `provider`, else the default.

        A sender configured for a provider this process does not run falls back to the
        default (start-up refuses such a file; a reload that introduces one is logged).
        """
        if self.sends_everything:
            return self.default
        config = rules.sender_config(service_id or from_number or "") if rules is not None else None
        name = config.provider if config is not None and config.provider else self.default
        if name not in self._adapters:
            log.error("sender %s names provider %s, which OPTLINE_PROVIDERS does not enable; sending through %s",
                      service_id or from_number, name, self.default)
            return self.default
        return name

    async def send(self, name: str, message: OutboundSms, executor: Executor | None = None) -> SendResult:
        """Send through provider `name`: awaited when it is async, on `executor`'s threads when it is not."""
        send_async = self._async.get(name)
        if send_async is not None:
            return await send_async(message)
        adapter = self._adapters[name]
        return await asyncio.get_running_loop().run_in_executor(executor, adapter.send, message)

    async def aclose(self) -> None:
        """Close every adapter's connections."""
        for adapter in self._adapters.values():
            with contextlib.suppress(Exception):
                aclose = getattr(adapter, "aclose", None)
                if callable(aclose):
                    await aclose()
                    continue
                close = getattr(adapter, "close", None)
                if callable(close):
                    close()


def make_providers(settings: Settings) -> Providers:
    """The adapters OPTLINE_PROVIDERS names, built from their credentials (checked by Settings)."""
    return Providers({name: _build(name, settings) for name in settings.providers})


def _build(name: str, s: Settings) -> Any:
    # Imported here: a deployment pays the import of the adapters it runs, nothing more.
    if name == "twilio":
        from app.providers.twilio import TwilioProvider

        assert s.twilio_account_sid and s.twilio_auth_token
        return TwilioProvider(s.twilio_account_sid, s.twilio_auth_token, api_url=s.twilio_api_url)
    if name == "telnyx":
        from app.providers.telnyx import TelnyxProvider

        assert s.telnyx_api_key
        return TelnyxProvider(api_key=s.telnyx_api_key, public_key=s.telnyx_public_key, api_url=s.telnyx_api_url)
    if name == "plivo":
        from app.providers.plivo import PlivoProvider

        assert s.plivo_auth_id and s.plivo_auth_token
        return PlivoProvider(auth_id=s.plivo_auth_id, auth_token=s.plivo_auth_token, api_url=s.plivo_api_url)
    if name == "vonage":
        from app.providers.vonage import VonageProvider

        return VonageProvider(signature_secret=s.vonage_signature_secret, application_id=s.vonage_application_id,
                              private_key=s.vonage_private_key, api_key=s.vonage_api_key,
                              api_secret=s.vonage_api_secret, api_url=s.vonage_api_url)
    return ConsoleProvider()


def check_senders(rules: Rules, providers: Providers) -> None:
    """Refuse rules whose senders name a provider this deployment does not run (one line)."""
    if providers.sends_everything:
        return
    for config in rules.sender_configs.values():
        if config.provider and providers.get(config.provider) is None:
            raise ConfigError(f"sender {config.id} in keywords.yaml names provider {config.provider}, "
                              f"but OPTLINE_PROVIDERS enables only {', '.join(providers.names)}")
