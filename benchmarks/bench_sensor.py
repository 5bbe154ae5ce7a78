"""The `new_raw_shards` sensor's tick time over a source of 100 and 1,000 shards, folder and S3.

A tick lists the source (names, sizes, mtimes or ETags; no shard is read) and compares it with the cursor.
The S3 source is moto's server on loopback, so the figure is the sensor's own cost plus a local round trip
per 1,000 keys listed; a real bucket adds its network latency per listing page (one page per 1,000 keys
and split).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import SCRATCH, clean, header

TICKS = 7  # no-change ticks per size, the median reported


@contextlib.contextmanager
def moto_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def shard_names(count: int) -> list[str]:
    """count shards, 90 % in train/ and 10 % in val/, as the benchmark splits them."""
    train = count * 9 // 10
    return [f"train/part-r-{i:05d}" for i in range(train)] + [f"val/part-r-{i:05d}" for i in range(count - train)]


def measure(label: str, defs, add_shard) -> None:
    """Ticks as the daemon does, on a real instance where raw_tfrecords is materialised: the first tick, the
    median no-change tick, and the tick that picks up one new shard (seen on the tick before)."""
    import dagster as dg

    from droughtwatch_assets.defs.sensors import new_raw_shards

    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_tfrecords"))
    resources = {"raw_source": defs.resources["raw_source"]}
    cursor = None

    def tick():
        nonlocal cursor
        started = time.perf_counter()
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources) as c:
            result = new_raw_shards.evaluate_tick(c)
        cursor = result.cursor
        return (time.perf_counter() - started) * 1000, result

    first, _ = tick()
    steady = statistics.median(tick()[0] for _ in range(TICKS))
    add_shard()
    tick()
    picked, result = tick()
    assert len(result.run_requests) == 1, result
    print(
        f"{label}: first tick {first:.0f} ms, no-change tick {steady:.0f} ms (median of {TICKS}), "
        f"tick with one new shard {picked:.0f} ms"
    )


def definitions(data_dir: Path, **raw):
    import dagster as dg

    from droughtwatch_assets.definitions import assets
    from droughtwatch_assets.defs.jobs import configuration_jobs
    from droughtwatch_assets.wiring.deployment import AWS_VARIABLES, local_resources

    aws_variables = tuple(name for name in AWS_VARIABLES if os.environ.get(name))
    return dg.Definitions(
        assets=assets,
        jobs=list(configuration_jobs.values()),
        resources=local_resources(data_dir, aws_variables=aws_variables, **raw),
    )


def main() -> None:
    header("new_raw_shards: tick time over 100 and 1,000 shards, folder and S3 (moto on loopback)")
    import boto3

    root = SCRATCH / "sensor"
    clean(root)
    for count in (100, 1000):
        folder = root / f"folder-{count}"
        for name in shard_names(count):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"shard")  # the sensor never reads a shard: its size does not matter
        measure(
            f"folder, {count:>5,} shards",
            definitions(root / "data", raw_source="folder", raw_folder=str(folder)),
            lambda folder=folder: (folder / "train/part-r-99999").write_bytes(b"new"),
        )

    with moto_server() as endpoint:
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1"
        )
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for count in (100, 1000):
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=bucket)
            for name in shard_names(count):
                client.put_object(Bucket=bucket, Key=f"raw/{name}", Body=b"shard")
            measure(
                f"S3,     {count:>5,} shards",
                definitions(root / "data", raw_source="s3", raw_uri=f"s3://{bucket}/raw"),
                lambda bucket=bucket: client.put_object(Bucket=bucket, Key="raw/train/part-r-99999", Body=b"new"),
            )
    clean(root)


if __name__ == "__main__":
    main()
