"""The Dask deployment's executor: every step a task on an existing Dask scheduler, run by a worker that has the
resources the step's op tags ask for (`dagster-dask/resource_requirements`, set by `step_size`).

Dagster's step-delegating executor orchestrates, as it does for Kubernetes: it claims pool slots (the champion's
pool), retries a step under its retry policy, and follows each step through the events it writes to the instance.
A task runs its step as a Kubernetes step pod does, `dagster api execute_step` in a process of its own, with the
worker's environment: its DAGSTER_HOME (the same instance database), settings, credentials and local disk. What a
sized step's task asks for follows the workers connected at its launch (`place`): workers started without
`--resources` run it; workers that declare resources too small for it fail the run at once, naming the command.

Not dagster-dask's `dask_executor`, whose tag convention this follows: it names each task `<job>.<step>`, and the
scheduler answers a task whose name it already holds with that task's result, so two runs of one job at once (a
backfill) are handed each other's steps; it ignores pools and retry policies; it runs steps in the worker's own
threads and process, where Dagster is not thread-safe and the worker's daemon process may not start the process
pool that processing uses; and its steps open the run worker's instance reference, whose compute-log folder is on
the run worker's disk.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dagster as dg
import distributed
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)
from dagster._grpc.types import ExecuteStepArgs
from dagster_dask.executor import get_dask_resource_requirements

logger = logging.getLogger("distributed.worker.droughtwatch")  # the worker's log, next to Dask's own lines
UPSTREAM_RETURN_SECONDS = 10
# The line a worker logs as it starts a task (run_step_on_worker), for readers of the workers' logs: which worker ran
# which step of which run.
TASK_STARTED = re.compile(
    r"task (?P<job>\w+)\.(?P<step>\w+)-(?P<run>[0-9a-f-]{36})-(?P<attempt>\d+): starting its step "
    r"on worker (?P<worker>\S+) "
)
STEP_COMMAND = [sys.executable, "-m", "dagster", "api", "execute_step"]
# What a worker offers, as docs/beyond-one-machine.md starts one: the command a run that no worker can run names.
DOCUMENTED_RESOURCES = "CPU=4,MEMORY=16e9"
# The events that record how an attempt of a step ended, whoever wrote them (the step, or the health check).
STEP_OUTCOMES = {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
}


def run_step_on_worker(task: str, compressed_args: str) -> str:
    """The Dask task: one step as `dagster api execute_step` in a process of its own, with the worker's environment
    and working directory. The step's own log goes to the worker's log; its events go to the instance. Returns the
    worker's address."""
    worker = distributed.get_worker()
    logger.info("task %s: starting its step on worker %s (%s)", task, worker.name, worker.address)
    cancelled = distributed.Event(cancel_event(task))
    process = subprocess.Popen([*STEP_COMMAND, "--compressed-input-json", compressed_args])
    while (code := process.poll()) is None:
        try:
            if cancelled.wait(timeout=1):
                process.terminate()  # dagster api execute_step ends the step on SIGTERM
                code = process.wait()
                break
        except (OSError, TimeoutError):  # the scheduler is unreachable for a moment: the step goes on
            continue
    logger.info("task %s: its step process %s exited with %s", task, process.pid, code)
    if code != 0:
        raise RuntimeError(f"`dagster api execute_step` exited with {code} on Dask worker {worker.name}")
    return worker.address


def cancel_event(task: str) -> str:
    return f"droughtwatch-cancel-{task}"


def fits(requirements: Mapping[str, float], offered: Mapping[str, float]) -> bool:
    """Whether a worker that offers these resources can ever run a task with these requirements."""
    return all(offered.get(name, 0) >= amount for name, amount in requirements.items())


@dataclass(frozen=True)
class Placement:
    """What a step's task asks the scheduler for: resources, and the workers it prefers (Dask's loose restrictions)."""

    resources: dict[str, float]
    preferred: list[str]
    note: str = ""  # why the task does not ask for the step's resources


def worker_offers(workers: Mapping[str, Mapping]) -> str:
    """What the connected workers offer, one worker after another, for a message."""
    offers = [f"{info.get('name', address)}: {info.get('resources') or 'none'}" for address, info in workers.items()]
    return "; ".join(sorted(offers)) or "no worker is connected"


def unfit_message(
    step_key: str, requirements: Mapping[str, float], workers: Mapping[str, Mapping], address: str
) -> str:
    """One line: the step, what it needs, what each worker offers, and the command to start workers with."""
    return (
        f'step "{step_key}" needs Dask worker resources {dict(requirements)}, and no worker connected to {address} '
        f"offers that much (workers offer {worker_offers(workers)}): start the workers as "
        f'`dask worker {address} --resources "{DOCUMENTED_RESOURCES}"`, with the machine\'s real cores and memory '
        "(docs/beyond-one-machine.md)"
    )


