"""Configuration: embedded defaults, overridden by a TOML file.

Every key is validated up front so a typo or a wrong type is reported as one
line naming the key (``smtp.max_message_size: expected an integer``), never
as a traceback halfway through start-up.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .wire import hostport

ENV_VAR = "MAILTUI_CONFIG"


class ConfigError(Exception):
    """A configuration problem, phrased as ``key: what is wrong`` (always one line)."""

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass(frozen=True)
class Endpoint:
    """A listen or nameserver address."""

    host: str
    port: int

    def __str__(self) -> str:
        return hostport(self.host, self.port)


def parse_endpoint(text: str, key: str, default_port: int | None = None) -> Endpoint:
    """Parse ``host:port`` / ``[v6]:port``; the host must be an IP address."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{key}: expected \"host:port\", got {text!r}")
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{key}: unbalanced brackets in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{key}: bad address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ConfigError(f"{key}: IPv6 addresses need brackets, as in \"[::1]:25\" (got {text!r})")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{key}: {host!r} is not an IP address") from None
    if port_text is None:
        if default_port is None:
            raise ConfigError(f"{key}: missing port in {text!r}")
        return Endpoint(host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: bad port in {text!r}")
    return Endpoint(host, int(port_text))


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailtui"


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = field(default_factory=socket.getfqdn)
    data_dir: Path = field(default_factory=default_data_dir)
    local_domains: tuple[str, ...] = ("localhost",)
    postmaster: str = ""  # mailbox that receives postmaster@ mail; "" = postmaster@<first domain>


@dataclass(frozen=True)
class SmtpConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 2525),)
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    auth_require_tls: bool = True
    idle_timeout: float = 300.0
    data_timeout: float = 600.0
    max_connections: int = 200
    max_connections_per_ip: int = 20
    error_budget: int = 10
    auth_failure_delay: float = 1.0


@dataclass(frozen=True)
class Pop3Config:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 1100),)
    tls_listen: tuple[Endpoint, ...] = ()
    idle_timeout: float = 600.0
    max_connections: int = 100
    auth_failure_delay: float = 1.0


@dataclass(frozen=True)
class ImapConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 1143),)
    tls_listen: tuple[Endpoint, ...] = ()
    idle_timeout: float = 1800.0          # RFC 3501 §5.4: at least 30 minutes
    max_connections: int = 500
    max_connections_per_ip: int = 50
    max_connections_per_user: int = 20
    auth_failure_delay: float = 1.0


