"""Tier 1: the outbound address classifier and the operator's allowlist. Pure: no packet is sent."""

from __future__ import annotations

import ipaddress

import pytest

from pipeline.http.address_policy import (
    AddressPolicy,
    AddressRefused,
    check_git_url,
    check_url,
    image_policy,
    ip_literal,
    is_public,
    outbound_policy,
    refused_field,
    url_host,
)
from pipeline.settings import Settings

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
METADATA = ipaddress.IPv4Address("169.254.169.254")


def teredo(server: str, client: str) -> str:
    """A Teredo address (2001::/32) carrying `server` and, inverted as the protocol does, `client`."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (~int(ipaddress.IPv4Address(client))
                                                                              & 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize("spelling", [
    "127.0.0.1", "2130706433", "0x7f000001", "0x7F000001", "017700000001", "0x7f.1", "0x7f.0.0.1", "0177.0.0.1",
    "0177.0.1", "127.1", "127.0.1", "127.0.0.1.", "127.000.000.001",
])
def test_every_ipv4_spelling_of_loopback_is_read_as_a_resolver_reads_it(spelling: str) -> None:
    assert ip_literal(spelling) == LOOPBACK
    with pytest.raises(AddressRefused, match="non-public address"):
        AddressPolicy().check_host(spelling)


@pytest.mark.parametrize("spelling", ["169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
                                      "169.254.43518", "0xa9.0xfe.0xa9.0xfe"])
def test_metadata_address_spellings(spelling: str) -> None:
    assert ip_literal(spelling) == METADATA


@pytest.mark.parametrize("name", ["example.com", "1e100.net", "256.0.0.1", "127.0.0.1.nip.io", "0x", "1..2",
                                  "08.0.0.1", "0x1g.0.0.1", "1.2.3.4.5", "4294967296", ""])
def test_names_are_not_addresses(name: str) -> None:
    # "0x" is 0 to inet_aton: the one oddity kept, since it reads as 0.0.0.0, which is refused anyway
    assert ip_literal(name) is None or name == "0x"


@pytest.mark.parametrize("addr", [
    # IPv4: loopback, private, shared (CGN), link-local and metadata, this network, broadcast, multicast, docs
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
    "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "239.255.255.250",
    "192.0.2.1", "198.18.0.1", "240.0.0.1",
    # IPv6: loopback, unspecified, link-local, unique-local (AWS's metadata is fd00:ec2::254), site-local, multicast
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "ff0e::1",
    # IPv4 inside IPv6: v4-mapped, IPv4-compatible, NAT64 (well-known and local-use), 6to4, Teredo
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1", "::a9fe:a9fe",
    "64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1",
    "64:ff9b:1::1", "64:ff9b:1::808:808", "64:ff9b:1:ffff::7f00:1",
    "2002:7f00:1::", "2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:0a00:0001::5", "2002:c0a8:0101::",
    teredo("65.54.227.120", "127.0.0.1"), teredo("127.0.0.1", "8.8.8.8"), teredo("65.54.227.120", "8.8.8.8"),
    # documentation and discard prefixes
    "2001:db8::1", "100::1",
])
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert not is_public(ipaddress.ip_address(addr))
    host = addr if ":" not in addr else f"[{addr}]"
    with pytest.raises(AddressRefused, match="address refused: .* is a non-public address"):
        AddressPolicy().check_host(host)


def test_python_alone_would_let_nat64_and_6to4_spellings_through() -> None:
    """Why the classifier unwraps: on this Python these spellings of loopback and metadata count as global."""
    leaky = [a for a in ("64:ff9b::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::") if ipaddress.ip_address(a).is_global]
    for addr in leaky:
        assert not is_public(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "140.82.112.3", "2606:4700:4700::1111",
                                  "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808",
                                  "2002:808:808::1"])
def test_public_addresses_are_allowed(addr: str) -> None:
    assert is_public(ipaddress.ip_address(addr))
    AddressPolicy().check_host(addr if ":" not in addr else f"[{addr}]")


def test_localhost_names_are_refused_before_any_lookup() -> None:
    for name in ("localhost", "LOCALHOST.", "api.localhost", "x.y.localhost"):
        with pytest.raises(AddressRefused, match="non-public"):
            AddressPolicy().check_host(name)
    AddressPolicy().check_host("example.com")  # a name: checked when it is resolved, not here


def test_allowlist_of_hosts_and_networks() -> None:
    policy = AddressPolicy.of(["127.0.0.1", " 10.1.0.0/16 ", "Git.Internal.", "[::1]", "", "fd00::/8"])
    assert policy.hosts == frozenset({"git.internal"})
    for ok in ("127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "10.1.2.3", "[::1]", "[fd12::1]",
               "git.internal", "GIT.internal.", "8.8.8.8"):
        policy.check_host(ok)
    for refused in ("127.0.0.2", "2130706434", "10.2.0.1", "169.254.169.254", "[64:ff9b::7f00:2]", "localhost",
                    "[fe80::1]"):
        with pytest.raises(AddressRefused):
            policy.check_host(refused)
    # a listed name may resolve to anything; a listed network admits its addresses whatever the name
    assert policy.addresses("10.1.0.9", 80) == [ipaddress.ip_address("10.1.0.9")]
    assert AddressPolicy.of(["localhost"]).addresses("localhost", 80)  # /etc/hosts: no packet
    with pytest.raises(AddressRefused, match="non-public"):
        AddressPolicy.of(["127.0.0.1"]).addresses("127.0.0.2", 80)


def test_settings_give_the_policy() -> None:
    settings = Settings.from_env({"REPOBUILD_ALLOW_HOSTS": "127.0.0.1, git.internal,10.0.0.0/8"})
    assert settings.allow_hosts == ("127.0.0.1", "git.internal", "10.0.0.0/8")
    assert settings.to_env()["REPOBUILD_ALLOW_HOSTS"] == "127.0.0.1,git.internal,10.0.0.0/8"
    policy = outbound_policy(settings)
    policy.check_host("10.9.9.9")
    with pytest.raises(AddressRefused):
        policy.check_host("192.168.0.1")
    assert outbound_policy(Settings.from_env({})) == AddressPolicy()
    # the deprecated image switch reaches image fetches only
    legacy = Settings.from_env({"REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS": "1"})
    image_policy(legacy).check_host("192.168.0.1")
    with pytest.raises(AddressRefused):
        outbound_policy(legacy).check_host("192.168.0.1")


def test_urls_and_git_remotes() -> None:
    strict = AddressPolicy()
    for url in ("http://10.0.0.1/cb", "https://[::1]:8443/x", "http://0x7f.1:8080/", "http://169.254.169.254/latest",
                "http://[64:ff9b::a9fe:a9fe]/", "http://localhost:9/", "http://user:pw@127.1/x"):
        with pytest.raises(AddressRefused, match="address refused"):
            check_url(strict, url)
        with pytest.raises(AddressRefused, match="address refused"):
            check_git_url(strict, url)
    with pytest.raises(AddressRefused, match="http"):
        check_url(strict, "ftp://example.com/x")
    check_url(strict, "https://hooks.example.com/cb")
    check_git_url(strict, "https://github.com/o/r.git")
    # not network requests: left to the local-source rules
    check_git_url(strict, "/srv/repo")
    check_git_url(strict, "file:///srv/repo")
    # ssh and git:// cannot be pinned or timed by us: only to hosts the operator listed
    for remote in ("ssh://git@github.com/o/r.git", "git@github.com:o/r.git", "git://github.com/o/r.git",
                   "git+ssh://github.com/o/r", "ssh://git@10.0.0.1/o/r"):
        with pytest.raises(AddressRefused, match="allowlist"):
            check_git_url(strict, remote)
    check_git_url(AddressPolicy.of(["github.com"]), "git@github.com:o/r.git")
    check_git_url(AddressPolicy.of(["10.0.0.0/8"]), "ssh://git@10.0.0.1/o/r")
    with pytest.raises(AddressRefused, match="transport"):
        check_git_url(strict, "ftp://example.com/r.git")
    assert url_host("git@GitHub.com:o/r.git") == "github.com"
    assert url_host("https://x:y@[::1]:80/p") == "::1"


def test_refused_field_names_the_field_and_never_resolves() -> None:
    policy = AddressPolicy.of(["127.0.0.1"])
    assert refused_field(policy, git={"source": "/local/path", "options.repoUrl": None},
                         http={"callback_url": "http://127.0.0.1:9/cb"}) is None
    assert refused_field(policy, git={"source": "https://no-such-host.invalid/x"}, http={}) is None  # DNS later
    field, message = refused_field(policy, git={"source": "https://github.com/o/r", "options.remoteUrl":
                                                "http://2130706434/r.git"}, http={}) or ("", "")
    assert field == "options.remoteUrl" and "127.0.0.2" in message and "refused" in message
    field, message = refused_field(policy, git={}, http={"callbackUrl": "http://[::ffff:a9fe:a9fe]/"}) or ("", "")
    assert field == "callbackUrl" and "::ffff:a9fe:a9fe" in message