def place(
    step_key: str, requirements: Mapping[str, float], preferred: list[str], workers: Mapping[str, Mapping], address: str
) -> Placement:
    """Where a step's task may run, given the workers connected now (the scheduler's `workers`, address -> info).

    - No worker declares any resources (plain `dask worker <address>`): the task asks for none, so they run it.
    - No worker is connected: the task asks for the step's resources and waits for a worker that has them.
    - Some workers declare resources, and none could ever run the step: dg.Failure, which fails the run at once.
    - The step prefers the workers of its upstream steps only where every connected worker could run it: a task
      whose preferred workers cannot run it is handed by Dask to any worker, resources or not, and a worker that
      does not declare a resource it asks for fails the task with a bare KeyError (`'CPU'`).
    """
    if not requirements:
        return Placement({}, preferred)
    if not workers:
        return Placement(dict(requirements), [])
    offered = {worker: info.get("resources") or {} for worker, info in workers.items()}
    if not any(offered.values()):
        return Placement({}, preferred, f"without asking for {dict(requirements)}: no worker declares resources")
    if not any(fits(requirements, resources) for resources in offered.values()):
        raise dg.Failure(unfit_message(step_key, requirements, workers, address), allow_retries=False)
    if not all(fits(requirements, resources) for resources in offered.values()):
        preferred = []
    return Placement(dict(requirements), preferred)


def task_error(exception: BaseException, requested: Mapping[str, float]) -> str:
    """A failed task's exception, named, and explained where Dask failed it for a resource its worker lacks."""
    text = f"{type(exception).__name__}: {exception}"
    if isinstance(exception, KeyError) and exception.args and exception.args[0] in requested:
        text += f" (Dask gave the task to a worker that does not declare the resource {exception.args[0]!r})"
    return text


