"""Helpers the test modules share: free ports, real processes started and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a process, and kill it if it does not stop within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def riskgate_serve(config: Path, env: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``riskgate serve --config CONFIG`` on a free port; yields its base URL and process.

    Stopped with Ctrl-C (SIGINT), as an operator would, so shutdown is tested too.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "riskgate", "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if process.poll() is not None:
                raise AssertionError(f"riskgate serve exited with {process.returncode}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("riskgate serve did not answer /healthz within 10 s")
        yield base, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(process)


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    """A rules folder under ``tmp_path`` holding one rule file; the folder's path."""
    folder = tmp_path / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder
