"""Who the client is, for per-client limits and lockouts (issue 9, item 7): the peer's
address, or behind named proxies the nearest X-Forwarded-For entry they did not write."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatapp.config import AuthSettings
from chatapp.ratelimit import TrustedProxies


def test_without_named_proxies_the_header_is_ignored() -> None:
    proxies = TrustedProxies([])
    assert proxies.client("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"
    assert proxies.client(None) == "unknown"


def test_the_header_of_a_peer_that_is_no_named_proxy_is_ignored() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"


def test_behind_named_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    # the client wrote a fake first entry; the load balancer appended the real address,
    # then another named proxy its own
    forwarded = ["1.2.3.4, 198.51.100.7", "10.1.2.3"]
    assert proxies.client("127.0.0.1", forwarded) == "198.51.100.7"
    assert proxies.client("10.0.0.5", []) == "10.0.0.5"  # no header: the proxy itself
    assert proxies.client("10.0.0.5", ["10.0.0.9"]) == "10.0.0.9"  # every hop trusted
    assert proxies.client("10.0.0.5", ["2001:db8::1"]) == "2001:db8::1"


def test_a_proxy_list_that_is_not_addresses_is_refused() -> None:
    with pytest.raises(ValidationError, match="no address or network"):
        AuthSettings(trusted_proxies=["lb.example.com"])
    assert AuthSettings(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies
