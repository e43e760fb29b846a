"""The callback URL rules: https outside loopback, no credentials, no private address
written as the host; and the address rules notifysvc applies at send time."""

from __future__ import annotations

import ipaddress

import pytest

from meshkit.domain.callbacks import CallbackUrlError, address_problem, parse_callback_url


@pytest.mark.parametrize(
    ("url", "host", "port", "loopback"),
    [
        ("https://hooks.example.com/cm", "hooks.example.com", 443, False),
        ("https://Hooks.Example.com:8443/cm?x=1", "hooks.example.com", 8443, False),
        ("https://93.184.216.34/cm", "93.184.216.34", 443, False),
        ("http://127.0.0.1:8080/cm", "127.0.0.1", 8080, True),
        ("http://localhost/cm", "localhost", 80, True),
        ("http://[::1]:9/cm", "::1", 9, True),
        ("https://127.0.0.1/cm", "127.0.0.1", 443, True),
    ],
)
def test_accepted(url: str, host: str, port: int, loopback: bool) -> None:
    target = parse_callback_url(url)

    assert (target.host, target.port, target.loopback) == (host, port, loopback)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/cm", "must use https"),
        ("ftp://hooks.example.com/cm", "must use https"),
        ("https:///cm", "has no host"),
        ("https://user:pw@hooks.example.com/cm", "user name or password"),
        ("https://10.0.0.8/cm", "10.0.0.8 is a private or reserved address"),
        ("https://192.168.1.1/cm", "192.168.1.1 is a private or reserved address"),
        ("https://172.16.5.4/cm", "private or reserved"),
        ("https://100.64.0.1/cm", "private or reserved"),
        ("https://169.254.169.254/latest", "169.254.169.254 is a link-local address"),
        ("https://[fe80::1]/cm", "link-local"),
        ("https://[fd00::1]/cm", "private or reserved"),
        ("https://[::ffff:10.0.0.1]/cm", "10.0.0.1 is a private"),
        ("https://0.0.0.0/cm", "private or reserved"),
        ("https://224.0.0.1/cm", "multicast"),
        ("https://hooks.example.com:99999/cm", "malformed"),
    ],
)
def test_refused_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(CallbackUrlError, match=why):
        parse_callback_url(url)


def test_loopback_addresses_only_where_allowed() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")

    assert address_problem(loopback, loopback_allowed=True) is None
    assert address_problem(loopback, loopback_allowed=False) == "127.0.0.1 is a loopback address"
    assert address_problem(ipaddress.ip_address("10.0.0.1"), loopback_allowed=True) is not None
    assert address_problem(ipaddress.ip_address("93.184.216.34"), loopback_allowed=False) is None
