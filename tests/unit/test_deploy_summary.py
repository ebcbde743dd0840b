"""deploy/deploy_summary.py: what `make deploy` prints at its end."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))

from deploy_summary import actions_needed

# As Ansible's default callback writes a debug task's message into the log (YAML, folded).
LOG = """
TASK [pgbackrest : Say that this cluster waits for its restore] ****************
ok: [data1] =>
    msg: 'Action needed: data1''s Postgres cluster is new and the repository holds
        another one''s backups (a replaced db host): run `make restore INVENTORY=… INTO=live`
        to bring its data back. Until then no WAL is archived and no backup is taken.'

TASK [pgbackrest : Create the stanza in the repository] ************************
skipping: [data1]
ok: [data2] => {
    "msg": "Action needed: restart it"
}
"""


def test_the_roles_requests_are_listed_once_each_in_plain_words():
    assert actions_needed(LOG + LOG) == [
        "data1's Postgres cluster is new and the repository holds another one's backups (a "
        "replaced db host): run `make restore INVENTORY=… INTO=live` to bring its data back. "
        "Until then no WAL is archived and no backup is taken.",
        "restart it",
    ]


def test_a_log_without_requests_has_none():
    assert actions_needed("TASK [x] ***\nok: [h]\n") == []
