"""An S3 emulator for the object-storage tests: moto's server as a child process on a free
port of 127.0.0.1 (no Docker), with one bucket, and the environment a run needs to reach it
through the standard botocore settings (endpoint, key, secret). Credentials are invented per
emulator; moto accepts any."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class EmulatorUnavailable(RuntimeError):
    """moto is not installed or its server did not answer: the tests skip with this reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Emulator:
    def __init__(self, log_dir: Path, bucket: str = "ctdc-work"):
        self.bucket = bucket
        self.log_path = Path(log_dir) / "moto-server.log"
        self.key_id = f"ctdc-test-{secrets.token_hex(4)}"
        self.secret = f"SECRET-{secrets.token_hex(16)}"  # searched for in logs and plans
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def __enter__(self) -> S3Emulator:
        try:
            import moto.server  # noqa: F401
            import s3fs  # noqa: F401
        except ImportError as error:
            raise EmulatorUnavailable(
                f"moto[server] or s3fs is not installed ({error.name})"
            ) from None
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise EmulatorUnavailable(f"moto's server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise EmulatorUnavailable("moto's server did not answer within 60 s") from None
                time.sleep(0.2)
        self.fs().mkdir(self.bucket)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def env(self) -> dict[str, str]:
        """What a run needs to reach the emulator (botocore's standard variables), and nothing
        from the developer's own AWS configuration."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def fs(self):
        """A client of its own (no cached listing), independent of the process's environment."""
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint,
            key=self.key_id,
            secret=self.secret,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def objects(self, prefix: str = "") -> list[str]:
        """The keys under a prefix of the bucket (names only)."""
        root = f"{self.bucket}/{prefix.strip('/')}".rstrip("/")
        fs = self.fs()
        return sorted(key[len(self.bucket) + 1 :] for key in fs.find(root))

    def read(self, key: str) -> bytes:
        return self.fs().cat_file(f"{self.bucket}/{key}")

    def put(self, key: str, data: bytes) -> None:
        self.fs().pipe_file(f"{self.bucket}/{key}", data)
