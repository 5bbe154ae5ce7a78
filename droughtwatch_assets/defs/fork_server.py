"""Step processes forked from a server that has already imported the code location and TensorFlow.

A fresh Python process per step (`dagster api execute_step`, or the multiprocess executor's `spawn`) imports
Dagster, the definitions and, for training and export, TensorFlow again: seconds of CPU per step, most of a
backfill's time on a small machine (docs/benchmarks.md). A fork server imports them once; no TensorFlow code runs
before the fork, so each step still starts its own TensorFlow runtime.

The multiprocess executor has a fork server of its own (local_executor.py). A Dask worker runs steps through
`StepServer`: one `python -m droughtwatch_assets.defs.fork_server` per worker process (Dask's worker processes are
daemonic and may not start multiprocessing children themselves), which forks every step from Python's fork server.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener

PRELOADED = (
    "droughtwatch_assets.definitions",
    "droughtwatch_assets.model.train",  # TensorFlow and Keras
    "droughtwatch_assets.model.export",  # tf2onnx, ONNX Runtime
    "droughtwatch_assets.defs.step_preload",  # botocore's models, Dagster's schema migrations
)
_KEY_BYTES = 32


def execute_step(compressed_args: str) -> None:
    """In the forked process: `dagster api execute_step` with these arguments; it exits with the step's status."""
    from dagster._cli.api import execute_step_command

    execute_step_command.main(["--compressed-input-json", compressed_args], prog_name="dagster api execute_step")


class StepServer:
    """The client side, in a Dask worker process: starts the server on first use (again if it died) and runs each
    step as a child of its fork server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._address: tuple[str, int] | None = None
        self._key = os.urandom(_KEY_BYTES)

    def start(self) -> None:
        """Starts the server (if it is not running) in the background: its fork server preloads meanwhile."""
        threading.Thread(target=self._ensure_running, daemon=True).start()

    def _ensure_running(self) -> tuple[str, int]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                read, write = os.pipe()
                self._process = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(write)],
                    stdin=subprocess.PIPE,  # the key; then the server ends when this process ends and the pipe closes
                    pass_fds=(write,),
                )
                os.close(write)
                self._process.stdin.write(self._key)
                self._process.stdin.flush()
                with os.fdopen(read) as announced:  # once the fork server has preloaded
                    host, port = announced.read().split()
                self._address = (host, int(port))
            assert self._address is not None
            return self._address

    def run(self, compressed_args: str, cancelled: Callable[[], bool]) -> tuple[int, int]:
        """Runs the step; terminates it once `cancelled()` turns true. Returns its pid and exit code."""
        with Client(self._ensure_running(), authkey=self._key) as connection:
            connection.send(compressed_args)
            pid = connection.recv()
            while not connection.poll(1):
                if cancelled():
                    os.kill(pid, signal.SIGTERM)  # the step reports its interruption to the instance
            return pid, connection.recv()


def _serve_step(context, connection: Connection) -> None:
    with connection:
        process = context.Process(target=execute_step, args=(connection.recv(),))
        process.start()
        connection.send(process.pid)
        process.join()
        connection.send(process.exitcode)


def _exit_with_parent() -> None:
    sys.stdin.buffer.read()  # until the client's end of the pipe closes
    os._exit(0)


def serve(announce_fd: int) -> None:
    """The server: a loopback listener; each connection is one step, forked from the preloaded fork server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED))
    multiprocessing.forkserver.ensure_running()
    key = sys.stdin.buffer.read(_KEY_BYTES)
    with Listener(("127.0.0.1", 0), authkey=key) as listener:
        threading.Thread(target=_exit_with_parent, daemon=True).start()
        with os.fdopen(announce_fd, "w") as announce:
            host, port = listener.address
            announce.write(f"{host} {port}")
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError):  # a client that failed the handshake
                time.sleep(0.1)
                continue
            threading.Thread(target=_serve_step, args=(context, connection), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
