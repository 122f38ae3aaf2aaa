"""``data_dir: s3://bucket/prefix``: the pipeline reading object storage, served by moto's S3 server on 127.0.0.1.

The server is started by the module and stopped after it; each test has a bucket of its own.
Credentials come from the environment (fake ones: the test server accepts any), the server's
address from the ``storage_options`` block.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import socket
import uuid
from pathlib import Path

import pytest

from core.objectstore import GzipObjectSource, ObjectPath, ObjectSource, listing, sources_for
from core.sources import DEFAULT_SOURCES, choose
from tests.conftest import REPO, Workspace, load_bench, run_cli, wait_for
from tests.test_watch import Watcher, outputs

try:  # the Dask tests' cluster of 2 worker processes, started once for this module when it is used
    from tests.test_dask import cluster, scheduler  # noqa: F401
except pytest.skip.Exception:  # distributed is not installed
    pass

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

ALL_RULES = ("payment-statuses, top-services, top-users, peak-hours, event-timeline, unknown-statuses, "
             "implausible-timestamps, error-spikes, busy-users, duplicate-events, silent-services")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3-compatible server on a free port of 127.0.0.1, for the module."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Bucket:
    """A bucket of its own on the test server, objects put under ``logs/``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"omp-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.client.create_bucket(Bucket=self.name)

    @property
    def url(self) -> str:
        return f"s3://{self.name}/logs"

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=f"logs/{key}", Body=body)

    def settings(self, extra: str = "") -> str:
        return f"data_dir: {self.url}\nstorage_options: {{endpoint_url: '{self.endpoint}'}}\n{extra}"


@pytest.fixture
def bucket(endpoint, monkeypatch) -> Bucket:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return Bucket(endpoint)


def local_copy(workspace: Workspace, bucket: Bucket, files: dict[str, bytes]) -> None:
    """The same files in the local data folder, and in the bucket."""
    for name, body in files.items():
        workspace.write(name, body)
        bucket.put(name, body)


DUP = "2025-07-21T10:00:00Z SUCCESS PaymentService u9 Payment ord-654321 captured"


