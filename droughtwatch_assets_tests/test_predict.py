import numpy as np
import pyarrow.parquet as pq
import pytest

from droughtwatch_assets.model import predict
from droughtwatch_assets.records.tfrecord import encode_raw_example
from droughtwatch_assets.records.writer import RecordWriter
from droughtwatch_assets_tests.conftest import model_config, run_predict


def test_reference_model_on_the_real_shard(real_shard, reference_onnx):
    result = predict.predict_shards(reference_onnx, ("B2", "B3", "B4", "B5"), [real_shard])
    table = result.table
    assert table.column_names == predict.COLUMNS
    assert (table.num_rows, result.records, result.vetoed) == (79, 81, 2)
    p = np.stack([table.column(f"P_{k}").to_numpy() for k in range(4)], axis=1)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(table.column("P_label").to_numpy(), p.argmax(axis=1))
    assert all(len(i) == 36 for i in table.column("ID").to_pylist())


def test_unlabelled_records_without_filenames_get_shard_index_ids(tmp_path, reference_onnx):
    bands = np.random.default_rng(0).integers(0, 256, (11, 65, 65), dtype=np.uint8)
    with RecordWriter(tmp_path / "part-r-00000") as writer:
        writer.write(encode_raw_example(np.zeros_like(bands), None))
        writer.write(encode_raw_example(bands, None))
    result = predict.predict_shards(reference_onnx, ("B2", "B3", "B4", "B5"), predict.input_shards(tmp_path))
    assert result.table.column("ID").to_pylist() == ["part-r-00000:1"]
    assert result.table.column("label").to_pylist() == [None] and result.vetoed == 1


def test_a_channel_mismatch_is_refused(real_shard, reference_onnx):
    with pytest.raises(predict.ModelMismatch, match="takes 4 channels, but 3 features"):
        predict.predict_shards(reference_onnx, ("B4", "B3", "B2"), [real_shard])


@pytest.mark.integration
def test_cli_writes_the_parquet_table(real_shard, reference_onnx, tmp_path):
    out = tmp_path / "out.parquet"
    result = run_predict(reference_onnx, real_shard, out, "--features", "B2,B3,B4,B5")
    assert result.returncode == 0, result.stderr
    assert "79 predictions from 81 records (2 blank images vetoed)" in result.stdout
    assert pq.read_table(out).num_rows == 79


@pytest.mark.integration
def test_cli_exits_non_zero_on_a_mismatch(real_shard, reference_onnx, tmp_path):
    result = run_predict(reference_onnx, real_shard, tmp_path / "out.parquet", "--features", "ndvi")
    assert result.returncode == 2
    assert "takes 4 channels, but 1 features were given (NDVI)" in result.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.integration
def test_cli_reads_the_features_from_a_published_models_config(real_shard, reference_onnx, tmp_path):
    from droughtwatch_assets.storage.registry import LocalModelRegistry

    LocalModelRegistry(tmp_path / "registry").publish("baseline", reference_onnx, model_config())
    out = tmp_path / "out.parquet"
    result = run_predict(tmp_path / "registry" / "baseline", real_shard, out)
    assert result.returncode == 0, result.stderr
    assert "79 predictions from 81 records" in result.stdout and pq.read_table(out).num_rows == 79


@pytest.mark.integration
def test_cli_needs_features_for_a_model_without_a_config(real_shard, reference_onnx, tmp_path):
    result = run_predict(reference_onnx, real_shard, tmp_path / "out.parquet")
    assert result.returncode == 2 and "carries no config naming its features; pass --features" in result.stderr


