"""Hostile input, the end of the corpus (it runs last): the site is still up, the app logged no
unhandled error, and the table of every case."""

from __future__ import annotations

import re

from support.ledger import check_answer
from support.raw_http import ANSWER_TIMEOUT


def test_the_site_is_still_up_after_the_corpus(sandbox, ledger, new_browser):
    with ledger.case("site still up") as case:
        browser = new_browser()
        for path in ("/", "/readyz", "/api/v1/posts"):
            check_answer(case, browser.get(sandbox.url + path, timeout=ANSWER_TIMEOUT), {200})
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', browser.get(sandbox.url + "/").text)
        check_answer(case, browser.get(sandbox.url + stylesheet.group(1), timeout=15), {200})
        # No request of the corpus made the app log an unhandled error.
        log = sandbox.journal(sandbox.edge, "flaskstack-web", f"@{ledger.started_at}")
        errors = sum("unhandled error" in line for line in log.splitlines())
        assert errors == 0, f"{errors} unhandled errors in the app's log"
    print()
    print(ledger.table())
    assert all(c.verdict == "ok" for c in ledger.cases), "a case above failed"
