"""The figures of issue 8 in one table: what each measures (which server, which URL, under what
load), the figure its ratio is taken against and the target of that ratio; and the profiles
(how long each load runs). tools/bench/README.md explains them; bench.py measures them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tools.bench.results import Figure, Target

# Load shapes. App figures: 16 clients, one request at a time each (16 busy browsers);
# nginx-only figures: enough parallel streams to saturate nginx, not the app.
APP_CLIENTS = 16
EDGE_CLIENTS, EDGE_STREAMS = 32, 8
LATENCY_CLIENTS = 8
# A spike on one anonymous page, answered from nginx's microcache.
SPIKE_CLIENTS = 50
# New connections of each kind per round when measuring handshakes (full, resumed, no TLS
# alternate round by round).
HANDSHAKE_ROUND = 50
COMPRESSED = "gzip, deflate, br"  # the accept-encoding of a browser


@dataclass(frozen=True)
class Profile:
    name: str
    duration: int  # seconds per measured run
    warmup: int  # seconds of load before each measured run
    repetitions: int
    small_posts: int
    large_posts: int
    handshakes: int  # new TLS connections per handshake measurement


FULL = Profile(
    "full",
    duration=10,
    warmup=2,
    repetitions=3,
    small_posts=1000,
    large_posts=100_000,
    handshakes=2000,
)
SMOKE = Profile(
    "smoke", duration=1, warmup=1, repetitions=1, small_posts=1000, large_posts=2000, handshakes=200
)


@dataclass(frozen=True)
class Load:
    """Requests for one URL: h2load (HTTP/2 over TLS) through nginx, or wrk (HTTP/1.1) straight
    to gunicorn on APP_ADDRESS."""

    path: str  # with `fingerprinted`, the static file's name in the release's manifest
    via: str = "nginx"  # or "gunicorn"
    clients: int = APP_CLIENTS  # connections, each a client
    streams: int = 1  # requests in flight per connection
    compressed: bool = False  # accept-encoding: COMPRESSED
    logged_in: bool = False  # with the bench user's session cookie
    # With a cookie that means nothing to the app: nginx's microcache passes the request on, so
    # the figure measures the app (an anonymous visitor's page is otherwise served from it).
    bypass_cache: bool = False
    fingerprinted: bool = False
    edge: str = "nginx"  # or "caddy": the peer edge (tools/bench/caddy.py)
    half_rate_of: str | None = None  # a fixed rate: half that figure's median req/s in all
    posts: str = "small"  # the database it reads: Profile.small_posts or large_posts posts
    # POSTed as JSON with the bench user's API token (Authorization: Bearer); `path` may name
    # {post}, the newest live post of the bench user.
    json_body: str | None = None
    archiving: bool = False  # Postgres archives its WAL with pgBackRest (figures 12)
    # gunicorn counts each request in Prometheus' files (PROMETHEUS_MULTIPROC_DIR, figures 13).
    metrics: bool = False

    def on(self, posts: str) -> Load:
        """The same requests on the other database."""
        return replace(self, posts=posts)

    def archived(self) -> Load:
        """The same requests with Postgres' WAL archiving on."""
        return replace(self, archiving=True)

    def counted(self) -> Load:
        """The same requests with gunicorn's request metrics on."""
        return replace(self, metrics=True)


@dataclass(frozen=True)
class Connections:
    """New connections to nginx, one request each, while it serves one certificate."""

    certificate: str  # "ecdsa" or "rsa"
    resume: bool | None  # a resumed TLS 1.3 handshake, a full one, or None: no TLS (port 80)
    edge: str = "nginx"  # or "caddy"


@dataclass(frozen=True)
class Spec:
    """One row of the table. Placeholders in `name` and `note` are filled when the figure is
    measured ({small}, {large}: post counts; {workers}: gunicorn's worker count, …)."""

    key: str
    name: str
    unit: str = "req/s"
    baseline: str | None = None  # the figure it is divided by
    target: Target | None = None
    measures: Load | Connections | None = None  # None: memory (11)
    note: str = ""

    def figure(self, **values) -> Figure:
        name, note = self.name.format(**values), self.note.format(**values)
        return Figure(self.key, name, self.unit, self.baseline, self.target, note)


def at_least(ratio: float) -> Target:
    return Target(">=", ratio, "ratio")


def at_most(ratio: float) -> Target:
    return Target("<=", ratio, "ratio")


