"""The cost of the object-storage read path: training windows from s3:// against memory maps of a local copy.

A store on object storage cannot be memory-mapped; its arrays fetch the rows a window needs with one byte-range
request per shard piece (``facedata.store.RemoteRows``). This script ingests one generated tree twice, to a local
folder and to an S3 endpoint, and reads the same random training windows (vertices + mel, T = 32) from both in
one run. The endpoint is moto's S3 server on loopback unless ``--endpoint`` names another (then ``AWS_*``
credentials come from the environment and ``--bucket`` must exist), so the figure here is a floor: request
latency to a real bucket is higher, and the usual remedy is DataLoader workers (reads overlap) or a local copy.

    .venv/bin/python benchmarks/bench_object_storage.py [--seconds 10] [--endpoint URL --bucket NAME]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path


def windows_per_second(dataset, indices: list[int], seconds: float) -> float:
    dataset[indices[0]]  # open the arrays once
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        dataset[indices[done % len(indices)]]
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per reader")
    parser.add_argument("--endpoint", help="an S3 endpoint URL (default: a moto server on loopback)")
    parser.add_argument("--bucket", default="facetalk-bench")
    args = parser.parse_args()

    server = None
    if args.endpoint is None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        args.endpoint = f"http://{host}:{port}"
        import boto3

        boto3.client("s3", endpoint_url=args.endpoint).create_bucket(Bucket=args.bucket)
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint

    from facedata.ingest import IngestOptions, ingest
    from facedata.store import Store
    from facedata.synth import write_raw_tree
    from meshtalk.data import WindowDataset, select_sequences

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_raw_tree(raw, identities=2, sentences=6, seconds=3.0, seed=0, obj_every=30)
        remote = f"s3://{args.bucket}/bench-{int(time.time())}"
        local = Path(tmp) / "store"
        timings = {}
        for name, target in (("local", local), ("s3", remote)):
            started = time.perf_counter()
            report = ingest(raw, target, IngestOptions(workers=2))
            timings[name] = (report.frames_ingested, time.perf_counter() - started)
        print(f"ingest: local {timings['local'][0] / timings['local'][1]:,.0f} frames/s, "
              f"s3 {timings['s3'][0] / timings['s3'][1]:,.0f} frames/s ({args.endpoint})")
        rates = {}
        for name, target in (("local memory maps", local), ("s3 byte ranges", remote)):
            store = Store(target)
            dataset = WindowDataset(store, select_sequences(store), frames=32, seed=0)
            rates[name] = windows_per_second(dataset, list(range(200)), args.seconds)
            print(f"  {name:20s} {rates[name]:8.1f} windows/s (vertices + mel, T = 32)")
        ratio = rates["s3 byte ranges"] / rates["local memory maps"]
        print(f"  s3 / local: {ratio:.3f}x (the fallback read path's cost per reader; DataLoader workers overlap "
              "requests)")
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