@pytest.mark.integration
def test_cli_skips_bad_records_when_asked(real_shard, reference_onnx, tmp_path):
    data = bytearray(real_shard.read_bytes())
    data[20_000] ^= 0xFF  # record 0's payload
    (tmp_path / "part-r-00000").write_bytes(bytes(data))
    arguments = (reference_onnx, tmp_path / "part-r-00000", tmp_path / "out.parquet", "--features", "baseline")
    failed = run_predict(*arguments)
    assert failed.returncode == 2 and "part-r-00000: record 0: payload checksum mismatch" in failed.stderr
    skipped = run_predict(*arguments, "--on-bad-record", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "78 predictions from 81 records (2 blank images vetoed, 1 bad records skipped)" in skipped.stdout


def test_input_shards_finds_part_files(tmp_path):
    (tmp_path / "a" / "val").mkdir(parents=True)
    for name in ("part-r-00001", "part-r-00000", "notes.txt"):
        (tmp_path / "a" / "val" / name).write_bytes(b"")
    assert [p.name for p in predict.input_shards(tmp_path / "a")] == ["part-r-00000", "part-r-00001"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no part-"):
        predict.input_shards(tmp_path / "empty")


def test_evaluation_metrics_on_known_predictions():
    from droughtwatch_assets.model.evaluate import evaluate, pr_curve

    labels = np.array([0, 0, 0, 1, 2, 3])
    probabilities = np.eye(4)[[0, 0, 1, 1, 2, 0]]
    result = evaluate(probabilities, labels)
    assert result.confusion.tolist() == [[2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert result.accuracy == 4 / 6 and result.majority_rate == 3 / 6
    np.testing.assert_allclose(result.precision, [2 / 3, 1 / 2, 1, 0])
    np.testing.assert_allclose(result.recall, [2 / 3, 1, 1, 0])
    precision, recall = pr_curve(np.array([0.9, 0.2, 0.6]), np.array([True, False, False]), np.array([0.0, 0.5, 0.95]))
    np.testing.assert_allclose(precision, [1 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(recall, [1, 1, 0])


@pytest.mark.parametrize("labels", [[0, 1, -1], [0, 4, 1]])
def test_evaluation_refuses_labels_outside_0_to_3(labels):
    from droughtwatch_assets.model.evaluate import evaluate

    with pytest.raises(ValueError, match=r"label\(s\) outside 0\.\.3"):
        evaluate(np.eye(4)[[0, 1, 3]], np.array(labels))


@pytest.mark.integration
def test_cli_reads_the_model_from_s3(real_shard, reference_onnx, tmp_path, s3_env):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket="dw-cli-models")
    client.upload_file(str(reference_onnx), "dw-cli-models", "baseline/model.onnx")
    out = tmp_path / "out.parquet"
    result = run_predict("s3://dw-cli-models/baseline/model.onnx", real_shard, out, "--features", "baseline")
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).num_rows == 79


def real_reference(real_folder, root):
    """The drift reference of the real shard processed with the baseline features."""
    from droughtwatch_assets.data.datasets import build_raw_dataset, find_split_shards
    from droughtwatch_assets.data.processing import ProcessingOptions, process_dataset
    from droughtwatch_assets.model.drift import reference_from

    raw = build_raw_dataset(find_split_shards(real_folder), root / "raw", {"type": "folder"})
    features = ("B2", "B3", "B4", "B5")
    return reference_from(process_dataset(raw, root / "processed", "baseline", features, ProcessingOptions(workers=1)))


def published_with(tmp_path, reference_onnx, reference) -> None:
    from droughtwatch_assets.storage.registry import LocalModelRegistry

    registry = LocalModelRegistry(tmp_path / "registry")
    registry.publish("baseline", reference_onnx, model_config(), {"drift_reference.json": reference.to_json()})


@pytest.mark.integration
def test_cli_tests_the_predicted_classes_against_the_published_models_own_val_rates(
    real_folder, reference_onnx, tmp_path
):
    # the original model predicts 45, 6, 11 and 17 of the shard's 79 kept records as 0, 1, 2 and 3; published with
    # those as its val rates, the same records give a chi-square of 0 (up to rounding), where the training priors
    # (46, 14, 14, 5 of 79 records) give drift: the class weights at work
    reference = real_reference(real_folder, tmp_path).with_predicted_class_rates([45 / 79, 6 / 79, 11 / 79, 17 / 79])
    published_with(tmp_path, reference_onnx, reference)
    result = run_predict(tmp_path / "registry" / "baseline", real_folder / "val", tmp_path / "out.parquet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "predicted class counts: 0: 45, 1: 6, 2: 11, 3: 17"
    assert lines[2] == (
        "class drift against the model's predicted class rates on val: chi-square 0.00 (3 dof), p = 1: "
        "consistent with the predictions on val"
    )
    assert "warning" not in result.stderr


@pytest.mark.integration
def test_cli_falls_back_to_the_training_priors_for_a_reference_without_val_rates_and_says_why(
    real_folder, reference_onnx, tmp_path
):
    published_with(tmp_path, reference_onnx, real_reference(real_folder, tmp_path))
    result = run_predict(tmp_path / "registry" / "baseline", real_folder / "val", tmp_path / "out.parquet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("79 predictions from 81 records (2 blank images vetoed)")
    assert lines[1].startswith("predicted class counts: 0: ")
    assert lines[2].startswith(
        "class drift against the training priors (the model's drift reference predates its predicted class rates "
        "on val; publish the model again to record them): chi-square "
    )
    assert " (3 dof), p = " in lines[2]
    # the original model predicts class 3 for 17 records, where the shard has 5
    assert lines[2].endswith("not distributed as in training (p < 0.01)")
    assert "droughtwatch predict: warning: class drift, chi-square " in result.stderr


@pytest.mark.integration
def test_cli_says_no_class_rates_are_known_for_a_model_without_a_drift_reference(real_shard, reference_onnx, tmp_path):
    result = run_predict(reference_onnx, real_shard, tmp_path / "out.parquet", "--features", "baseline")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "class drift: no class rates known (the model carries no drift reference)"
    )


def test_tta_averages_the_models_probabilities_over_the_eight_views_and_is_off_by_default(
    real_shard, reference_onnx, tmp_path
):
    import onnxruntime as ort

    from droughtwatch_assets.data.processing import process_shard
    from droughtwatch_assets.records.tfrecord import read_processed

    process_shard(real_shard, tmp_path / "shard", ("B2", "B3", "B4", "B5"))
    images = read_processed(tmp_path / "shard", 4).images
    session = ort.InferenceSession(str(reference_onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def on_view(k: int) -> np.ndarray:
        turned = np.rot90(images, k % 4, axes=(1, 2))
        return session.run(None, {name: np.ascontiguousarray(turned[:, :, ::-1] if k >= 4 else turned)})[0]

    plain = predict.predict_processed(reference_onnx, [tmp_path / "shard"], 4)
    averaged = predict.predict_processed(reference_onnx, [tmp_path / "shard"], 4, tta=True)
    np.testing.assert_array_equal(plain.probabilities, on_view(0))
    mean = np.mean([on_view(k) for k in range(8)], axis=0)
    np.testing.assert_allclose(averaged.probabilities, mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(plain.labels, averaged.labels)
    assert not np.allclose(averaged.probabilities, plain.probabilities)  # not invariant to turns and flips
    # the classes predicted without tta come from the same pass either way: those of view 0 alone
    assert (plain.plain_classes == on_view(0).argmax(axis=1)).all()
    assert (averaged.plain_classes == on_view(0).argmax(axis=1)).all()
    assert (mean.argmax(axis=1) != on_view(0).argmax(axis=1)).any()  # which tta's own classes would not be
