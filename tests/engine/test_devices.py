"""Device placement and the per-device executor threads."""

from __future__ import annotations

import asyncio
import threading

from ggufd.engine.devices import LLAMA_SPLIT_MODE_LAYER, LLAMA_SPLIT_MODE_NONE, DeviceExecutors, placement_for


def test_cpu_device_or_zero_layers_run_on_cpu():
    assert placement_for({"device": "cpu"}, -1, True).device == "cpu"
    assert placement_for({"device": "cpu"}, -1, True).n_gpu_layers == 0
    assert placement_for({}, 0, True).device == "cpu"


def test_gpu_index_pins_one_gpu():
    placement = placement_for({"device": 1}, -1, True)
    assert placement.device == "cuda:1" and placement.main_gpu == 1 and placement.split_mode == LLAMA_SPLIT_MODE_NONE
    assert placement.n_gpu_layers == -1


def test_no_device_uses_llama_cpp_split_over_visible_gpus():
    placement = placement_for({}, 20, True)
    assert placement.device == "gpu" and placement.split_mode == LLAMA_SPLIT_MODE_LAYER and placement.n_gpu_layers == 20


def test_cpu_only_build_falls_back_with_one_warning(capsys):
    first = placement_for({"device": 0}, -1, False, model_id="warn-once")
    second = placement_for({"device": 0}, -1, False, model_id="warn-once")
    assert first.device == second.device == "cpu" and first.n_gpu_layers == 0
    assert capsys.readouterr().out.count("GPU layers requested but no GPU can be used; running on CPU") == 1


def test_each_device_has_one_thread_and_devices_run_in_parallel():
    executors = DeviceExecutors()
    seen: dict[str, set] = {"cpu": set(), "cuda:0": set()}
    both_running = threading.Barrier(2, timeout=5)

    def work(device: str) -> None:
        seen[device].add(threading.get_ident())
        both_running.wait()  # only passes if the two devices' jobs run at the same time

    async def main():
        await asyncio.gather(executors.run("cpu", work, "cpu"), executors.run("cuda:0", work, "cuda:0"))
        # the same device always uses the same thread
        for _ in range(3):
            await executors.run("cpu", lambda: seen["cpu"].add(threading.get_ident()))

    asyncio.run(main())
    executors.shutdown()
    assert len(seen["cpu"]) == 1 and len(seen["cuda:0"]) == 1
    assert seen["cpu"] != seen["cuda:0"]
