import dagster as dg

from droughtwatch_assets.datasets import ShardedDataset
from droughtwatch_assets.defs.metadata import dataset_metadata
from droughtwatch_assets.defs.partitions import feature_set_partitions
from droughtwatch_assets.defs.resources import ArtifactStore
from droughtwatch_assets.features import feature_set
from droughtwatch_assets.processing import process_dataset


class ProcessingConfig(dg.Config):
    workers: int = 0  # parallel shard processes; 0 = one per core


@dg.asset(
    partitions_def=feature_set_partitions,
    group_name="data",
    kinds={"tfrecord", "numpy"},
    code_version="1",
    description="Processed TFRecords of one feature set: bands / 255, blank images vetoed, NDVI/NDMI/EVI on request. "
                "Each record holds a float32 65x65xC `image` (channels in the feature set's order) and its `label`.",
)
def processed_tfrecords(context: dg.AssetExecutionContext, config: ProcessingConfig, store: ArtifactStore,
                        raw_tfrecords: ShardedDataset) -> dg.Output[ShardedDataset]:
    name = context.partition_key
    dataset = process_dataset(raw_tfrecords, store.new_staging_dir(), name, feature_set(name),
                              workers=config.workers or None, log=context.log.info)
    return dg.Output(dataset, metadata=dataset_metadata(dataset))