def example_files() -> dict[str, bytes]:
    example = (REPO / "data" / "example_input.txt").read_bytes()
    return {"example.log": example, "half.log": example[: len(example) // 2].rsplit(b"\n", 1)[0] + b"\n",
            "dup.log": f"{DUP}\n{DUP}\n".encode(), "notes.md": b"not a log\n"}


@pytest.mark.slow
def test_a_batch_run_over_a_bucket_equals_a_run_over_a_local_folder(workspace, bucket, tmp_path, capsys):
    workspace.configure(f"rules: [{ALL_RULES}]\n")
    local_copy(workspace, bucket, example_files())
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert workspace.main("--output-dir", str(local)) == 0, capsys.readouterr().err
    remote_settings = tmp_path / "remote.yaml"
    remote_settings.write_text(workspace.settings.read_text() + "\n" + bucket.settings(), encoding="utf-8")
    from core.cli import main

    assert main(["--settings", str(remote_settings), "--output-dir", str(remote)]) == 0, capsys.readouterr().err
    ours, theirs = outputs(remote), outputs(local)
    # Names are the keys relative to the prefix.
    assert sorted(f["path"] for f in ours[0]["files"]) == ["dup.log", "example.log", "half.log"]
    assert ours == theirs
    duplicate = [i for i in ours[1]["anomalies"] if i["type"] == "duplicate_event" and i["subject"]["user"] == "u9"]
    # Sample lines are read back from the bucket, through the object's source.
    assert [(s["location"], s["text"]) for s in duplicate[0]["samples"]] == [("dup.log:1", DUP), ("dup.log:2", DUP)]

    # A second run counts only what is new: one object grown (uploaded again, longer) and one new object.
    more = b"2025-07-23T00:00:01Z FAILURE PaymentService u1 declined\n"
    files = example_files()
    local_copy(workspace, bucket, {"half.log": files["half.log"] + more, "new.log": more * 3})
    assert workspace.main("--output-dir", str(local)) == 0, capsys.readouterr().err
    assert main(["--settings", str(remote_settings), "--output-dir", str(remote)]) == 0, capsys.readouterr().err
    grown = {f["path"]: f["lines"] for f in outputs(remote)[0]["files"]}
    assert outputs(remote) == outputs(local)
    assert grown["new.log"] == 3
    assert outputs(remote)[0]["totals"]["lines"] == ours[0]["totals"]["lines"] + 4


@pytest.mark.slow
def test_an_object_rewritten_is_read_again_as_a_local_file_rewritten_is(workspace, bucket, tmp_path, capsys):
    """Not appended to: its counted bytes changed. The ledger's fingerprints say "replaced", for both."""
    workspace.configure(f"rules: [{ALL_RULES}]\n")
    local_copy(workspace, bucket, example_files())
    local, remote = tmp_path / "local", tmp_path / "remote"
    remote_settings = tmp_path / "remote.yaml"
    remote_settings.write_text(workspace.settings.read_text() + "\n" + bucket.settings(), encoding="utf-8")
    from core.cli import main

    rewritten = b"2025-07-24T00:00:00Z INFO OtherService u2 another day\n" * 40
    for run in range(2):
        if run:
            local_copy(workspace, bucket, {"dup.log": rewritten})
        assert workspace.main("--output-dir", str(local)) == 0, capsys.readouterr().err
        assert main(["--settings", str(remote_settings), "--output-dir", str(remote)]) == 0, capsys.readouterr().err
        assert outputs(remote) == outputs(local)
    assert {f["path"]: f["lines"] for f in outputs(remote)[0]["files"]}["dup.log"] == 2 + 40


@pytest.mark.slow
def test_gzip_objects_are_read_as_local_gzip_files_are(workspace, bucket, tmp_path, capsys):
    # Rotated logs are uploaded compressed: a .gz object's lines are its decompressed content, its
    # duplicates' sample lines are read back from it, it is counted on (not again) once uploaded
    # again with more lines, a compressed copy of a log already counted is not counted twice, and a
    # damaged one is a file error that leaves the other objects counted: all as in a local folder.
    workspace.configure(f"rules: [{ALL_RULES}]\ninclude: ['*.log', '*.gz']\n")
    example = (REPO / "data" / "example_input.txt").read_bytes()
    dups = f"{DUP}\n{DUP}\n".encode()
    local, remote = tmp_path / "local", tmp_path / "remote"
    remote_settings = tmp_path / "remote.yaml"
    remote_settings.write_text(workspace.settings.read_text() + "\n" + bucket.settings(), encoding="utf-8")
    from core.cli import main

    def both(code: int = 0) -> tuple[dict, dict]:
        assert workspace.main("--output-dir", str(local)) == code, capsys.readouterr().err
        assert main(["--settings", str(remote_settings), "--output-dir", str(remote)]) == code, capsys.readouterr().err
        return outputs(remote), outputs(local)

    local_copy(workspace, bucket, {"app.log.1.gz": gzip.compress(example), "dup.log.gz": gzip.compress(dups),
                                   "current.log": example[:500].rsplit(b"\n", 1)[0] + b"\n"})
    ours, theirs = both()
    assert ours == theirs
    files = {f["path"]: f["lines"] for f in ours[0]["files"]}
    assert files["app.log.1.gz"] == example.count(b"\n") + 1 and files["dup.log.gz"] == 2  # no newline at its end
    duplicate = [i for i in ours[1]["anomalies"] if i["type"] == "duplicate_event" and i["subject"]["user"] == "u9"]
    assert [(s["location"], s["text"]) for s in duplicate[0]["samples"]] == [("dup.log.gz:1", DUP),
                                                                            ("dup.log.gz:2", DUP)]

    # Uploaded again with more lines; the current log rotated into a compressed copy; a damaged one.
    more = b"2025-07-23T00:00:01Z FAILURE PaymentService u1 declined\n"
    rotated = (workspace.data / "current.log").read_bytes()
    (workspace.data / "current.log").unlink()
    bucket.client.delete_object(Bucket=bucket.name, Key="logs/current.log")
    local_copy(workspace, bucket, {"dup.log.gz": gzip.compress(dups + more), "current.log.1.gz": gzip.compress(rotated),
                                   "broken.log.gz": gzip.compress(example)[:200]})
    ours, theirs = both(code=3)  # a file could not be read
    errors = [(e["file"], e["error"].replace(bucket.url, "DATA")) for e in ours[0].pop("file_errors")]
    local_errors = [(e["file"], e["error"].replace(str(workspace.data), "DATA")) for e in theirs[0].pop("file_errors")]
    assert errors == local_errors  # named the same, but for where the folder is
    assert ours == theirs
    # current.log.1.gz is current.log, counted already: its counts moved with it (nothing new came under
    # its old name); the broken one's lines up to where it breaks count.
    moved = {name: lines for name, lines in files.items() if name != "current.log"}
    assert {f["path"]: f["lines"] for f in ours[0]["files"]} == {
        **moved, "current.log.1.gz": files["current.log"], "dup.log.gz": 3, "broken.log.gz": 1}
    assert [file for file, _ in errors] == ["broken.log.gz"] and "is a truncated gzip stream" in errors[0][1]


def test_what_travels_to_a_worker_pickles_and_names_an_object_the_same_everywhere():
    root = ObjectPath.of("s3://bucket/logs/", {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"a": 1}})
    assert str(root / "api/a.log") == "s3://bucket/logs/api/a.log" and root.name == "logs"
    source, gzipped = ObjectSource(root.options), GzipObjectSource(root.options)
    assert pickle.loads(pickle.dumps((root, source, gzipped))) == (root, source, gzipped)
    assert sources_for(root, DEFAULT_SOURCES)[:2] == (gzipped, source)
    assert choose("api/a.log.gz", sources_for(root, DEFAULT_SOURCES)) == gzipped
    assert choose("api/a.log", sources_for(root, DEFAULT_SOURCES)) == source
    assert sources_for(Path("/data"), DEFAULT_SOURCES) == DEFAULT_SOURCES  # a local folder: no change


