"""A model's config as it travels with the model: config.yaml beside model.onnx, and the same YAML inside
the ONNX file's metadata_props, so a reader holding only the model file still knows its features."""

from __future__ import annotations

import os

import yaml

CONFIG_METADATA_KEY = "droughtwatch_config"


def config_to_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def embedded_config(onnx_path: str | os.PathLike) -> dict | None:
    """The config stored in an ONNX file's metadata_props, or None for a model exported elsewhere."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    text = session.get_modelmeta().custom_metadata_map.get(CONFIG_METADATA_KEY)
    return yaml.safe_load(text) if text else None
