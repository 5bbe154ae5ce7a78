from typing import Literal

import dagster as dg
from pydantic import Field

from droughtwatch_assets.core.features import feature_set
from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET, step_size
from droughtwatch_assets.dagster_support.failures import bad_record_failure
from droughtwatch_assets.dagster_support.metadata import dataset_metadata
from droughtwatch_assets.dagster_support.partitions import FEATURE_SETS
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.data.processing import ProcessingOptions, process_dataset
from droughtwatch_assets.records.tfrecord import RecordError
from droughtwatch_assets.wiring.resources import ArtifactIOManager


class ProcessingConfig(dg.Config):
    workers: int = 0  # parallel shard processes; 0 = one per core
    on_bad_record: Literal["as_raw", "fail", "skip"] = Field(
        default="as_raw",
        description="as_raw: the policy raw_tfrecords read the records with (the default); "
        "fail or skip to override it for processing",
    )


@dg.asset(
    **PER_FEATURE_SET,
    op_tags=step_size(cpu=4, memory_gib=4, memory_limit_gib=6),  # one worker process per core
    group_name="data",
    kinds={"tfrecord", "numpy"},
    description="Processed TFRecords of one feature set: bands / 255, blank images vetoed, NDVI/NDMI/EVI on request. "
    "Each record holds a float32 65x65xC `image` (channels in the feature set's order) and its `label`.",
)
def processed_tfrecords(
    context: dg.AssetExecutionContext,
    config: ProcessingConfig,
    io_manager: dg.ResourceParam[ArtifactIOManager],
    raw_tfrecords: ShardedDataset,
) -> dg.Output[ShardedDataset]:
    name = context.partition_key
    policy = raw_tfrecords.on_bad_record if config.on_bad_record == "as_raw" else config.on_bad_record
    previous_root = io_manager.previous_output(context)  # its unchanged shards are reused
    previous = ShardedDataset.open(previous_root) if previous_root else None
    try:
        dataset = process_dataset(
            raw_tfrecords,
            io_manager.staging_dir(),
            name,
            feature_set(name, FEATURE_SETS),
            ProcessingOptions(workers=config.workers or None, on_bad_record=policy),
            previous=previous,
            log=context.log.info,
        )
    except RecordError as exc:
        raise bad_record_failure(exc, policy) from exc
    metadata = {
        **dataset_metadata(dataset),
        "shards_processed": dataset.manifest.shards_processed,
        "shards_reused": dataset.manifest.shards_reused,
    }
    return dg.Output(dataset, metadata=metadata, data_version=dg.DataVersion(dataset.manifest.data_version))
