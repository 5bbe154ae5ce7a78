"""The instance's run launcher (`run_launcher` in dagster.yaml and the instance files): Dagster's default, except that
a run of this code location gets a run worker forked from a server that has already imported it.

Dagster's default launcher asks the code location's server to start each run worker, a new Python process that
imports Dagster and the definitions again: seconds of CPU per run, and a backfill's runs all start at once, so on a
small machine its four run workers took 7-8 s to start (docs/benchmarks.md). Here the launching process (the
daemon, or the webserver) keeps a run server (fork_server.py, `RUN_PRELOADED`) and each run worker is
`dagster api execute_run` forked from it, as a Kubernetes run pod runs it. The server is started anew when a file of
the package changes, so a run runs the package as it is on disk when it launches, as a spawned run worker would;
runs of other code locations go through Dagster's default path.

Terminating a run signals its run worker (SIGINT, as the default path's code server does), which stops its steps
and ends the run as canceled.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import sys
import threading
import zlib
from pathlib import Path

import dagster as dg
from dagster._core.launcher import LaunchRunContext
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from droughtwatch_assets.defs.fork_server import RUN_PRELOADED, StepServer

PACKAGE = Path(__file__).resolve().parents[1]
MODULE = "droughtwatch_assets.definitions"
PID_TAG = "droughtwatch/run_worker_pid"
HOST_TAG = "droughtwatch/run_worker_host"


def code_fingerprint() -> tuple:
    """What changes when a file of the package changes: each file's path, size and modification time."""
    return tuple(sorted((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in PACKAGE.rglob("*.py")))


class PreloadedRunLauncher(DefaultRunLauncher):
    def __init__(self, inst_data=None):
        super().__init__(inst_data=inst_data)
        self._lock = threading.Lock()
        self._server: StepServer | None = None
        self._fingerprint: tuple = ()
        if "dagster_webserver" not in sys.modules:  # the webserver queues runs: it starts a server only to launch one
            threading.Thread(target=self._warm, daemon=True).start()  # preloaded before the first run, not with it

    def _warm(self) -> None:
        self._run_server().start()

    def dispose(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stop()
            self._server = None
        super().dispose()

    def _run_server(self) -> StepServer:
        with self._lock:
            fingerprint = code_fingerprint()
            if self._server is None or fingerprint != self._fingerprint:
                if self._server is not None:
                    self._server.stop()  # its runs go on
                self._server, self._fingerprint = StepServer("run", RUN_PRELOADED), fingerprint
            return self._server

    @staticmethod
    def _preloaded(run: dg.DagsterRun) -> bool:
        """Whether the run server has what the run's code location loads: this module, with this Python, from this
        package (not another checkout in the location's working directory)."""
        origin = run.job_code_origin
        if origin is None:
            return False
        pointer = origin.repository_origin.code_pointer
        if getattr(pointer, "module", None) != MODULE:
            return False
        if os.path.abspath(origin.executable_path) != os.path.abspath(sys.executable):  # a venv of its own
            return False
        working_directory = getattr(pointer, "working_directory", None)
        checkout = Path(working_directory, PACKAGE.name) if working_directory else None
        return checkout is None or not checkout.is_dir() or checkout.resolve() == PACKAGE

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self._preloaded(run):
            super().launch_run(context)
            return
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        compressed = base64.b64encode(zlib.compress(serialize_value(args).encode())).decode()
        pid, connection = self._run_server().launch(compressed)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid), HOST_TAG: socket.gethostname()})
        self._instance.report_engine_event(
            f"Run worker {pid} forked from the preloaded run server", run, cls=self.__class__
        )
        # the server reports the run worker's exit here; holding the connection until then lets it reap the process
        threading.Thread(target=_wait, args=(connection,), daemon=True).start()

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or PID_TAG not in run.tags:
            return super().terminate(run_id)
        if run.tags.get(HOST_TAG) != socket.gethostname():
            self._instance.report_engine_event(
                f"Cannot terminate run worker {run.tags[PID_TAG]}: it runs on {run.tags.get(HOST_TAG)}, not here",
                run,
                cls=self.__class__,
            )
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[PID_TAG]), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True


def _wait(connection) -> None:
    with connection:
        try:
            connection.recv()
        except (EOFError, OSError):  # the server ended first
            pass
