#!/bin/bash
# certbot deploy hook (installed in /etc/letsencrypt/renewal-hooks/deploy/): runs once per
# renewed certificate, $RENEWED_LINEAGE naming it. A reload makes nginx's new workers read the
# new files while the old ones finish their requests: no connection is dropped, no restart.
# nginx -t first: a configuration broken by anything else must not reach the running server;
# the old certificate then keeps being served and certbot's log and exit status say why.
set -euo pipefail

echo "renewed ${RENEWED_LINEAGE:-a certificate}: validating the nginx configuration"
nginx -t -q
systemctl reload nginx
echo "nginx reloaded"
# The renewed files are the host's new normal for the file integrity check (roles/base).
systemctl start --no-block flaskstack-integrity-baseline.service
