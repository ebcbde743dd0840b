"""Several edges behind one floating address: each obtains and renews its own certificates, and
an ACME challenge reaches the right edge whichever edge holds the address (the token is passed
on to the others); VRRP, which moves the address, is admitted from the other edges only."""

from __future__ import annotations

import re
import secrets

from support.tls import served_certificate

WEBROOT = "/var/www/acme/.well-known/acme-challenge"


def serial(sandbox, edge: dict) -> str:
    text = served_certificate(f"{edge['ip']}:443", sandbox.domain, sandbox.ca_cert)
    return text.split("serial=", 1)[1].split()[0]


def holder(sandbox) -> dict:
    holders = sandbox.edges_holding_the_site_ip()
    assert len(holders) == 1, [edge["name"] for edge in holders]
    return holders[0]


def test_exactly_one_edge_holds_the_floating_address(sandbox):
    assert len(sandbox.hosts_in("edge")) >= 2, "the HA stage needs two edges"
    holder(sandbox)


def test_every_edge_serves_a_certificate_of_its_own(sandbox):
    serials = {edge["name"]: serial(sandbox, edge) for edge in sandbox.hosts_in("edge")}
    print(f"certificate serials by edge: {serials}")
    assert len(set(serials.values())) == len(serials), serials


def test_a_challenge_token_reaches_the_edge_that_has_it_through_the_floating_address(sandbox):
    active = holder(sandbox)
    other = next(e for e in sandbox.hosts_in("edge") if e["name"] != active["name"])
    token, content = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    write = f"echo {content} | sudo tee {WEBROOT}/{token} >/dev/null"
    sandbox.ssh(other, f"sudo mkdir -p {WEBROOT} && {write}")
    try:
        url = f"http://{sandbox.domain}/.well-known/acme-challenge/{token}"
        found = sandbox.curl("-w", "\\n%{http_code}", url, netns=sandbox.probe_netns)
        assert found.stdout.split() == [content, "200"], found.stdout + found.stderr
    finally:
        sandbox.ssh(other, f"sudo rm -f {WEBROOT}/{token}")
    # A token no edge has: a 404 after one pass, not a loop between the edges.
    missing = sandbox.curl("-o", "/dev/null", "-w", "%{http_code}", url, netns=sandbox.probe_netns)
    assert missing.stdout == "404", missing.stdout + missing.stderr


def test_the_edge_without_the_address_renews_its_certificates(sandbox):
    active = holder(sandbox)
    other = next(e for e in sandbox.hosts_in("edge") if e["name"] != active["name"])
    before = serial(sandbox, other)
    renewal = sandbox.ssh(other, "sudo flaskstack-certbot renew --force-renewal")
    assert "Congratulations" in renewal.stdout + renewal.stderr, renewal.stdout + renewal.stderr
    assert serial(sandbox, other) != before, f"{other['name']} still serves its old certificate"


def test_vrrp_is_admitted_from_the_other_edges_only(sandbox):
    for edge in sandbox.hosts_in("edge"):
        ruleset = sandbox.ssh(edge, "sudo nft list chain inet filter input").stdout
        rule = next(line for line in ruleset.splitlines() if "vrrp" in line)
        others = {e["ip"] for e in sandbox.hosts_in("edge") if e["name"] != edge["name"]}
        admitted = set(re.findall(r"\d+\.\d+\.\d+\.\d+", rule))
        assert admitted == others, rule