def test_the_listing_honours_recursive_and_passes_over_folders(bucket):
    for key in ("a.log", "sub/b.log", "sub/deeper/c.log", ".hidden/d.log", "empty/"):
        bucket.put(key, b"" if key.endswith("/") else b"x\n")
    root = ObjectPath.of(bucket.url, {"endpoint_url": bucket.endpoint})
    assert listing(root, recursive=True) == (["a.log", "sub/b.log", "sub/deeper/c.log"], [])
    names, skipped = listing(root, recursive=False)
    assert names == ["a.log"]
    assert [name for name, _ in skipped] == ["empty", "sub"]  # a hidden one is not even mentioned, as locally


def test_a_bucket_that_does_not_exist_is_a_clear_error(workspace, bucket):
    workspace.configure(f"data_dir: s3://no-such-bucket-{uuid.uuid4().hex[:8]}/logs\n"
                        f"storage_options: {{endpoint_url: '{bucket.endpoint}'}}\n")
    for args in ((), ("--check",)):  # a run, and the check of the settings, which lists the data folder too
        result = run_cli(*args, cwd=workspace.root)
        assert result.returncode == 2
        assert "cannot be listed: bucket 'no-such-bucket-" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_server_that_is_down_is_a_clear_error(workspace, bucket):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace.configure(f"data_dir: s3://{bucket.name}/logs\n"
                        f"storage_options: {{endpoint_url: 'http://127.0.0.1:{port}', "
                        "config_kwargs: {retries: {max_attempts: 1}}}\n")
    result = run_cli(cwd=workspace.root)
    assert result.returncode == 2
    assert f"data folder 's3://{bucket.name}/logs' cannot be listed" in result.stderr
    assert "Could not connect to the endpoint URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_watcher_polls_the_listing_and_reads_new_and_grown_objects(workspace, bucket):
    workspace.configure(bucket.settings(f"rules: [{ALL_RULES}]\nwatch: {{poll_interval_ms: 200}}\n"))
    first = b"2025-07-22T12:00:00Z INFO PaymentService u1 ok\n"
    bucket.put("a.log", first)
    with Watcher(workspace) as watcher:
        summary = workspace.output / "summary.json"
        wait_for(lambda: summary.exists() and outputs(workspace.output)[0]["totals"]["lines"] == 1,
                 "the first object counted")
        bucket.put("b.log", first * 2)
        wait_for(lambda: outputs(workspace.output)[0]["totals"]["lines"] == 3, "a new object counted")
        bucket.put("a.log", first * 4)  # uploaded again, grown: only its new lines count
        wait_for(lambda: outputs(workspace.output)[0]["totals"]["lines"] == 6, "a grown object counted")
        assert "listing it every 200 ms" in watcher.log
    lines = {f["path"]: f["lines"] for f in outputs(workspace.output)[0]["files"]}
    assert lines == {"a.log": 4, "b.log": 2}


