"""Azurite's table service on loopback, in memory: the real Table Storage for local runs and tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from dev.stack import ROOT

# The well-known development account of the Azure Storage emulators (public, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BINARY = ROOT / "node_modules" / ".bin" / "azurite-table"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Azurite:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if not BINARY.exists():
            raise RuntimeError("Azurite is not installed: run `npm install` (dev/run.sh and dev/test.sh do)")
        self.workdir = workdir
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self) -> Azurite:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "azurite.log").open("ab")
        self._process = subprocess.Popen(
            [
                str(BINARY),
                *(
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--silent",
                    "--disableTelemetry",
                    "--tableHost",
                    "127.0.0.1",
                ),
                *("--tablePort", str(self.port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,  # Azurite writes its debug and lock files to the working directory
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"azurite exited with {self._process.returncode}; see {self.workdir / 'azurite.log'}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("azurite did not start listening within 30 s")

    def pause(self) -> None:
        """SIGSTOP: the process is stopped and keeps its data; clients hang until their timeouts."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
