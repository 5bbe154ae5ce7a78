"""What the data checks judge a processed dataset by, on manifests written out by hand."""

import pytest

from droughtwatch_assets.data.datasets import FeatureSummary, Manifest, Shard, SkippedRecord, Split
from droughtwatch_assets.data.validation import class_balance, processed_problems


def skipped(*records: int) -> list[SkippedRecord]:
    return [SkippedRecord(file="part-0", record=r, problem="truncated") for r in records]


def manifest(kind, train: list[Shard], val: list[Shard], stats=None) -> Manifest:
    def split(shards):
        counts = shards[0].class_counts if shards else [0, 0, 0, 0]  # one shard a split at most here
        return Split(records=sum(s.records for s in shards), class_counts=counts, shards=shards)

    return Manifest(
        kind=kind, data_version="d", splits={"train": split(train), "val": split(val)}, feature_stats=stats or {}
    )


# raw: train/part-0 read 10 records and skipped record 3; val/part-1 read 5
RAW = manifest(
    "raw",
    [Shard(name="part-0", records=10, class_counts=[4, 3, 2, 1], skipped=skipped(3))],
    [Shard(name="part-1", records=5, class_counts=[2, 1, 1, 1])],
)
# processed: of train/part-0's 10, 2 vetoed and record 8 skipped by processing (3 was raw's): 10 - 2 - 1 = 7
GOOD_TRAIN = Shard(name="part-0", records=7, class_counts=[3, 2, 1, 1], vetoed=2, skipped=skipped(3, 8))
GOOD_VAL = Shard(name="part-1", records=5, class_counts=[2, 1, 1, 1])
IN_RANGE = {
    "B2": FeatureSummary(min=0.0, mean=0.3, max=1.0),
    "NDVI": FeatureSummary(min=-1.0, mean=0.1, max=1.0),
}


def test_a_processed_dataset_that_adds_up_and_stays_in_range_has_no_problems():
    assert processed_problems(manifest("processed", [GOOD_TRAIN], [GOOD_VAL], IN_RANGE), RAW) == []


def test_values_out_of_range_or_not_finite_are_named_by_feature_and_an_empty_feature_is_not_judged():
    stats = {
        "B2": FeatureSummary(min=0.0, mean=0.5, max=1.5),
        "NDVI": FeatureSummary(min=float("nan"), mean=None, max=0.5),
        "B3": FeatureSummary(min=None, mean=None, max=None),  # no pixels: nothing to judge
    }
    assert processed_problems(manifest("processed", [GOOD_TRAIN], [GOOD_VAL], stats), RAW) == [
        "B2: values in [0, 1.5], outside [0.0, 1.0]",
        "NDVI: non-finite values (min nan, max 0.5)",
    ]


def test_a_shard_whose_records_are_not_raw_less_vetoed_less_skipped_is_named_with_the_sum():
    wrong = GOOD_TRAIN.model_copy(update={"records": 8, "class_counts": [3, 2, 2, 1]})
    assert processed_problems(manifest("processed", [wrong], [GOOD_VAL], IN_RANGE), RAW) == [
        "train/part-0: 8 records, expected raw 10 - vetoed 2 - skipped 1 = 7"
    ]


@pytest.mark.parametrize("counts", [[2, 1, 1, 0], [5]])
def test_class_counts_that_miss_records_or_labels_are_named(counts):
    wrong = GOOD_VAL.model_copy(update={"class_counts": counts})
    assert processed_problems(manifest("processed", [GOOD_TRAIN], [wrong], IN_RANGE), RAW) == [
        f"val/part-1: class counts {counts} do not cover 5 records with labels 0..3"
    ]


def test_the_class_balance_is_each_splits_shares_and_the_largest_gap_between_them():
    train = Shard(name="part-0", records=10, class_counts=[6, 2, 2, 0])
    val = Shard(name="part-1", records=5, class_counts=[1, 1, 0, 3])
    balance = class_balance(manifest("processed", [train], [val]))
    assert balance.train_shares == [0.6, 0.2, 0.2, 0.0] and balance.val_shares == [0.2, 0.2, 0.0, 0.6]
    assert balance.largest_gap == pytest.approx(0.6)  # class 3: val's share over train's (class 0's gap: 0.4)


def test_an_empty_split_has_all_shares_zero():
    train = Shard(name="part-0", records=4, class_counts=[1, 1, 1, 1])
    balance = class_balance(manifest("processed", [train], []))
    assert balance.val_shares == [0.0, 0.0, 0.0, 0.0] and balance.largest_gap == 0.25
