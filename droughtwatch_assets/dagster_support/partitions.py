"""The partitions: one per feature set of the deployment's feature-set file."""

import dagster as dg

from droughtwatch_assets.core.features import load_feature_sets
from droughtwatch_assets.wiring.settings import current

FEATURE_SETS = load_feature_sets(current().feature_sets_file)
feature_set_partitions = dg.StaticPartitionsDefinition(list(FEATURE_SETS))
