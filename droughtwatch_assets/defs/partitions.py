import dagster as dg

from droughtwatch_assets.core.features import load_feature_sets

feature_set_partitions = dg.StaticPartitionsDefinition(list(load_feature_sets()))
