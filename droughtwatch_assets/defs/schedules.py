import dagster as dg

from droughtwatch_assets.configurations import CONFIGURATIONS
from droughtwatch_assets.defs.jobs import baseline_job


@dg.schedule(
    job=baseline_job,
    cron_schedule="0 0 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain the baseline every day at midnight (stopped by default, like the original DAG).",
)
def baseline_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(partition_key=CONFIGURATIONS["baseline"].feature_set)
