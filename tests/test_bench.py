"""bench/run.py end to end on the tiny model: every system is started, measured in turns and
reported; generations have the full token budget; ratios pair rounds that ran back to back.
(The numbers themselves are checked by `make bench` on the real model, never here.)"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_the_benchmark_measures_every_system_in_turns(tiny_model, tmp_path):
    out = tmp_path / "results"
    command = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--model",
        str(tiny_model),
        "--systems",
        "inprocess,inprocess-batched,ggufd",
        "--concurrency",
        "1,3",
        "--repeats",
        "2",
        "--repeats-concurrent",
        "1",
        "--max-tokens",
        "12",
        "--n-ctx",
        "512",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "latest.json").read_text())

    assert results["settings"]["suppressed_tokens"] == [2, 4]  # the tiny model's </s> and <|im_end|>
    rows = {(row["system"], row["concurrency"]): row for row in results["rows"]}
    assert set(rows) == {
        ("llama-cpp-python in-process", 1),
        ("llama_decode loop in-process (batched)", 1),
        ("llama_decode loop in-process (batched)", 3),
        ("ggufd", 1),
        ("ggufd", 3),
    }
    for (system, streams), row in rows.items():
        assert row["errors"] == 0, system
        assert row["tokens"] == 12 * streams, system  # end of generation suppressed: the whole budget
        assert row["rounds"] == (2 if streams == 1 else 1)
        assert row["aggregate_tok_s"] > 0 and row["ttft_ms_p50"] > 0
    assert rows[("ggufd", 1)]["peak_rss_mb"] > 0

    paired = results["targets"]["ggufd / in-process, one stream (aggregate incl. TTFT)"]
    value, (low, high, count), target, met = paired
    assert count == 2 and low <= value <= high and target == ">= 0.97" and met == (value >= 0.97)
    assert results["prefix_reuse"]["cold_ttft_ms"] > 0 and results["idle"]["idle_rss_mb"] > 0
    table = (out / "latest.md").read_text()
    assert "| ggufd | 3 |" in table and "over 2 paired rounds" in table
