"""`make dev`: the app and its worker on this machine, against throwaway real services.

Starts Postgres, Redis and an SMTP sink on free loopback ports (the same servers the test suite
uses), migrates and seeds the database, then runs Flask's debug server and the RQ worker until
Ctrl-C, and stops everything it started. Mails the worker sends are printed here.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from tools.servers import MailSink, PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]


class PrintingMailSink(MailSink):
    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd API
        print(f"\n--- mail to {', '.join(envelope.rcpt_tos)} ---\n{envelope.content.decode()}\n")
        return await super().handle_DATA(server, session, envelope)


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    postgres, redis, mail = PostgresServer(), RedisServer(), PrintingMailSink()
    children: list[subprocess.Popen] = []
    try:
        postgres.start()
        postgres.create_database()
        redis.start()
        mail.start()
        env = {
            **os.environ,
            "APP_ENV": "development",
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mail.port),
            "SMTP_STARTTLS": "false",
            "SITE_URL": "http://127.0.0.1:5000",
        }
        flask = [sys.executable, "-m", "flask", "--app", "app"]
        subprocess.run([*flask, "db", "upgrade"], env=env, check=True, cwd=ROOT)
        subprocess.run([*flask, "seed"], env=env, check=True, cwd=ROOT)
        children.append(subprocess.Popen([sys.executable, "-m", "app.worker"], env=env, cwd=ROOT))
        children.append(
            subprocess.Popen([*flask, "run", "--debug", "--port", "5000"], env=env, cwd=ROOT)
        )
        print("==> http://127.0.0.1:5000/ (Ctrl-C stops the app, the worker and the services)")
        children[-1].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
            child.wait(timeout=30)
        mail.close()
        redis.close()
        postgres.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
