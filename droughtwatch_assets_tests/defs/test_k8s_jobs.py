"""Every step of baseline_job as the Kubernetes Job that dagster-k8s's `k8s_job_executor` submits, without a cluster.

The code location is loaded with the env that deploy/helm/values.yaml gives it, so definitions.py picks the `k8s`
deployment and its executor. The run carries the container context the Dagster chart derives from the same values
(image, env, secrets by name, resources); the instance has the chart's K8sRunLauncher. Each step then goes through
the executor's own step handler, and the Job is caught where the Kubernetes client would send it to the API server,
as the JSON it would send, and read back through the client's V1Job model.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import os
import re
import zlib
from urllib.parse import urlparse

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.executor.init import InitExecutorContext
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import deserialize_value
from kubernetes.utils import parse_quantity

from droughtwatch_assets.wiring import settings
from droughtwatch_assets.wiring.settings import AWS_VARIABLES, K8S_ENV_VARS, Deployment
from droughtwatch_assets_tests.conftest import REPO_ROOT

VALUES = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "values.yaml").read_text())
USER_DEPLOYMENT = VALUES["dagster-user-deployments"]["deployments"][0]
HELM_ENV = {entry["name"]: entry["value"] for entry in USER_DEPLOYMENT["env"]}
HELM_SECRETS = [secret["name"] for secret in USER_DEPLOYMENT["envSecrets"]]
LAUNCHER_SECRETS = [secret["name"] for secret in VALUES["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]]
IMAGE = f"{USER_DEPLOYMENT['image']['repository']}:{USER_DEPLOYMENT['image']['tag']}"
RELEASE = NAMESPACE = "droughtwatch"  # what the install command in values.yaml names them
PG_SECRET = "dagster-postgresql-secret"  # the chart's default

# What the secrets hold in the cluster, and so what the code location's environment holds: fake values that must
# appear in no Job.
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYFORK8STEST",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-0f3c9a-never-in-a-job",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-7d21-never-in-a-job",
    "DAGSTER_PG_PASSWORD": "fake-postgres-password-5be8-never-in-a-job",
}

# The pod sizes, written out: a change to an asset's step_size(...) or to the values file's resources shows here.
POD_SIZES = {
    "processed_tfrecords": {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"memory": "6Gi"}},
    "trained_model": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "12Gi"}},
}
# A step without `dagster-k8s/config` op tags gets the user deployment's resources, which the chart passes on to
# runs and steps (includeConfigInLaunchedRuns, on by default).
DEFAULT_POD_SIZE = {"requests": {"cpu": "500m", "memory": "1Gi"}}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
JOBS_PATH = re.compile(r"^/apis/batch/v1/namespaces/(?P<namespace>[^/]+)/jobs$")


@dataclasses.dataclass(frozen=True)
class Submitted:
    namespace: str
    body: dict  # the JSON the client would send
    op_tags: dict  # the step's op's own tags, read from the definition


class Echo:
    """The API server's answer to a create: the Job back, as JSON."""

    status = 201
    reason = "Created"

    def __init__(self, body: dict):
        self.data = json.dumps(body).encode()

    def getheader(self, name, default=None):
        return "application/json" if name.lower() == "content-type" else default

    def getheaders(self):
        return {"content-type": "application/json"}


def chart_container_context() -> dict:
    """The container context the chart gives the code server (DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT) for the user
    deployment: every run and step launched from it inherits these."""
    return {
        "k8s": {
            "image_pull_policy": USER_DEPLOYMENT["image"]["pullPolicy"],
            "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{USER_DEPLOYMENT['name']}-user-env"],
            "env_secrets": HELM_SECRETS,
            "resources": USER_DEPLOYMENT["resources"],
            "namespace": NAMESPACE,
            "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
            "env": USER_DEPLOYMENT["env"],
        }
    }


def chart_run_launcher(kubeconfig: str) -> dict:
    """The instance's run launcher as the chart writes it into dagster.yaml, except where it finds the cluster."""
    return {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "load_incluster_config": False,
            "kubeconfig_file": kubeconfig,
            "job_namespace": NAMESPACE,
            "service_account_name": f"{RELEASE}-dagster",
            "dagster_home": "/opt/dagster/dagster_home",
            "instance_config_map": f"{RELEASE}-dagster-instance",
            "postgres_password_secret": PG_SECRET,
            "env_config_maps": [f"{RELEASE}-dagster-pipeline-env"],
            "env_secrets": LAUNCHER_SECRETS,
        },
    }