@pytest.mark.slow
def test_a_batch_run_on_a_dask_cluster_reads_the_bucket(workspace, bucket, scheduler, tmp_path, capsys):
    """Two worker processes read their own ranges of the objects through fsspec, with the settings'
    storage options: the credentials too, for the cluster was started before they were in the environment."""
    from core.cli import main

    workspace.configure(f"rules: [{ALL_RULES}]\nchunk_bytes: 131072\nlimits: {{max_line_bytes: 4096}}\n")
    big = tmp_path / "gen.log"
    load_bench("generate").main(["--lines", "20000", "--out", str(big), "--seed", "7",
                                 "--manifest", str(tmp_path / "gen.manifest.json")])
    older = tmp_path / "older.log"  # a rotated log, compressed: read whole by one worker
    load_bench("generate").main(["--lines", "3000", "--out", str(older), "--seed", "8",
                                 "--manifest", str(tmp_path / "older.manifest.json")])
    local_copy(workspace, bucket, {**example_files(), "gen.log": big.read_bytes(),
                                   "older.log.gz": gzip.compress(older.read_bytes())})
    local, remote = tmp_path / "local", tmp_path / "remote"
    remote_settings = tmp_path / "remote.yaml"
    remote_settings.write_text(
        workspace.settings.read_text() + f"\ndata_dir: {bucket.url}\nstorage_options: "
        f"{{endpoint_url: '{bucket.endpoint}', key: testing, secret: testing}}\n", encoding="utf-8")
    on_cluster = ["--settings", str(remote_settings), "--output-dir", str(remote), "--scheduler", scheduler]
    assert workspace.main("--output-dir", str(local)) == 0, capsys.readouterr().err
    assert main(on_cluster) == 0, capsys.readouterr().err
    assert outputs(remote) == outputs(local)
    assert outputs(remote)[1]["anomalies"]
    assert {f["path"]: f["lines"] for f in outputs(remote)[0]["files"]}["older.log.gz"] == 3000
    # And on: only the new object is read.
    more = "2025-07-23T00:00:01Z FAILURE PaymentService u1 declined\n"
    local_copy(workspace, bucket, {"new.log": more.encode()})
    assert workspace.main("--output-dir", str(local)) == 0, capsys.readouterr().err
    assert main(on_cluster) == 0, capsys.readouterr().err
    assert outputs(remote) == outputs(local)
    assert outputs(remote)[0]["totals"]["lines"] > 20_000


@pytest.mark.slow
def test_a_watcher_on_a_dask_cluster_polls_the_bucket(workspace, bucket, scheduler):
    """The workers read new and grown objects, a gzip one too; a compressed copy of an object counted is not read."""
    workspace.configure(f"rules: [{ALL_RULES}]\nwatch: {{poll_interval_ms: 200}}\ninclude: ['*.log', '*.gz']\n"
                        f"data_dir: {bucket.url}\n"
                        f"storage_options: {{endpoint_url: '{bucket.endpoint}', key: testing, secret: testing}}\n")
    first = b"2025-07-22T12:00:00Z INFO PaymentService u1 ok\n"
    bucket.put("a.log", first)
    with Watcher(workspace, "--scheduler", scheduler) as watcher:
        watcher.wait_for(lambda: _lines(workspace.output) == 1, "the first object counted")
        other = b"2025-07-22T12:00:01Z ERROR LedgerService u2 posting failed\n"
        bucket.put("b.log.gz", gzip.compress(other * 2))
        watcher.wait_for(lambda: _lines(workspace.output) == 3, "a new gzip object counted")
        bucket.put("a.log", first * 4)  # uploaded again, grown: only its new lines count
        watcher.wait_for(lambda: _lines(workspace.output) == 6, "a grown object counted")
        bucket.put("a.log.1.gz", gzip.compress(first * 4))  # a rotated copy, while a.log is still there
        watcher.wait_for(lambda: "a.log.1.gz is a copy of a.log, which is counted: read once" in watcher.log,
                         "the copy known for what it is")
        assert watcher.stop() == 0
    assert {f["path"]: f["lines"] for f in outputs(workspace.output)[0]["files"]} == {"a.log": 4, "b.log.gz": 2}


def _lines(folder: Path) -> int:
    try:
        return outputs(folder)[0]["totals"]["lines"]
    except (FileNotFoundError, ValueError):
        return -1
