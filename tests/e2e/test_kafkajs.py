"""kafkajs (npm), a fourth real client: produce, consume in a group, committed offsets."""

import json
import os
import subprocess
from pathlib import Path

JS = Path(__file__).resolve().parents[1] / "js"


def test_kafkajs_round_trip_in_a_group(broker, topic_name):
    out = subprocess.run(
        ["node", str(JS / "roundtrip.js"), broker.bootstrap, topic_name, "kafkajs-group"],
        capture_output=True,
        timeout=120,
        env=dict(os.environ, KAFKAJS_NO_PARTITIONER_WARNING="1"),
    )
    assert out.returncode == 0, (out.stdout + out.stderr).decode()[-3000:]
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    seen = result["seen"]
    assert sorted(r["v"] for r in seen) == sorted([f"v{i}" for i in range(300)] + ["gz"])
    assert all(r["h"] == r["v"][1:] for r in seen if r["v"] != "gz")
    # Same key, same partition; offsets dense and in order per partition.
    part_of_key = {}
    for r in seen:
        assert part_of_key.setdefault(r["k"], r["p"]) == r["p"]
    for p in {r["p"] for r in seen}:
        offsets = [r["o"] for r in seen if r["p"] == p]
        assert offsets == list(range(len(offsets)))
    # The group committed exactly the end of each partition.
    counts = {p: sum(1 for r in seen if r["p"] == p) for p in range(3)}
    assert {int(c["partition"]): int(c["offset"]) for c in result["committed"]} == counts
