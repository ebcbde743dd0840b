"""The db host lost under the write load and replaced by a new, empty one, brought back the way
the README says: `make deploy` onto the new host, then `make restore INTO=live` from the bucket.

The old host's power is cut (no shutdown: its unarchived WAL is lost with it) and its disk thrown
away (tools/sandbox/sandbox.sh replace). The drill's row (RPO, RTO and each step's time) goes
into the restore drills' table printed at the end of the stage.
"""

from __future__ import annotations

import re
import time

from test_backups import create_post, run_ops
from test_faults import deploy
from test_pitr import (  # noqa: F401 (drills: the fixture)
    ARCHIVE_TIMEOUT,
    DATABASE,
    drills,
    record_loss,
    restore_steps,
    wait_for_a_write,
)

from support.load import WriteLoad


def test_a_replaced_db_host_gets_its_data_back_from_the_bucket(sandbox, member, drills):  # noqa: F811
    db_host = sandbox.hosts_in("db")[0]
    post_id = create_post(sandbox, member, "Before the db host was lost")
    load = WriteLoad(sandbox.url, member.api, post_id, timeout=5).start()
    try:
        time.sleep(ARCHIVE_TIMEOUT + 15)  # writes older than the archive timeout at the loss
        loss_began = load.clock()
        started = time.monotonic()
        sandbox.cli("replace", db_host["name"])
        lost, replaced = load.clock(), time.monotonic() - started

        started = time.monotonic()
        deployed = deploy(sandbox)
        deploy_seconds = time.monotonic() - started
        assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
        # The new cluster is not the repository's: the deploy says what to do instead of
        # failing, and archives nothing into the old cluster's history.
        needed = re.search(r"action needed: .*Postgres cluster is new.*", deployed.stdout)
        assert needed, deployed.stdout[-3000:]
        print(needed.group(0))

        restored = run_ops(sandbox, "restore.sh", INTO="live", CONFIRM=DATABASE)
        wait_for_a_write(load, load.clock())
    finally:
        load.stop()
    print(restored.stdout[restored.stdout.rfind("restore of stanza") :])
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-2000:]
    record_loss(
        sandbox, db_host, drills, load, post_id, loss_began, lost,
        drill=f"{db_host['name']} lost under load, replaced; make deploy, restore INTO=live",
        steps=f"new host {replaced:.0f} s, make deploy {deploy_seconds:.0f} s, make restore "
        f"{restored.seconds:.0f} s ({restore_steps(restored.stdout)})",
    )  # fmt: skip
    # The replaced host archives into the repository again.
    backups = run_ops(sandbox, "backups.sh")
    assert backups.returncode == 0, backups.stdout[-3000:]
