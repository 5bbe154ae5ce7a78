"""Imported by the step fork servers (defs/fork_server.py, PRELOADED): botocore's S3 models are parsed here, before
the steps fork, so that each step makes its S3 clients in milliseconds instead of parsing them again."""

from droughtwatch_assets.storage.s3_client import preload_models

preload_models()
