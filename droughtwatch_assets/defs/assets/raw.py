import os
import tempfile

import dagster as dg
from pydantic import Field

from droughtwatch_assets.datasets import ShardedDataset, build_raw_dataset
from droughtwatch_assets.defs.metadata import dataset_metadata
from droughtwatch_assets.defs.resources import ArtifactStore, STORAGE_RETRY
from droughtwatch_assets.download import ARCHIVE_URL
from droughtwatch_assets.raw_sources import RawSource, gather_shards
from droughtwatch_assets.records import RecordError
from droughtwatch_assets.sample import SampleSpec


class RawDataConfig(dg.Config):
    source: str = Field(default=os.environ.get("DROUGHTWATCH_RAW_SOURCE", "sample"),
                        description="sample (generated, the default), folder (local shards) or archive (download)")
    folder: str = Field(default=os.environ.get("DROUGHTWATCH_RAW_FOLDER", ""),
                        description="for source=folder: a folder holding train/part-* and val/part-*")
    archive_url: str = Field(default=os.environ.get("DROUGHTWATCH_ARCHIVE_URL", ARCHIVE_URL))
    archive_sha256: str = Field(default="", description="if set, the downloaded archive must match it")
    sample_train_records: int = SampleSpec.train_records
    sample_val_records: int = SampleSpec.val_records
    sample_records_per_shard: int = SampleSpec.records_per_shard
    sample_seed: int = SampleSpec.seed
    on_bad_record: str = Field(default="fail", description="fail, or skip: bad records are dropped, counted and "
                                                           "listed in the metadata")

    def to_source(self) -> RawSource:
        spec = SampleSpec(self.sample_train_records, self.sample_val_records, self.sample_records_per_shard,
                          self.sample_seed)
        return RawSource(self.source, self.folder, self.archive_url, self.archive_sha256, spec)


@dg.asset(
    group_name="data",
    kinds={"tfrecord"},
    code_version="1",
    retry_policy=STORAGE_RETRY,
    description="Raw DroughtWatch TFRecord shards (train and val): 65x65 images, 11 uint8 Landsat-8 bands, label 0-3.",
)
def raw_tfrecords(context: dg.AssetExecutionContext, config: RawDataConfig, store: ArtifactStore) -> dg.Output[ShardedDataset]:
    staging = store.new_staging_dir()
    with tempfile.TemporaryDirectory(dir=staging.parent) as scratch:
        shards, source = gather_shards(config.to_source(), scratch, os.path.join(store.base_dir, "downloads"),
                                       context.log.info)
        try:
            dataset = build_raw_dataset(shards, staging, source, log=context.log.info,
                                        on_bad_record=config.on_bad_record)
        except RecordError as exc:  # bad data: retrying cannot help
            raise dg.Failure(f"{exc} (on_bad_record: fail; set it to skip to drop such records)",
                             allow_retries=False) from exc
    return dg.Output(dataset, metadata=dataset_metadata(dataset),
                     data_version=dg.DataVersion(dataset.manifest["data_version"]))
