"""The [imap] section and the optional implicit-TLS listeners."""

from __future__ import annotations

import pytest

from mailtui.config import ConfigError, Endpoint, from_mapping


def test_defaults_match_the_issue():
    config = from_mapping({})
    assert config.imap.listen == (Endpoint("127.0.0.1", 1143),)
    assert config.imap.tls_listen == () and config.pop3.tls_listen == ()
    assert config.imap.idle_timeout >= 1800


def test_tls_listen_may_be_empty_but_listen_may_not():
    config = from_mapping({"imap": {"tls_listen": ["0.0.0.0:993"]}, "pop3": {"tls_listen": []}})
    assert config.imap.tls_listen == (Endpoint("0.0.0.0", 993),)
    with pytest.raises(ConfigError, match="imap.listen: at least one address"):
        from_mapping({"imap": {"listen": []}})
    with pytest.raises(ConfigError, match="imap.tls_listen: 'mail' is not an IP address"):
        from_mapping({"imap": {"tls_listen": ["mail:993"]}})
    with pytest.raises(ConfigError, match="imap.max_connections_per_user: expected an integer"):
        from_mapping({"imap": {"max_connections_per_user": "many"}})
