"""Step processes forked from a server that has already imported the code location and TensorFlow.

A fresh Python process per step (`dagster api execute_step`, or the multiprocess executor's `spawn`) imports
Dagster, the definitions and, for training and export, TensorFlow again: seconds of CPU per step, most of a
backfill's time on a small machine (docs/benchmarks.md). A fork server imports them once; no TensorFlow code runs
before the fork, so each step still starts its own TensorFlow runtime.

The multiprocess executor has a fork server of its own (local_executor.py). A Dask worker runs steps through
`StepServer`: one `python -m droughtwatch_assets.defs.fork_server` per worker process (Dask's worker processes are
daemonic and may not start multiprocessing children themselves), which forks every step from Python's fork server.
The instance's run launcher (run_launcher.py) forks run workers (`dagster api execute_run`) the same way, from a
server that preloads the code location but not TensorFlow (`RUN_PRELOADED`).
"""

from __future__ import annotations

import contextlib
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
RUN_PRELOADED = (
    "droughtwatch_assets.definitions",
    "dagster._cli.api",  # the run worker's own modules
    "droughtwatch_assets.defs.step_preload",
)
_KEY_BYTES = 32


def execute(command: str, compressed_args: str) -> None:
    """In the forked process: `dagster api execute_step` or `execute_run` with these arguments; it exits with the
    step's or run's status."""
    from dagster._cli import api

    main = {"step": api.execute_step_command, "run": api.execute_run_command}[command]
    main.main(["--compressed-input-json", compressed_args], prog_name=f"dagster api execute_{command}")


class StepServer:
    """The client side, in a Dask worker process (or, with `command="run"`, the run launcher): starts the server on
    first use (again if it died) and runs each step (run) as a child of its fork server."""

    def __init__(self, command: str = "step", preload: tuple[str, ...] = PRELOADED) -> None:
        self._command = command
        self._preload = preload
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
                    [sys.executable, "-m", __name__, str(write), self._command, ",".join(self._preload)],
                    stdin=subprocess.PIPE,  # the key; then the server ends when this process ends and the pipe closes
                    pass_fds=(write,),
                )
                os.close(write)
                self._process.stdin.write(self._key)
                self._process.stdin.flush()
                with os.fdopen(read) as announced:  # once the fork server has preloaded
                    address = announced.read().split()
                if not address:
                    raise RuntimeError(
                        f"the {self._command} server ({sys.executable} -m {__name__}) exited with "
                        f"{self._process.wait()} while importing {', '.join(self._preload)}: its error is above in "
                        "this process's log; fix the import (python -c 'import droughtwatch_assets.definitions' "
                        "shows it) and launch again"
                    )
                host, port = address
                self._address = (host, int(port))
            assert self._address is not None
            return self._address

    def run(self, compressed_args: str, cancelled: Callable[[], bool]) -> tuple[int, int]:
        """Runs the step; terminates it once `cancelled()` turns true. Returns its pid and exit code."""
        pid, connection = self.launch(compressed_args)
        with connection:
            while not connection.poll(1):
                if cancelled():
                    os.kill(pid, signal.SIGTERM)  # the step reports its interruption to the instance
            return pid, connection.recv()

    def launch(self, compressed_args: str) -> tuple[int, Connection]:
        """Starts the step (run): its pid, and the connection on which its exit code comes once it ends."""
        connection = Client(self._ensure_running(), authkey=self._key)
        try:
            connection.send(compressed_args)
            return connection.recv(), connection
        except BaseException:
            connection.close()
            raise

    def stop(self) -> None:
        """Ends the server (the steps or runs it started go on)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.stdin.close()
                self._process.wait(timeout=30)
            self._process = None


def _serve(context, command: str, connection: Connection) -> None:
    with connection:
        process = context.Process(target=execute, args=(command, connection.recv()))
        process.start()
        connection.send(process.pid)
        process.join()
        with contextlib.suppress(OSError):  # a client that stopped waiting
            connection.send(process.exitcode)


def _exit_with_parent() -> None:
    sys.stdin.buffer.read()  # until the client's end of the pipe closes
    os._exit(0)


def serve(announce_fd: int, command: str, preload: tuple[str, ...]) -> None:
    """The server: a loopback listener; each connection is one step (run), forked from the preloaded fork server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    multiprocessing.forkserver.ensure_running()
    probe = context.Process(target=int)  # forked only once the fork server has imported its preload: then announce
    probe.start()
    probe.join()
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
            threading.Thread(target=_serve, args=(context, command, connection), daemon=True).start()


if __name__ == "__main__":
    announce_fd, command, preload = sys.argv[1:4]  # as StepServer starts it
    serve(int(announce_fd), command, tuple(preload.split(",")))
