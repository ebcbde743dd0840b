"""The sandbox's stand-in for a person's inbox and chat: an SMTP server and a webhook receiver
that record every alert notification Alertmanager sends them, one JSON line each.

    python3 alert_sink.py --address 10.231.0.1 --smtp-port 2525 --http-port 9095 --record FILE

Lines: {"via": "webhook", "received": <unix time>, "payload": <Alertmanager's JSON>} and
{"via": "email", "received": …, "from": …, "to": [...], "subject": …, "body": …}. Standard
library only (the machine's python3): a minimal SMTP dialogue (no TLS, no authentication), which
is all Alertmanager needs with smtp_require_tls off.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import time
from pathlib import Path


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def write(self, entry: dict) -> None:
        entry = {"received": time.time(), **entry}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


async def smtp_session(reader, writer, recorder: Recorder) -> None:
    async def reply(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    sender, recipients = "", []
    await reply("220 flaskstack-sandbox alert sink")
    try:
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                await reply("250-flaskstack-sandbox")
                await reply("250 8BITMIME")
            elif verb == "HELO":
                await reply("250 flaskstack-sandbox")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().strip("<>"), []
                await reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                await reply("250 OK")
            elif verb == "DATA":
                await reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data := await reader.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                message = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                body = message.get_body(preferencelist=("plain", "html"))
                recorder.write({
                    "via": "email", "from": sender, "to": recipients,
                    "subject": str(message["subject"]),
                    "body": body.get_content() if body else "",
                })  # fmt: skip
                await reply("250 OK: recorded")
            elif verb in ("RSET", "NOOP"):
                await reply("250 OK")
            elif verb == "QUIT":
                await reply("221 Bye")
                break
            else:
                await reply("502 Command not implemented")
    finally:
        writer.close()


async def http_session(reader, writer, recorder: Recorder) -> None:
    try:
        request = await reader.readuntil(b"\r\n\r\n")
        head = request.decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if h)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "POST":
            recorder.write({"via": "webhook", "path": path, "payload": json.loads(body or b"null")})
            status = "200 OK"
        else:
            status = "405 Method Not Allowed"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ValueError) as exc:
        print(f"alert sink: bad HTTP request: {exc}", flush=True)
    finally:
        writer.close()


async def serve(args) -> None:
    recorder = Recorder(args.record)
    smtp = await asyncio.start_server(
        lambda r, w: smtp_session(r, w, recorder), args.address, args.smtp_port
    )
    http = await asyncio.start_server(
        lambda r, w: http_session(r, w, recorder), args.address, args.http_port
    )
    where = f"smtp {args.address}:{args.smtp_port}, webhook http://{args.address}:{args.http_port}/"
    print(f"alert sink: {where}, recording to {args.record}", flush=True)
    async with smtp, http:
        await asyncio.gather(smtp.serve_forever(), http.serve_forever())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--smtp-port", type=int, default=2525)
    parser.add_argument("--http-port", type=int, default=9095)
    parser.add_argument("--record", type=Path, required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
