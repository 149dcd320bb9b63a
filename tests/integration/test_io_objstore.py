"""The one object-store helper: the same calls on a local directory and on a moto S3 server (loopback),
with the connection resolved by ObjectStoreHook (no Airflow lookups in runtime code)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_provider.exceptions import DataValidationError
from mlops_provider.hooks.objstore import ObjectStoreHook
from mlops_provider.runtime.io.atomic import atomic_path, atomic_write_json
from mlops_provider.runtime.io.objstore import ObjectStore, join

pytest_plugins = ["tests.integration.conftest_features_s3"]


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    moto = request.getfixturevalue("moto_s3")
    name = "io-test-bucket"
    moto.client.create_bucket(Bucket=name)
    return f"s3://{name}/prefix"


@pytest.fixture
def store() -> ObjectStore:
    return ObjectStore(ObjectStoreHook("aws_default").settings)


def test_write_read_list_delete_roundtrip(store: ObjectStore, root: str) -> None:
    assert store.list(root) == {}
    assert store.write_json(join(root, "date=2013-07-01", "a.json"), {"x": 1})
    assert store.write_bytes(join(root, "top.txt"), b"hello")
    assert not store.write_bytes(join(root, "top.txt"), b"again", if_absent=True)  # existed: unchanged
    assert store.read_bytes(join(root, "top.txt")) == b"hello"
    assert store.read_json(join(root, "date=2013-07-01", "a.json")) == {"x": 1}
    assert list(store.list(root)) == [join(root, "top.txt")]
    assert list(store.list(root, "*.json", recursive=True)) == [join(root, "date=2013-07-01", "a.json")]
    assert store.list_dirs(root) == ["date=2013-07-01"]
    info = store.head(join(root, "top.txt"))
    assert info is not None and info.size == 5
    store.delete(join(root, "top.txt"))
    assert not store.exists(join(root, "top.txt"))


def test_parquet_through_the_arrow_filesystem(store: ObjectStore, root: str, tmp_path) -> None:
    local = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), local)
    store.upload(local, join(root, "t.parquet"))
    fs, path = store.arrow_fs(join(root, "t.parquet"))
    assert pq.read_table(path, filesystem=fs).column("a").to_pylist() == [1, 2, 3]
    with store.localized([join(root, "t.parquet")]) as [copy]:
        assert pq.read_table(copy).num_rows == 3


def test_missing_object_is_a_named_error(store: ObjectStore, root: str, tmp_path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        store.download(join(root, "nope.parquet"), tmp_path / "x")


def test_atomic_path_leaves_nothing_on_error(tmp_path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_settings_repr_hides_secrets() -> None:
    from mlops_provider.runtime.io.objstore import S3Settings

    assert "sekrit" not in repr(S3Settings(access_key="AKIA", secret_key="sekrit"))