def write_kubeconfig(path) -> str:
    """A kubeconfig for a cluster that does not exist: the client reads it, and nothing is ever sent."""
    cluster = {"name": "none", "cluster": {"server": "https://kubernetes.invalid"}}
    user = {"name": "none", "user": {"token": "none"}}
    context = {"name": "none", "context": {"cluster": "none", "user": "none"}}
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster], "users": [user], "contexts": [context]}
    path.write_text(yaml.safe_dump({**config, "current-context": "none"}))
    return str(path)


def code_location_definitions(monkeypatch) -> dg.Definitions:
    """definitions.py run afresh under this environment, as the code server loads it (the imported module keeps the
    deployment it was first loaded with)."""
    monkeypatch.setattr(settings, "current", lambda: Deployment.from_env(os.environ))
    spec = importlib.util.find_spec("droughtwatch_assets.definitions")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    """Each step's Job, the job definition and the executor's config, from one run of baseline_job."""
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    submitted: list[tuple[str, str, dict]] = []

    def request(self, method, url, **kwargs):
        submitted.append((method, url, kwargs["body"]))
        return Echo(kwargs["body"])

    with pytest.MonkeyPatch.context() as monkeypatch:
        # loading the kubeconfig sets the client's default configuration: put it back afterwards
        monkeypatch.setattr(kubernetes.client.Configuration, "_default", kubernetes.client.Configuration._default)
        for name in {*K8S_ENV_VARS, *AWS_VARIABLES, *SECRET_VALUES}:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**HELM_ENV, **SECRET_VALUES}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(kubernetes.client.ApiClient, "request", request)
        job_def = code_location_definitions(monkeypatch).resolve_job_def("baseline_job")
        recon_job = ReconstructableJob(
            ReconstructableRepository.for_module(
                "droughtwatch_assets.definitions",
                "defs",
                container_image=IMAGE,
                container_context=chart_container_context(),
            ),
            "baseline_job",
        )
        with dg.instance_for_test(overrides={"run_launcher": chart_run_launcher(kubeconfig)}) as instance:
            run_config = job_def.partitioned_config.get_run_config_for_partition_key("baseline")
            tags = {**job_def.tags, "dagster/partition": "baseline"}
            plan = create_execution_plan(job_def, run_config=run_config, tags=tags, instance_ref=instance.get_ref())
            run = create_run_for_test(
                instance,
                job_name="baseline_job",
                run_config=run_config,
                tags=tags,
                job_code_origin=recon_job.get_python_origin(),
            )
            executor_config = ResolvedRunConfig.build(job_def, run_config).execution.execution_engine_config
            executor = job_def.executor_def.executor_creation_fn(
                InitExecutorContext(
                    job=recon_job, executor_def=job_def.executor_def, executor_config=executor_config, instance=instance
                )
            )
            plan_context = PlanOrchestrationContext(
                plan_data=PlanData(job=recon_job, dagster_run=run, instance=instance, execution_plan=plan),
                log_manager=create_context_free_log_manager(instance, run),
                executor=executor,
                output_capture=None,
            )
            for step in plan.steps:
                context = executor._get_step_handler_context(
                    plan_context, [step], ActiveExecution(plan, retry_mode=executor.retries)
                )
                list(executor._step_handler.launch_step(context))

    jobs = {}
    for method, url, body in submitted:
        assert method == "POST", url
        (pod_container,) = body["spec"]["template"]["spec"]["containers"]
        step_key = next(e["value"] for e in pod_container["env"] if e["name"] == "DAGSTER_RUN_STEP_KEY")
        op_tags = job_def.get_node(plan.get_step_by_key(step_key).node_handle).definition.tags
        jobs[step_key] = Submitted(JOBS_PATH.match(urlparse(url).path)["namespace"], body, dict(op_tags))
    return {"jobs": jobs, "job_def": job_def, "steps": [s.key for s in plan.steps], "executor": executor_config}


def container(job: Submitted) -> dict:
    (only,) = job.body["spec"]["template"]["spec"]["containers"]
    return only


def plain_env(job: Submitted) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"] if "value" in e}


def step_args(job: Submitted) -> ExecuteStepArgs:
    compressed = plain_env(job)["DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"]
    return deserialize_value(zlib.decompress(base64.b64decode(compressed)).decode(), ExecuteStepArgs)


