"""What the app serves during the bench: users and posts seeded straight into its database, and
the session of the bench user, logged in as a browser does."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import urllib3

from tools.bench.layout import SITE_HOST
from tools.bench.processes import BenchError

BENCH_USER = "bench"
BENCH_PASSWORD = "bench password that is long enough"  # noqa: S105 - a throwaway database's


def with_database(database_url: str, name: str) -> str:
    """The same server and credentials, another database (TCP or unix-socket URL alike)."""
    return urllib.parse.urlsplit(database_url)._replace(path=f"/{name}").geturl()


def seed_posts(database_url: str, total: int) -> None:
    """Bulk insert (SQL, not the ORM) until `total` posts exist: ten authors, one post in 50
    soft-deleted, a paragraph of text each."""
    import psycopg2

    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM posts")
        existing = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO posts (author_id, title, body, created_at, deleted_at)
            SELECT (SELECT min(id) FROM users) + n %% 10,
                   'Post number ' || n,
                   repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 12),
                   now() - make_interval(secs => %(total)s - n),
                   CASE WHEN n %% 50 = 0 THEN now() END
            FROM generate_series(%(first)s, %(total)s) AS n
            """,
            {"first": existing + 1, "total": total},
        )
    connection.close()
    # As after a bulk load in production: fresh statistics and visibility map.
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE posts")
    connection.close()


def seed_users(database_url: str) -> None:
    import psycopg2
    from werkzeug.security import generate_password_hash

    password_hash = generate_password_hash(BENCH_PASSWORD)
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO users (username, email, password_hash, is_admin, created_at)
            SELECT CASE WHEN n = 0 THEN %(user)s ELSE 'author' || n END,
                   CASE WHEN n = 0 THEN %(user)s ELSE 'author' || n END || '@example.org',
                   %(hash)s, false, now()
            FROM generate_series(0, 9) AS n
            """,
            {"user": BENCH_USER, "hash": password_hash},
        )
    connection.close()


def own_post(database_url: str) -> int:
    """The newest live post of the bench user: comments on it queue no mail."""
    import psycopg2

    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT posts.id FROM posts JOIN users ON users.id = posts.author_id
            WHERE users.username = %s AND posts.deleted_at IS NULL
            ORDER BY posts.id DESC LIMIT 1
            """,
            (BENCH_USER,),
        )
        (post,) = cursor.fetchone()
    connection.close()
    return post


def site(ca_cert: Path) -> urllib3.HTTPSConnectionPool:
    """Connections to nginx as the site's name, as a browser makes them."""
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1",
        443,
        server_hostname=SITE_HOST,
        assert_hostname=SITE_HOST,
        ca_certs=str(ca_cert),
    )


def api_token(ca_cert: Path) -> str:
    """The bench user's API token, from the API's own endpoint (POST /api/v1/tokens)."""
    pool = site(ca_cert)
    answer = pool.request(
        "POST",
        "/api/v1/tokens",
        json={"username": BENCH_USER, "password": BENCH_PASSWORD},
        headers={"Host": SITE_HOST},
    )
    pool.close()
    if answer.status != 201:
        raise BenchError(f"no API token: {answer.status} {answer.data[:300]!r}")
    return answer.json()["token"]


def log_in(ca_cert: Path) -> str:
    """Log in through nginx with the real form, as a browser does; returns the Cookie header."""
    pool = site(ca_cert)
    base = {"Host": SITE_HOST}
    page = pool.request("GET", "/login", headers=base, redirect=False)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.data.decode())[1]
    answer = pool.request(
        "POST",
        "/login",
        body=urllib.parse.urlencode(
            {"csrf_token": token, "username": BENCH_USER, "password": BENCH_PASSWORD}
        ),
        headers={
            **base,
            "Cookie": cookie,
            "Referer": f"https://{SITE_HOST}/login",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        redirect=False,
    )
    if answer.status != 302 or "Set-Cookie" not in answer.headers:
        raise BenchError(f"log-in failed: {answer.status} {answer.data[:300]!r}")
    cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
    home = pool.request("GET", "/", headers={**base, "Cookie": cookie}, redirect=False)
    if home.status != 200 or "Log out" not in home.data.decode():
        raise BenchError("the session cookie does not log in")
    pool.close()
    return cookie
