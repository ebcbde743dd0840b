"""The sandbox's S3-compatible object store: moto's S3 emulation as a WSGI app.

sandbox.sh serves it with gunicorn over TLS (one worker: moto keeps every bucket in that
process's memory) at https://<gateway>:9000, path-style, any access key accepted. It stands in
for a provider's bucket so that backups leave the db host in tests. What it does not emulate:
persistence (a restart of the server empties every bucket), credentials and policies (any key
signs), object lock, storage classes and lifecycle rules, and a real provider's latency.
"""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