@dataclass(frozen=True)
class SubmissionConfig:
    """Message submission for mail clients (RFC 6409); limits and timeouts are ``[smtp]``'s."""

    listen: tuple[Endpoint, ...] = ()       # STARTTLS, like port 587
    tls_listen: tuple[Endpoint, ...] = ()   # implicit TLS (RFC 8314), like port 465


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[Endpoint, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class DeliveryConfig:
    remote_port: int = 25
    retry_intervals: tuple[float, ...] = (300, 900, 1800, 3600, 7200, 14400)
    max_attempts: int = 35
    max_queue_lifetime: float = 5 * 24 * 3600
    retry_jitter: float = 0.1
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    max_concurrency: int = 20
    max_per_domain: int = 4
    connection_reuse_limit: int = 100
    connection_cache_time: float = 5.0
    connection_cache_size: int = 100
    connection_cache_per_destination: int = 8
    pipelining: bool = True


@dataclass(frozen=True)
class PolicyConfig:
    accept_unregistered_for_local: bool = False


@dataclass(frozen=True)
class DkimConfig:
    selector: str = "mailtui"      # selector of each domain's first key (rotation makes new ones)
    sign: bool = True              # sign mail relayed from senders in local domains


DMARC_ACTIONS = ("reject", "quarantine", "accept")


@dataclass(frozen=True)
class AuthConfig:
    check_inbound: bool = True     # SPF, DKIM and DMARC on mail from outside
    dmarc_reject: str = "reject"   # what a DMARC failure under p=reject gets
    dmarc_quarantine: str = "quarantine"
    check_timeout: float = 20.0    # seconds for all the checks of one message (RFC 7208 4.6.4)


@dataclass(frozen=True)
class MtaStsConfig:
    enforce: bool = True           # honour recipient domains' MTA-STS policies
    ca_file: str = ""              # PEM bundle to trust; "" = the system trust store
    fetch_timeout: float = 10.0


@dataclass(frozen=True)
class LogsConfig:
    max_connections: int = 2000
    max_dns: int = 2000
    max_deliveries: int = 2000
    flush_interval: float = 0.5


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[Endpoint, ...] = ()     # Prometheus /metrics; off unless set


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = "embedded defaults"

    @property
    def postmaster_mailbox(self) -> str:
        return self.server.postmaster or f"postmaster@{self.server.local_domains[0]}"

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.server.local_domains


_SECTION_CLASSES = {
    "server": ServerConfig, "smtp": SmtpConfig, "pop3": Pop3Config, "imap": ImapConfig,
    "submission": SubmissionConfig, "tls": TlsConfig, "dns": DnsConfig, "delivery": DeliveryConfig,
    "policy": PolicyConfig, "dkim": DkimConfig, "auth": AuthConfig, "mta_sts": MtaStsConfig, "logs": LogsConfig,
    "metrics": MetricsConfig,
}


def _positive_int(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {value}")
    return value


def _number(value: Any, key: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}, got {value}")
    return float(value)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _string_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return value


def _domain(value: str, key: str) -> str:
    from .addresses import AddressError, parse_domain

    try:
        return parse_domain(value.strip().lower())
    except AddressError as exc:
        raise ConfigError(f"{key}: {value!r} is not a valid domain ({exc})") from None


def _selector(value: Any, key: str) -> str:
    """A DKIM selector: one or more DNS labels of letters, digits and hyphens (RFC 6376 3.1)."""
    text = _string(value, key).strip().lower()
    labels = text.split(".")
    if not text or len(text) > 63 or not all(
            label and label[0] != "-" and label[-1] != "-" and all(c.isascii() and (c.isalnum() or c == "-")
                                                              for c in label) for label in labels):
        raise ConfigError(f"{key}: {value!r} is not a valid DKIM selector (letters, digits, hyphens)")
    return text


def _convert(section: str, name: str, value: Any) -> Any:
    key = f"{section}.{name}"
    cls = _SECTION_CLASSES[section]
    default = getattr(cls(), name)
    if section == "server" and name == "data_dir":
        return Path(os.path.expanduser(_string(value, key))) if value else default_data_dir()
    if section == "server" and name == "hostname":
        text = _string(value, key).strip()
        return _domain(text, key) if text else socket.getfqdn()
    if section == "server" and name == "local_domains":
        domains = tuple(_domain(d, key) for d in _string_list(value, key))
        if not domains:
            raise ConfigError(f"{key}: at least one local domain is needed")
        return domains
    if section == "server" and name == "postmaster":
        text = _string(value, key).strip().lower()
        if text and "@" not in text:
            raise ConfigError(f"{key}: expected a mailbox address, got {value!r}")
        return text
    if section == "dkim" and name == "selector":
        return _selector(value, key)
    if section == "auth" and name in ("dmarc_reject", "dmarc_quarantine"):
        text = _string(value, key).strip().lower()
        if text not in DMARC_ACTIONS:
            raise ConfigError(f"{key}: expected one of {', '.join(DMARC_ACTIONS)}, got {value!r}")
        return text
    if name in ("listen", "tls_listen", "nameservers"):
        items = _string_list(value, key)      # tls_listen, submission.listen, metrics.listen: may be empty
        if name == "listen" and not items and section not in ("submission", "metrics"):
            raise ConfigError(f"{key}: at least one address is needed")
        return tuple(parse_endpoint(v, key, 53 if name == "nameservers" else None) for v in items)
    if name == "retry_intervals":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: expected a non-empty list of seconds, got {value!r}")
        return tuple(_number(v, key, minimum=0.01) for v in value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if name == "remote_port":
        port = _positive_int(value, key)
        return port if port <= 65535 else _bad_port(key, value)
    if isinstance(default, int):
        return _positive_int(value, key)
    if isinstance(default, float):
        return _number(value, key, minimum=0.0 if name == "retry_jitter" else 0.01)
    if isinstance(default, str):
        return _string(value, key)
    raise ConfigError(f"{key}: unsupported key")  # pragma: no cover


def _bad_port(key: str, value: Any) -> int:
    raise ConfigError(f"{key}: bad port {value!r}")


def from_mapping(data: dict[str, Any], source: str = "<mapping>") -> Config:
    """Build a Config from parsed TOML, validating every key."""
    sections: dict[str, Any] = {}
    for section, body in data.items():
        if section not in _SECTION_CLASSES:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(_SECTION_CLASSES)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a table [{section}]")
        known = {f.name for f in fields(_SECTION_CLASSES[section])}
        values = {}
        for name, value in body.items():
            if name not in known:
                raise ConfigError(f"{section}.{name}: unknown key")
            values[name] = _convert(section, name, value)
        sections[section] = replace(_SECTION_CLASSES[section](), **values)
    config = Config(**sections, source=source)
    _cross_check(config)
    return config


def _cross_check(config: Config) -> None:
    if config.server.postmaster:
        domain = config.server.postmaster.rpartition("@")[2]
        if domain not in config.server.local_domains:
            raise ConfigError(f"server.postmaster: {domain!r} is not in server.local_domains")


def load(path: str | os.PathLike | None = None) -> Config:
    """Load ``path``, else ``$MAILTUI_CONFIG``, else the embedded defaults."""
    path = path or os.environ.get(ENV_VAR) or None
    if path is None:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: TOML syntax error: {exc}") from None
    return from_mapping(data, source=str(path))


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """Return a copy of ``config`` with some keys of some sections replaced (tests, demo)."""
    updated = {name: replace(getattr(config, name), **{k: _convert(name, k, v) for k, v in values.items()})
               for name, values in sections.items()}
    return replace(config, **updated)
