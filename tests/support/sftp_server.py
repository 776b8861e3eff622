"""A real SFTP server for the delivery tests: Debian's OpenSSH `sshd` with its `sftp-server`,
started as a child of the test on a loopback port (22200-22299), with a throwaway host key
and user key made by `ssh-keygen` in the test's folder. Only the current user may log in,
with that key only. `make sftp-deps` installs openssh-server when it is missing."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PORTS = range(22200, 22300)


class SftpUnavailable(RuntimeError):
    """openssh-server is not installed or sshd did not start: the tests skip with this."""


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SftpUnavailable("no free port in 22200-22299")


class SftpServer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def _keygen(self, name: str) -> Path:
        path = self.folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return path

    def __enter__(self) -> SftpServer:
        if not (Path(SSHD).exists() and Path(SFTP_SERVER).exists() and shutil.which("ssh-keygen")):
            raise SftpUnavailable("openssh-server is not installed (make sftp-deps)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host_key = self._keygen("host_key")
        self.user_key = self._keygen("user_key")
        (self.folder / "authorized_keys").write_text(
            Path(f"{self.user_key}.pub").read_text(), encoding="utf-8"
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        self.port = _free_port()
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    f"Subsystem sftp {SFTP_SERVER}",
                    "LogLevel ERROR",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        self.log_path = self.folder / "sshd.log"
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise SftpUnavailable(f"sshd exited: {self.log_path.read_text()[-500:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise SftpUnavailable("sshd did not listen within 20 s")
            time.sleep(0.1)
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

    def connection(self) -> str:
        """The Airflow connection (JSON, for $AIRFLOW_CONN_<ID>): host, port, user, key file
        and the server's host key (checked, not trusted blindly)."""
        host_key = Path(f"{self.host_key}.pub").read_text().split()
        return json.dumps(
            {
                "conn_type": "sftp",
                "host": "127.0.0.1",
                "port": self.port,
                "login": self.user,
                "extra": {
                    "key_file": str(self.user_key),
                    "host_key": f"{host_key[0]} {host_key[1]}",
                },
            }
        )