def test_every_step_of_baseline_job_is_submitted_as_one_job_in_the_release_namespace(k8s):
    assert k8s["job_def"].executor_def.name == "k8s"
    steps, jobs = k8s["steps"], k8s["jobs"]
    assert {"raw_tfrecords", "processed_tfrecords", "trained_model", "onnx_model", "published_model"} <= set(steps)
    assert sorted(jobs) == sorted(steps), "one Job per step, no more"
    assert len({job.body["metadata"]["name"] for job in jobs.values()}) == len(steps)
    for step_key, job in jobs.items():
        assert job.namespace == NAMESPACE == HELM_ENV["DROUGHTWATCH_K8S_NAMESPACE"], step_key
        args = step_args(job)
        assert (args.step_keys_to_execute, args.job_origin.job_name) == ([step_key], "baseline_job")
        assert job.body["metadata"]["labels"]["dagster/job"] == "baseline_job"


def test_the_executor_is_configured_from_the_code_locations_deployment(k8s):
    config = k8s["executor"]
    assert config["job_namespace"] == NAMESPACE
    assert config["env_secrets"] == HELM_SECRETS == ["droughtwatch-aws"]
    assert config["env_vars"] == [name for name in K8S_ENV_VARS if name in HELM_ENV]
    assert config["max_concurrent"] == 8


def test_each_job_is_a_valid_v1job_and_survives_the_clients_round_trip(k8s):
    api = kubernetes.client.ApiClient()
    for step_key, job in k8s["jobs"].items():
        model = api.deserialize(Echo(job.body), "V1Job")  # validates required fields as it builds the models
        assert isinstance(model, kubernetes.client.V1Job)
        assert api.sanitize_for_serialization(model) == job.body, f"{step_key}: a field the V1Job models do not know"
        assert (model.api_version, model.kind) == ("batch/v1", "Job")
        assert len(model.metadata.name) <= 63 and DNS_LABEL.match(model.metadata.name), model.metadata.name
        assert model.spec.backoff_limit == 0, "Dagster retries steps itself"
        pod = model.spec.template.spec
        assert pod.restart_policy == "Never"
        (only,) = pod.containers
        assert (only.name, only.image, only.image_pull_policy) == ("dagster", IMAGE, "IfNotPresent")
        assert only.args == ["dagster", "api", "execute_step"]


def test_each_pod_is_sized_by_its_steps_op_tags(k8s):
    for step_key, job in k8s["jobs"].items():
        resources = container(job)["resources"]
        assert resources == POD_SIZES.get(step_key, DEFAULT_POD_SIZE), step_key
        if "dagster-k8s/config" in job.op_tags:
            tagged = json.loads(job.op_tags["dagster-k8s/config"])["container_config"]["resources"]  # tags are str
            assert resources == tagged, step_key
        else:
            assert resources == USER_DEPLOYMENT["resources"], step_key
        for kind, limit in resources.get("limits", {}).items():
            assert parse_quantity(resources["requests"][kind]) <= parse_quantity(limit), f"{step_key}: {kind}"
    assert {key for key, job in k8s["jobs"].items() if "dagster-k8s/config" in job.op_tags} == set(POD_SIZES)


def test_each_pod_gets_the_helm_values_env_and_the_code_locations_settings(k8s):
    for step_key, job in k8s["jobs"].items():
        names = [entry["name"] for entry in container(job)["env"]]
        assert len(names) == len(set(names)), f"{step_key}: an env variable set twice"
        env = plain_env(job)
        assert {name: env.get(name) for name in HELM_ENV} == HELM_ENV, step_key
        assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
        # the step's process reads the same deployment as the code location (credentials come from the secrets)
        assert Deployment.from_env(env) == Deployment.from_env(HELM_ENV), step_key


def test_secrets_reach_the_pods_only_by_reference(k8s):
    for step_key, job in k8s["jobs"].items():
        # the step's arguments travel compressed: read them too
        spec = json.dumps(job.body) + repr(step_args(job))
        leaked = [name for name, value in SECRET_VALUES.items() if value in spec]
        assert not leaked, f"{step_key}: the value of {leaked} is in the Job"
        assert not set(SECRET_VALUES) & set(plain_env(job)), f"{step_key}: a secret's key set as a plain value"
        env_from = container(job)["envFrom"]
        assert all(set(ref) <= {"secretRef", "configMapRef"} for ref in env_from), step_key
        secret_refs = {ref["secretRef"]["name"] for ref in env_from if "secretRef" in ref}
        assert secret_refs == {*HELM_SECRETS, *LAUNCHER_SECRETS}, step_key
        by_name = {entry["name"]: entry for entry in container(job)["env"]}
        assert by_name["DAGSTER_PG_PASSWORD"] == {
            "name": "DAGSTER_PG_PASSWORD",
            "valueFrom": {"secretKeyRef": {"key": "postgresql-password", "name": PG_SECRET}},
        }