class DaskStepHandler(StepHandler):
    """Submits each step to the scheduler as a task named after the run, the step and the attempt."""

    def __init__(self, address: str):
        self._address = address
        self._client: distributed.Client | None = None
        self._futures: dict[str, distributed.Future] = {}  # a task is cancelled once no future holds it
        self._requested: dict[str, dict[str, float]] = {}  # the resources each step's task asked for

    @property
    def name(self) -> str:
        return "DaskStepHandler"

    def _connect(self) -> distributed.Client:
        if self._client is None:
            try:
                self._client = distributed.Client(self._address, set_as_default=False, timeout="30s")
            except OSError as exc:
                raise dg.Failure(
                    f"cannot reach the Dask scheduler at {self._address} (DROUGHTWATCH_DASK_SCHEDULER): {exc}"
                ) from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._futures.clear()
        self._requested.clear()

    @staticmethod
    def _step_key(context: StepHandlerContext) -> str:
        [step_key] = context.execute_step_args.step_keys_to_execute or [None]
        assert step_key is not None, "one step at a time"
        return step_key

    @staticmethod
    def _task(context: StepHandlerContext, step_key: str) -> str:
        # Task names are the scheduler's keys across all clients: the run id keeps concurrent runs' steps apart,
        # the attempt a retry apart from the attempt before.
        attempt = DaskStepHandler._attempt(context, step_key)
        return f"{context.dagster_run.job_name}.{step_key}-{context.execute_step_args.run_id}-{attempt}"

    @staticmethod
    def _attempt(context: StepHandlerContext, step_key: str) -> int:
        """How many attempts of the step came before this one."""
        known_state = context.execute_step_args.known_state
        return known_state.get_retry_state().get_attempt_count(step_key) if known_state else 0

    @staticmethod
    def _outcome_recorded(context: StepHandlerContext, step_key: str) -> bool:
        """Whether this attempt's end (success, failure, retry) is in the run's events."""
        ended = context.instance.all_logs(context.execute_step_args.run_id, of_type=STEP_OUTCOMES)
        return sum(entry.step_key == step_key for entry in ended) > DaskStepHandler._attempt(context, step_key)

    def _workers(self) -> dict[str, dict]:
        """The connected workers, address -> what the scheduler knows of each (name, resources)."""
        return self._connect().scheduler_info(n_workers=-1)["workers"]

    def _requirements(self, context: StepHandlerContext, step_key: str) -> dict[str, float]:
        return get_dask_resource_requirements(context.step_tags[step_key])

    def _preferred_workers(self, context: StepHandlerContext, step_key: str) -> list[str]:
        """The workers that ran this step's upstream steps in this run. Storage keeps a local copy of what a step
        wrote or read, so there the step reads its inputs without downloading them."""
        upstream = context.get_step_context(step_key).step.get_execution_dependency_keys()
        futures = [self._futures[key] for key in upstream if key in self._futures]
        # The upstream steps have ended (the executor read their events), but their tasks return only once the step
        # processes have exited, seconds later (a process that imported TensorFlow takes a while to exit): a task
        # still running is found on the worker the scheduler says runs it. Only a task that is neither (in
        # between, or its worker lost) is waited for, a bounded time.
        deadline = time.monotonic() + UPSTREAM_RETURN_SECONDS
        while True:
            running = {}
            if not all(future.done() for future in futures):
                running = {key: worker for worker, keys in self._connect().processing().items() for key in keys}
            ran = {future.key: future.result() for future in futures if future.status == "finished"}
            ran |= {future.key: running[future.key] for future in futures if future.key in running}
            if all(future.key in ran or future.done() for future in futures) or time.monotonic() >= deadline:
                return sorted(set(ran.values()))
            time.sleep(0.25)

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key = self._step_key(step_handler_context)
        task = self._task(step_handler_context, step_key)
        requirements = self._requirements(step_handler_context, step_key)
        preferred = self._preferred_workers(step_handler_context, step_key)
        # raises, failing the run at once, where no worker could ever run the step
        placement = place(step_key, requirements, preferred, self._workers() if requirements else {}, self._address)
        # The step opens the instance of the worker's DAGSTER_HOME, not the run worker's reference to its own.
        args = step_handler_context.execute_step_args
        args = ExecuteStepArgs(
            job_origin=args.job_origin,
            run_id=args.run_id,
            step_keys_to_execute=args.step_keys_to_execute,
            instance_ref=None,
            retry_mode=args.retry_mode,
            known_state=args.known_state,
            should_verify_step=args.should_verify_step,
            print_serialized_events=False,
        )
        [compressed] = [entry["value"] for entry in args.get_command_env()]
        yield DagsterEvent.step_worker_starting(
            step_handler_context.get_step_context(step_key),
            message=f'Submitting step "{step_key}" to the Dask scheduler at {self._address} as task {task}'
            + (f", on a worker with {placement.resources}" if placement.resources else "")
            + (f", {placement.note}" if placement.note else "")
            + (
                f", preferably on {', '.join(placement.preferred)} (where its upstream steps ran)"
                if placement.preferred
                else ""
            ),
            metadata={"Dask task": task, "Dask resources": dg.MetadataValue.json(placement.resources)},
        )
        self._requested[step_key] = placement.resources
        self._futures[step_key] = self._connect().submit(
            run_step_on_worker,
            task,
            compressed,
            key=task,
            resources=placement.resources or None,
            workers=placement.preferred or None,
            allow_other_workers=bool(placement.preferred),  # a preference: any worker with the resources may run it
            pure=False,
        )

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        step_key = self._step_key(step_handler_context)
        future = self._futures.get(step_key)
        if future is None:
            return CheckStepHealthResult.unhealthy(f"no Dask task of step {step_key} was submitted by this run worker")
        requested = self._requested.get(step_key, {})
        if future.status == "error":
            # The step process exited non-zero. Where its own events recorded how it ended (a failure, a retry),
            # the executor goes by those; only a step process that died before that is unhealthy.
            if self._outcome_recorded(step_handler_context, step_key):
                return CheckStepHealthResult.healthy()
            return CheckStepHealthResult.unhealthy(
                f"Dask task {future.key} failed: {task_error(future.exception(), requested)}"
            )
        if future.status in ("cancelled", "lost"):
            return CheckStepHealthResult.unhealthy(f"Dask task {future.key} was {future.status}")
        if future.status == "pending" and requested:
            workers = self._workers()
            # no worker at all: the task waits for one, as it did at launch
            if workers and not any(fits(requested, info.get("resources") or {}) for info in workers.values()):
                return CheckStepHealthResult.unhealthy(unfit_message(step_key, requested, workers, self._address))
        return CheckStepHealthResult.healthy()

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key = self._step_key(step_handler_context)
        future = self._futures.pop(step_key, None)
        if future is None:
            return
        yield DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            message=f"Stopping Dask task {future.key} of step {step_key}",
            event_specific_data=EngineEventData(),
        )
        distributed.Event(cancel_event(future.key), client=self._connect()).set()
        future.cancel()


class DaskExecutor(StepDelegatingExecutor):
    """The step-delegating executor with the Dask step handler; its client closes when the run's steps end."""

    def __init__(self, step_handler: DaskStepHandler, **kwargs):
        super().__init__(step_handler, **kwargs)
        self._dask = step_handler

    def execute(self, plan_context, execution_plan):
        try:
            yield from super().execute(plan_context, execution_plan)
        finally:
            self._dask.close()


@dg.executor(
    name="dask",
    config_schema={"address": dg.Field(dg.StringSource, description="the Dask scheduler, tcp://host:8786")},
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_executor(init_context: dg.InitExecutorContext) -> DaskExecutor:
    """Every step a task on the Dask scheduler at `address`."""
    # The run worker reads its steps' events four times a second (Dagster's default is once): a chain of short
    # steps otherwise waits about a second between each step and the next.
    return DaskExecutor(
        DaskStepHandler(init_context.executor_config["address"]), retries=RetryMode.ENABLED, sleep_seconds=0.25
    )
