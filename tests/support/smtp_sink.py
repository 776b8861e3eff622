"""A tiny SMTP server for tests: accepts every message and keeps it (no TLS, no auth).

aiosmtpd is not a dependency and the standard library's smtpd is gone in Python 3.12, so the
few SMTP verbs a client sends are answered here.
"""

from __future__ import annotations

import email
import json
import socketserver
import threading
from email.message import Message


class _Handler(socketserver.StreamRequestHandler):
    def _say(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self._say("220 ctdc-test-sink ESMTP")
        while line := self.rfile.readline():
            verb = line.decode("utf-8", "replace").strip().split(" ")[0].upper()
            if verb in {"EHLO", "HELO"}:
                self._say("250 ctdc-test-sink")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in {b".\r\n", b".\n", b""}:
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.messages.append(email.message_from_bytes(b"".join(data)))
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self._say("250 ok")


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages: list[Message] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def connection_json(self) -> str:
        """An Airflow smtp connection (AIRFLOW_CONN_...) pointing at this sink."""
        extra = {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1}
        return json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra}
        )

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


def text_of(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "".join(
        p.get_payload(decode=True).decode("utf-8", "replace")
        for p in parts
        if p.get_content_maintype() == "text"
    )
