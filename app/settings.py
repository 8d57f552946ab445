"""Typed settings from the environment (and `.env`), read once and validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError

# The project root holds keywords.yaml, alembic/ and var/; relative defaults resolve against
# it so every command works from any working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'optline.db'}"
DEFAULT_KEYWORDS = str(PROJECT_ROOT / "keywords.yaml")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"

ProviderName = Literal["console", "twilio", "telnyx", "plivo", "vonage"]
PROVIDER_NAMES: tuple[str, ...] = get_args(ProviderName)


class Settings(BaseSettings):
    """Everything optline reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="OPTLINE_DATABASE_URL")
    keywords: str = Field(DEFAULT_KEYWORDS, validation_alias="OPTLINE_KEYWORDS")
    public_url: str = Field(DEFAULT_PUBLIC_URL, validation_alias="OPTLINE_PUBLIC_URL")
    # The provider adapters this deployment runs, the first being the default for a sender that
    # names none. OPTLINE_PROVIDERS is a comma list; OPTLINE_PROVIDER (one name) still works.
    providers: Annotated[tuple[ProviderName, ...], NoDecode] = Field(("console",), validation_alias=AliasChoices(
        "OPTLINE_PROVIDERS", "OPTLINE_PROVIDER"))
    twilio_account_sid: str | None = Field(None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN")
    # The secret of a Twilio Webhook Setting's SharedKey: requests a Webhooks Rule signs with it
    # (X-Twilio-Webhooks-Signature-Settings, HMAC-SHA256) are checked against it.
    twilio_webhook_shared_key: str | None = Field(None, validation_alias="TWILIO_WEBHOOK_SHARED_KEY")
    twilio_api_url: str = Field("https://api.twilio.com", validation_alias="OPTLINE_TWILIO_API_URL")
    # Telnyx (API v2): the API key sends; the account's Ed25519 public key checks webhooks.
    telnyx_api_key: str | None = Field(None, validation_alias="TELNYX_API_KEY")
    telnyx_public_key: str | None = Field(None, validation_alias="TELNYX_PUBLIC_KEY")
    telnyx_api_url: str = Field("https://api.telnyx.com", validation_alias="OPTLINE_TELNYX_API_URL")
    # Plivo: the Auth ID and Auth Token send; the token also checks X-Plivo-Signature-V3.
    plivo_auth_id: str | None = Field(None, validation_alias="PLIVO_AUTH_ID")
    plivo_auth_token: str | None = Field(None, validation_alias="PLIVO_AUTH_TOKEN")
    plivo_api_url: str = Field("https://api.plivo.com", validation_alias="OPTLINE_PLIVO_API_URL")
    # Vonage Messages API: an application (id + private key, PEM text or a file path) or the
    # account's API key and secret send; the signature secret checks the signed JWT webhooks.
    vonage_application_id: str | None = Field(None, validation_alias="VONAGE_APPLICATION_ID")
    vonage_private_key: str | None = Field(None, validation_alias="VONAGE_PRIVATE_KEY")
    vonage_api_key: str | None = Field(None, validation_alias="VONAGE_API_KEY")
    vonage_api_secret: str | None = Field(None, validation_alias="VONAGE_API_SECRET")
    vonage_signature_secret: str | None = Field(None, validation_alias="VONAGE_SIGNATURE_SECRET")
    vonage_api_url: str = Field("https://api.nexmo.com", validation_alias="OPTLINE_VONAGE_API_URL")
    inprocess_worker: bool = Field(True, validation_alias="OPTLINE_INPROCESS_WORKER")
    log_level: str = Field("INFO", validation_alias=AliasChoices("OPTLINE_LOG_LEVEL"))
    # Outbox tuning: how long a claim lasts before another sender may take the row over,
    # how many sends run at once per process, and the retry budget.
    lease_seconds: float = Field(60.0, gt=0, validation_alias="OPTLINE_LEASE_SECONDS")
    # 32 sends in flight: one worker keeps up with a serve process (a quarter of Twilio's
    # default 100 concurrent API requests an account); each sender's rate still applies.
    send_concurrency: int = Field(32, ge=1, le=256, validation_alias="OPTLINE_SEND_CONCURRENCY")
    # Transient send failures retry until the row's deadline: stop confirmations 1 h, other
    # texts 24 h, brand events 72 h after they were queued (`optline outbox retry` re-drives later).
    deadline_stop_seconds: float = Field(3600.0, gt=0, validation_alias="OPTLINE_DEADLINE_STOP_SECONDS")
    deadline_text_seconds: float = Field(86400.0, gt=0, validation_alias="OPTLINE_DEADLINE_TEXT_SECONDS")
    deadline_event_seconds: float = Field(259200.0, gt=0, validation_alias="OPTLINE_DEADLINE_EVENT_SECONDS")
    retry_base_seconds: float = Field(2.0, gt=0, validation_alias="OPTLINE_RETRY_BASE_SECONDS")
    retry_cap_seconds: float = Field(600.0, gt=0, validation_alias="OPTLINE_RETRY_CAP_SECONDS")
    poll_seconds: float = Field(0.2, gt=0, validation_alias="OPTLINE_POLL_SECONDS")
    # Signs what optline hands out and must recognise later (list cursors, console sessions and
    # CSRF tokens). Several processes or machines must share one: set it in production. Unset,
    # a random key is made once and kept in `secret_key_file`.
    secret_key: str | None = Field(None, min_length=32, validation_alias="OPTLINE_SECRET_KEY")
    secret_key_file: str = Field(str(PROJECT_ROOT / "var" / "secret.key"), validation_alias="OPTLINE_SECRET_KEY_FILE")
    # Where each running `serve` / `worker` process leaves its pid file, so `optline reload`
    # can find every one of them on this machine (also the children of `serve --workers N`).
    run_dir: str = Field(str(PROJECT_ROOT / "var" / "run"), validation_alias="OPTLINE_RUN_DIR")
    # Where webhooks the database could not take in time are kept (fsynced) until it can.
    spool_dir: str = Field(str(PROJECT_ROOT / "var" / "spool"), validation_alias="OPTLINE_SPOOL_DIR")
    # How long a request waits for the database before a webhook is spooled, or an API call answers 503.
    db_deadline_seconds: float = Field(4.0, gt=0, le=60, validation_alias="OPTLINE_DB_DEADLINE_SECONDS")
    # A connection must send a whole request head (request line and headers) this soon after it
    # opens or starts a request, else it is closed: connections that send nothing, or trickle
    # their headers, cannot pile up (uvicorn has no such limit of its own).
    header_timeout_seconds: float = Field(10.0, gt=0, le=300, validation_alias="OPTLINE_HEADER_TIMEOUT_SECONDS")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not (value.startswith("sqlite") or value.startswith("postgresql")):
            raise ValueError("only sqlite:// and postgresql+psycopg:// URLs are supported")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_provider(cls, values: object) -> object:
        # Settings(provider="twilio") from Python, as before the list existed.
        if isinstance(values, dict) and "provider" in values and "providers" not in values:
            values = {**values, "providers": values.pop("provider")}
        return values

    @field_validator("providers", mode="before")
    @classmethod
    def _provider_list(cls, value: object) -> object:
        if isinstance(value, str):
            names = [name.strip().lower() for name in value.split(",") if name.strip()]
            if not names:
                raise ValueError("name at least one provider")
            if len(set(names)) != len(names):
                raise ValueError(f"a provider is named twice in {value!r}")
            return tuple(names)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _providers_need_credentials(self) -> Settings:
        # Sending needs each provider's credentials: without them start-up stops. A missing
        # webhook secret only refuses that provider's webhooks, with a warning at start-up.
        for name in self.providers:
            missing = [env for env in _SEND_CREDENTIALS.get(name, ()) if not getattr(self, _FIELD_OF_ENV[env])]
            if name == "vonage" and not (self.vonage_application_id and self.vonage_private_key):
                missing = [] if self.vonage_api_key and self.vonage_api_secret else [
                    "VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY (or VONAGE_API_KEY and VONAGE_API_SECRET)"]
            if missing:
                raise ValueError(f"provider {name} needs {' and '.join(missing)}")
        if "twilio" in self.providers and self.public_url == DEFAULT_PUBLIC_URL:
            # Twilio cannot call 127.0.0.1, and refuses a StatusCallback there (error 21609):
            # every send would fail. The URL must be the one Twilio reaches optline at.
            raise ValueError(f"provider twilio needs OPTLINE_PUBLIC_URL set to the public https URL Twilio "
                             f"calls optline at (not the default {DEFAULT_PUBLIC_URL})")
        return self

    @property
    def provider(self) -> str:
        """The default provider: the first of OPTLINE_PROVIDERS."""
        return self.providers[0]

    @property
    def serves_twilio_webhooks(self) -> bool:
        """Twilio's webhooks are served with the twilio provider, and with the console one (local work posts them)."""
        return "twilio" in self.providers or "console" in self.providers

    def missing_webhook_secret(self, name: str) -> str | None:
        """The variable provider `name` lacks to check its webhooks' signatures, None when it has it."""
        if name == "twilio":
            return None if self.twilio_auth_token or self.twilio_webhook_shared_key else "TWILIO_AUTH_TOKEN"
        env = _WEBHOOK_SECRET.get(name)
        return env if env and not getattr(self, _FIELD_OF_ENV[env]) else None

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning any validation problem into one ConfigError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][0] if first["loc"] else ""
        name = _ENV_NAMES.get(str(loc), str(loc))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}" if name else message) from None


# What each provider needs to send, and the variable holding its webhook-signing secret.
_SEND_CREDENTIALS = {
    "twilio": ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"),
    "telnyx": ("TELNYX_API_KEY",),
    "plivo": ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN"),
}
_WEBHOOK_SECRET = {"telnyx": "TELNYX_PUBLIC_KEY", "plivo": "PLIVO_AUTH_TOKEN", "vonage": "VONAGE_SIGNATURE_SECRET"}

_ENV_NAMES = {
    name: (field.validation_alias if isinstance(field.validation_alias, str) else name)
    for name, field in Settings.model_fields.items()
}
_ENV_NAMES.update({alias: alias for alias in _ENV_NAMES.values()})
_FIELD_OF_ENV = {field.validation_alias: name for name, field in Settings.model_fields.items()
                 if isinstance(field.validation_alias, str)}
_ENV_NAMES["providers"] = "OPTLINE_PROVIDERS"
