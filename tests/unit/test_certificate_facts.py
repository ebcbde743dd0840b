"""The certificates' facts have one home, deploy/certbot/certificates.env.

Ansible (group_vars/all.yml: certificate_facts) and Compose's certbot (deploy/compose/certbot.sh)
read the file. What cannot read it is fixed and must agree with it: nginx's snippet and
template, the certbot image, Compose's volumes, the local CA of TLS_MODE=local. And nothing
else spells the values out, so that a change in the file is a change everywhere.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FACTS_FILE = ROOT / "deploy/certbot/certificates.env"


def read_facts() -> dict[str, str]:
    """The file as bash sees it: sourced, every variable it sets."""
    script = f'set -a; source "{FACTS_FILE}"; env -0'
    environment = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, env={}
    ).stdout
    pairs = (item.split("=", 1) for item in environment.split("\0") if "=" in item)
    return {key: value for key, value in pairs if key.isupper() and key not in ("PWD", "SHLVL")}


FACTS = read_facts()
KEY_TYPES = FACTS["CERT_KEY_TYPES"].split()


def test_ansible_reads_the_file_as_bash_does():
    # group_vars/all.yml's pattern, which also strips the quotes.
    pattern = re.compile(r'^([A-Z][A-Z0-9_]*)="?(.*?)"?$')
    parsed = dict(
        match.groups()
        for line in FACTS_FILE.read_text().splitlines()
        if (match := pattern.match(line))
    )
    assert parsed == FACTS
    group_vars = (ROOT / "ansible/group_vars/all.yml").read_text()
    assert pattern.pattern in yaml.safe_load(group_vars)["certificate_facts"]
    assert "deploy/certbot/certificates.env" in group_vars


def test_every_key_type_has_its_certbot_options():
    assert KEY_TYPES == ["ecdsa", "rsa"]
    assert {f"CERT_KEY_ARGS_{key_type.upper()}" for key_type in KEY_TYPES} == {
        name for name in FACTS if name.startswith("CERT_KEY_ARGS_")
    }


@pytest.mark.parametrize(
    ("path", "lineage"),
    [
        ("nginx/templates/flaskstack-https.conf.template", r"/live/\$\{TLS_CERT_NAME\}-(\w+)/"),
        ("deploy/compose/nginx/40-flaskstack-certificates.sh", r"\$TLS_CERT_NAME-(\w+)\b"),
        ("deploy/compose/local_certificates.py", r'^\s+"(\w+)": lambda'),
    ],
)
def test_the_files_that_name_the_lineages_name_these_key_types(path, lineage):
    named = set(re.findall(lineage, (ROOT / path).read_text(), re.MULTILINE))
    assert named == set(KEY_TYPES)


def test_the_webroot_is_where_nginx_serves_the_challenge_and_compose_mounts_it():
    webroot = FACTS["ACME_WEBROOT"]
    snippet = (ROOT / "nginx/snippets/acme-challenge.conf").read_text()
    assert re.findall(r"^\s*root\s+(\S+);", snippet, re.MULTILINE) == [webroot]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("nginx", "certbot"):
        mounts = [volume.split(":") for volume in compose["services"][service]["volumes"]]
        assert [target for source, target, *_ in mounts if source == "acme-webroot"] == [webroot]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf'^VOLUME \[.*"{re.escape(webroot)}"', dockerfile, re.MULTILINE)
    assert re.search(rf"install -d .*\\\n.*{re.escape(webroot)}", dockerfile)


def test_the_certbot_image_carries_the_file_beside_its_script():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copy = re.search(
        r"^COPY (deploy/compose/certbot\.sh .*?)/opt/flaskstack/$", dockerfile, re.M | re.S
    )
    assert copy and "deploy/certbot/certificates.env" in copy.group(1)


@pytest.mark.parametrize(
    "value",
    [
        FACTS["DEFAULT_ACME_SERVER"],
        *(FACTS[f"CERT_KEY_ARGS_{key_type.upper()}"] for key_type in KEY_TYPES),
        "--elliptic-curve",
        "--rsa-key-size",
    ],
)
def test_no_other_file_spells_out_a_fact(value):
    sources = [
        ROOT / "docker-compose.yml",
        ROOT / "Dockerfile",
        *(ROOT / "ansible").rglob("*.yml"),
        *(ROOT / "ansible").rglob("*.j2"),
        *(ROOT / "deploy").rglob("*.sh"),
        *(ROOT / "nginx").rglob("*.conf"),
        *(ROOT / "nginx").rglob("*.template"),
    ]
    assert not [str(path.relative_to(ROOT)) for path in sources if value in path.read_text()]
