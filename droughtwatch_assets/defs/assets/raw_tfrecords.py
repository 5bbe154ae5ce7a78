from typing import Literal

import dagster as dg
from pydantic import Field

from droughtwatch_assets.dagster_support.asset_defaults import CHAIN_STEP
from droughtwatch_assets.dagster_support.failures import bad_record_failure, refuse_configuration_mismatch
from droughtwatch_assets.dagster_support.metadata import dataset_metadata
from droughtwatch_assets.data.datasets import ShardedDataset, build_raw_dataset, reuse_raw_dataset
from droughtwatch_assets.data.sample import SampleSpec
from droughtwatch_assets.records.tfrecord import BadRecordPolicy, RecordError
from droughtwatch_assets.sources.raw import (
    RawSource,
    gather_shards,
    list_shards,
    locate_error,
    reuse_key,
    source_fingerprint,
)
from droughtwatch_assets.wiring.resources import ArtifactIOManager, RawSourceResource, ScratchSpace


class RawDataConfig(dg.Config):
    source: Literal["deployment", "sample", "folder", "archive", "s3"] = Field(
        default="deployment",
        description="sample (generated), folder (local shards), archive (download) or s3 (shards under an S3 "
        "prefix); deployment: the deployment's raw source (DROUGHTWATCH_RAW_SOURCE, else sample)",
    )
    folder: str = Field(
        default="",
        description="for source=folder: a folder holding train/part-* and val/part-* (empty: DROUGHTWATCH_RAW_FOLDER)",
    )
    uri: str = Field(
        default="",
        description="for source=s3: s3://bucket/prefix holding train/part-* and val/part-* (empty: "
        "DROUGHTWATCH_RAW_URI); read with storage's AWS settings and credentials",
    )
    archive_url: str = Field(default="", description="for source=archive (empty: the deployment's archive URL)")
    archive_sha256: str = Field(default="", description="if set, the downloaded archive must match it")
    sample_train_records: int = SampleSpec.train_records
    sample_val_records: int = SampleSpec.val_records
    sample_records_per_shard: int = SampleSpec.records_per_shard
    sample_seed: int = SampleSpec.seed
    rebuild: bool = Field(
        default=False,
        description="read the source again even when it is unchanged since the current version was built from it "
        "(same fingerprint, code version and on_bad_record), which is otherwise kept as it is",
    )
    on_bad_record: BadRecordPolicy = Field(
        default="fail",
        description="fail, or skip: bad records are dropped, counted and listed in the metadata. "
        "Every later read of these raw records in the run (preview, processing, "
        "predictions) follows this policy",
    )

    def to_source(self, defaults: RawSourceResource) -> RawSource:
        spec = SampleSpec(
            self.sample_train_records, self.sample_val_records, self.sample_records_per_shard, self.sample_seed
        )
        source = defaults.source if self.source == "deployment" else self.source
        return RawSource(
            source,
            self.folder or defaults.folder,
            self.archive_url or defaults.archive_url,
            self.archive_sha256,
            spec,
            uri=self.uri or defaults.uri,
        )


@dg.asset(
    **CHAIN_STEP,
    group_name="data",
    kinds={"tfrecord"},
    description="Raw DroughtWatch TFRecord shards (train and val): 65x65 images, 11 uint8 Landsat-8 bands, label 0-3. "
    "An unchanged source keeps the current version's shards.",
)
def raw_tfrecords(
    context: dg.AssetExecutionContext,
    config: RawDataConfig,
    io_manager: dg.ResourceParam[ArtifactIOManager],
    raw_source: RawSourceResource,
    scratch: ScratchSpace,
) -> dg.Output[ShardedDataset]:
    refuse_configuration_mismatch(context)
    staging = io_manager.staging_dir()
    source = config.to_source(raw_source)
    s3_client = raw_source.client() if source.kind == "s3" else None
    listing = list_shards(source, s3_client) if source.kind == "s3" else None  # one listing, used twice below
    # taken before reading, so a shard that changes meanwhile differs from it on the next look: what the daily
    # schedule compares with the source to tell whether anything changed since
    fingerprint = source_fingerprint(source, s3_client, listing)
    built_from = reuse_key(source, fingerprint, context.assets_def.code_versions_by_key[context.asset_key] or "")
    previous = None if config.rebuild else io_manager.previous_output(context)
    kept = reuse_raw_dataset(previous, staging, built_from, config.on_bad_record)
    if kept is not None:
        context.log.info(f"the source is unchanged since {previous.name}: its shards are kept, not read again")
        return raw_output(kept, fingerprint, source_unchanged=True)
    with scratch.temporary() as folder:
        shards, description = gather_shards(
            source,
            folder,
            scratch.directory("downloads"),
            context.log.info,
            s3_client=s3_client,
            listing=listing,
        )
        try:
            dataset = build_raw_dataset(
                shards, staging, description, context.log.info, config.on_bad_record, built_from=built_from
            )
            return raw_output(dataset, fingerprint, source_unchanged=False)
        except RecordError as exc:
            located = locate_error(exc, staging, description)  # S3: names the s3:// key, not the local copy
            raise bad_record_failure(located, config.on_bad_record) from exc


def raw_output(dataset: ShardedDataset, fingerprint: str, source_unchanged: bool) -> dg.Output[ShardedDataset]:
    metadata = dataset_metadata(dataset)  # its preview reads bands, which build_raw_dataset does not check
    metadata.update(source_fingerprint=fingerprint, source_unchanged=source_unchanged)
    return dg.Output(dataset, metadata=metadata, data_version=dg.DataVersion(dataset.manifest.data_version))