REQ, CONN = "req/s", "ms CPU/conn"
EDGE = {"clients": EDGE_CLIENTS, "streams": EDGE_STREAMS}
CEILING = Load("/__bench/ceiling", **EDGE)
PROXIED = Load("/healthz")
CSS = Load("css/site.css", fingerprinted=True, compressed=True, **EDGE)
PAGE = Load("/", compressed=True, bypass_cache=True)
CACHED_PAGE = Load("/", compressed=True, clients=SPIKE_CLIENTS)
LOGGED_IN_PAGE = Load("/", compressed=True, logged_in=True)
API = Load("/api/v1/posts", compressed=True)
# A comment through the API on the bench user's own post: its author gets no mail, so no job
# is queued in Redis and the write is the row and its commit.
COMMENT = Load(
    "/api/v1/posts/{post}/comments", json_body='{"body": "A comment from the benchmark."}'
)

FIGURES = (
    # key, name, unit, baseline (the figure it is divided by), target, what it measures
    Spec("1", "ceiling: nginx fixed 200", REQ, None, None, CEILING),
    # No target: what the load shape of 5c costs nginx on its cheapest answer (50 clients with
    # one request each in flight, where 1 keeps 8 streams on each of 32 connections).
    Spec(
        "1c",
        "ceiling with 5c's load",
        REQ,
        "1",
        None,
        replace(CEILING, clients=SPIKE_CLIENTS, streams=1),
        note="{clients} clients, one request at a time each",
    ),
    Spec("2", "bare app: gunicorn /healthz", REQ, None, None, Load("/healthz", via="gunicorn")),
    Spec("3", "proxied app: nginx → /healthz", REQ, "2", at_least(0.85), PROXIED),
    Spec("4", "static: fingerprinted CSS", REQ, "1", at_least(0.85), CSS),
    Spec("5", "anonymous page /", REQ, "2", at_least(0.40), PAGE),
    Spec(
        "5c",
        "anonymous page / from the microcache",
        REQ,
        "1",
        at_least(0.50),
        CACHED_PAGE,
        note="{clients} clients, one request at a time each",
    ),
    Spec("6", "logged-in page /", REQ, "5", at_least(0.85), LOGGED_IN_PAGE),
    Spec("7", "API list /api/v1/posts", REQ, "2", at_least(0.40), API),
    Spec(
        "8",
        "latency of 5 at half its max",
        REQ,
        None,
        Target("<=", 25, "p99_ms"),
        Load("/", clients=LATENCY_CLIENTS, compressed=True, bypass_cache=True, half_rate_of="5"),
        note="{clients} clients × {rate} req/s = {offered} req/s offered (half of 5's median)",
    ),
    # 5 and 7 again, on a database of small_posts and on one of large_posts.
    Spec("9a", "anonymous page / at {small} posts", REQ, None, None, PAGE),
    Spec("9b", "anonymous page / at {large} posts", REQ, "9a", at_least(0.90), PAGE.on("large")),
    Spec("9c", "API list at {small} posts", REQ, None, None, API),
    Spec("9d", "API list at {large} posts", REQ, "9c", at_least(0.90), API.on("large")),
    Spec(
        "10a",
        "TLS 1.3 full handshake, ECDSA",
        CONN,
        "10b",
        at_most(0.85),
        Connections("ecdsa", resume=False),
        note="nginx workers' time on a CPU over {connections} new connections, one request "
        "each, the kinds alternating in rounds of {round}",
    ),
    Spec("10b", "TLS 1.3 full handshake, RSA", CONN, None, None, Connections("rsa", False)),
    Spec("10c", "TLS 1.3 resumed, ECDSA", CONN, "10a", at_most(0.60), Connections("ecdsa", True)),
    # No target: shows what resumption saves where the signature is expensive.
    Spec("10d", "TLS 1.3 resumed, RSA", CONN, "10b", None, Connections("rsa", True)),
    # No target: the part of 10a-10d that is not TLS at all (TCP, HTTP, the log line).
    Spec("10e", "no TLS: plain HTTP, same request", CONN, "10a", None, Connections("ecdsa", None)),
    # The peer edge: the same loads through Caddy, each divided by nginx's figure. nginx should
    # be at least as good: Caddy's req/s at most nginx's, its CPU per handshake at least.
    Spec("C1", "Caddy: ceiling, fixed 200", REQ, "1", at_most(1.0), replace(CEILING, edge="caddy")),
    Spec("C3", "Caddy: proxied /healthz", REQ, "3", at_most(1.0), replace(PROXIED, edge="caddy")),
    Spec(
        "C4", "Caddy: static, fingerprinted CSS", REQ, "4", at_most(1.0), replace(CSS, edge="caddy")
    ),
    Spec("C5", "Caddy: anonymous page /", REQ, "5", at_most(1.0), replace(PAGE, edge="caddy")),
    Spec(
        "C10a",
        "Caddy: TLS 1.3 full handshake, ECDSA",
        CONN,
        "10a",
        at_least(1.0),
        Connections("ecdsa", resume=False, edge="caddy"),
        note="Caddy's time on a CPU (all its threads) over {connections} new connections",
    ),
    Spec(
        "C10b",
        "Caddy: TLS 1.3 full handshake, RSA",
        CONN,
        "10b",
        at_least(1.0),
        Connections("rsa", resume=False, edge="caddy"),
    ),
    # What ships: 2, 5, 6 and 7 again with the hosts' interpreter and virtualenv (Debian 13's
    # Python, tools/bench/hosts_python.py), each ratio against its own interpreter's figure.
    Spec(
        "H2",
        "hosts' Python: bare app /healthz",
        REQ,
        "2",
        None,
        Load("/healthz", via="gunicorn"),
        note="{python}, in a chroot of a Debian 13 host's root; the ratio is against 2 "
        "(this machine's Python)",
    ),
    Spec("H5", "hosts' Python: anonymous page /", REQ, "H2", at_least(0.40), PAGE),
    Spec("H6", "hosts' Python: logged-in page /", REQ, "H5", at_least(0.85), LOGGED_IN_PAGE),
    Spec("H7", "hosts' Python: API list /api/v1/posts", REQ, "H2", at_least(0.40), API),
    Spec("11a", "memory: gunicorn master RSS", "MB"),
    Spec(
        "11b",
        "memory: {workers} workers RSS each",
        "MB",
        note="all workers: RSS {rss:.0f} MB, PSS {pss:.0f} MB "
        "(PSS shares copy-on-write pages between processes)",
    ),
    # The same page and a write with Postgres' WAL archiving off and on (pgBackRest, as
    # roles/pgbackrest sets it up), Postgres restarted for each.
    Spec(
        "12a",
        "anonymous page /, WAL archiving off",
        REQ,
        None,
        None,
        PAGE,
        note="archive_mode=off; Postgres and gunicorn restarted for each condition, "
        "in turns A B, B A, A B",
    ),
    Spec(
        "12b",
        "anonymous page /, WAL archiving on",
        REQ,
        "12a",
        at_least(0.95),
        PAGE.archived(),
        note="pgbackrest archive-push (async, zstd, aes-256-cbc; archive_timeout {timeout} s) "
        "into a repository on local disk, a segment closed in the middle of each run "
        "(pg_switch_wal); segments archived over its loads: {archived}. Its first run had a "
        "full backup beside it (pgbackrest backup --type=full, stanza created before): "
        "{database_mb:.0f} MB of cluster, {repository_mb:.1f} MB in the repository, {seconds} s",
    ),
    Spec(
        "12c",
        "API comment (a write), WAL archiving off",
        REQ,
        None,
        None,
        COMMENT,
        note="POST /api/v1/posts/<id>/comments with an API token, {clients} clients; WAL "
        "written over its loads (warm-ups included) {wal_mb:.1f} MB",
    ),
    # 0.90: archiving copies WAL after a segment is complete, never inside a commit; a write
    # losing more than the growth figures allow would mean archive_command is in its way.
    Spec(
        "12d",
        "API comment (a write), WAL archiving on",
        REQ,
        "12c",
        at_least(0.90),
        COMMENT.archived(),
        note="archiving as 12b, no backup; over its loads (warm-ups included): WAL written "
        "{wal_mb:.1f} MB, segments archived: {archived}",
    ),
    # The same page with gunicorn's request metrics off and on (deploy/gunicorn.conf.py's hooks,
    # PROMETHEUS_MULTIPROC_DIR), gunicorn restarted for each. 0.97: the metrics are worth a few
    # per cent of the app's throughput, not more.
    Spec(
        "13a",
        "anonymous page /, request metrics off",
        REQ,
        None,
        None,
        PAGE,
        note="PROMETHEUS_MULTIPROC_DIR unset; gunicorn restarted for each condition, in turns "
        "A B, B A, A B",
    ),
    Spec(
        "13b",
        "anonymous page /, request metrics on",
        REQ,
        "13a",
        at_least(0.97),
        PAGE.counted(),
        note="PROMETHEUS_MULTIPROC_DIR set: each request counted by endpoint and status and "
        "timed in gunicorn's hooks; requests counted over its runs (warm-ups included): "
        "{counted}",
    ),
)
SPECS = {spec.key: spec for spec in FIGURES}

# The figures in the order bench.py measures them, a group at a time.
THROUGHPUT = ("1", "1c", "2", "3", "4", "5", "5c", "6", "7", "C1", "C3", "C4", "C5")
LATENCY = ("8",)
PROFILED = ("3", "5", "6", "7")  # with --py-spy: the app figures behind nginx
GROWTH = ("9a", "9b", "9c", "9d")
ARCHIVING = ("12a", "12b", "12c", "12d")
BESIDE_BACKUP = "12b"  # its first run has a full backup running beside it
REQUEST_METRICS = ("13a", "13b")
HOSTS_PYTHON = ("H2", "H5", "H6", "H7")
HANDSHAKES = ("10a", "10b", "10c", "10d", "10e")
PEER_HANDSHAKES = ("C10a", "C10b")
