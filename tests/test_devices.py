"""Devices without torch: train.devices, pinning, slot discovery and the queue's device scheduler."""

from __future__ import annotations

import sys
import types

import pytest

from engine.devices.discover import Device, describe, discover, parse_setting, visible_gpus
from engine.devices.schedule import Want, plan_starts
from engine.devices.spec import PIN_ENV, PINNED_ENV, check_devices, parse_devices, pin_env
from engine.errors import LoratuiError

GPUS = [(f"GPU-aaaa{i}-uuid", "NVIDIA H200", 141 * 2**30) for i in range(4)]


# ---- train.devices ---------------------------------------------------------------------------------


def test_devices_value_is_a_count_or_distinct_ids():
    assert parse_devices(2).count == 2 and parse_devices(2).ids == ()
    assert parse_devices([3, 1]).count == 2 and parse_devices([3, 1]).ids == (3, 1)
    assert parse_devices([3, 1]).text() == "3,1"
    assert check_devices(0) and check_devices([]) and check_devices([1, 1]) and check_devices(True)
    assert check_devices("2") and check_devices([0, -1])
    with pytest.raises(ValueError, match="train.devices"):
        parse_devices([0, 0])


def test_config_checks_devices_through_the_schema():
    from engine.config.validate import validate_field

    assert validate_field("train.devices", [0, 1]) is None
    assert "distinct" in validate_field("train.devices", [2, 2])
    assert "at least 1" in validate_field("train.devices", 0)


def test_pinning_maps_ids_through_an_existing_pin():
    assert pin_env([1, 0], {}) == {PIN_ENV: "1,0", PINNED_ENV: "1,0"}
    # inside a process pinned to GPUs 4,6 (by uuid or index), id 1 is the second of those
    assert pin_env([1], {PIN_ENV: "4,6"})[PIN_ENV] == "6"
    assert pin_env([0], {PIN_ENV: "GPU-x,GPU-y"})[PIN_ENV] == "GPU-x"
    with pytest.raises(ValueError, match="device 2 is not visible"):
        pin_env([2], {PIN_ENV: "4,6"})


# ---- discovery ---------------------------------------------------------------------------------------


def test_cuda_visible_devices_restricts_and_orders_the_gpus():
    assert visible_gpus(GPUS, {}) == GPUS
    assert [g[0] for g in visible_gpus(GPUS, {PIN_ENV: "2,0"})] == [GPUS[2][0], GPUS[0][0]]
    # a UUID prefix names a GPU; CUDA stops at the first entry it cannot resolve
    assert visible_gpus(GPUS, {PIN_ENV: "GPU-aaaa3,7,1"}) == [GPUS[3]]
    assert visible_gpus(GPUS, {PIN_ENV: ""}) == []


def test_discover_gpus_cpu_slots_and_restrictions():
    slots = discover("", env={}, gpus=GPUS)
    assert [d.key for d in slots] == ["0", "1", "2", "3"]
    assert slots[1].pin == GPUS[1][0] and slots[1].is_gpu and slots[1].memory_total == 141 * 2**30
    assert [d.key for d in discover("1,3", env={}, gpus=GPUS)] == ["1", "3"]
    assert [d.pin for d in discover(None, env={PIN_ENV: "3,2"}, gpus=GPUS)] == [GPUS[3][0], GPUS[2][0]]
    cpu = discover("cpu:2", env={}, gpus=GPUS)
    assert [(d.key, d.is_gpu, d.hide_gpus) for d in cpu] == [("cpu0", False, True), ("cpu1", False, True)]
    assert discover(None, env={"LORATUI_DEVICES": "cpu:3"}, gpus=[])[-1].key == "cpu2"
    # no GPU at all: one CPU slot
    assert discover("", env={}, gpus=[]) == [Device("cpu0", "CPU")]  # no GPU pinning, no hiding
    assert describe(cpu) == "2 CPU slot(s)"
    assert describe(slots[:1]) == "1 GPU(s): 0 NVIDIA H200"


def test_bad_device_settings_name_the_setting():
    for text in ("cpu:0", "0,0", "a,b", "cpu:x"):
        with pytest.raises(LoratuiError) as err:
            parse_setting(text)
        assert "--devices" in err.value.where
    with pytest.raises(LoratuiError, match="GPU 5 is not visible"):
        discover("5", env={}, gpus=GPUS)


def test_nvml_is_read_through_pynvml(monkeypatch):
    """The NVML calls and their bytes/str answers, through a module with pynvml's interface."""
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}".encode(),
        nvmlDeviceGetName=lambda h: "NVIDIA A100",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=80 * 2**30),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    slots = discover("", env={})
    assert [(d.key, d.pin, d.name) for d in slots] == [
        ("0", "GPU-0", "NVIDIA A100"),
        ("1", "GPU-1", "NVIDIA A100"),
    ]

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver
    assert discover("", env={}) == [Device("cpu0", "CPU")]


# ---- scheduling ---------------------------------------------------------------------------------------

KEYS = ["0", "1", "2", "3"]


def test_entries_start_in_queue_order_on_the_lowest_free_devices():
    plan = plan_starts([Want("a", 2), Want("b", 1), Want("c", 1)], ["3", "0", "1", "2"], KEYS)
    assert plan.starts == [("a", ["0", "1"]), ("b", ["2"]), ("c", ["3"])]
    assert plan.waiting is None


def test_a_big_head_entry_holds_freed_devices_against_smaller_ones():
    # "big" needs 3, only 2 are free: it holds both, "small" behind it may not take one
    plan = plan_starts([Want("big", 3), Want("small", 1)], ["1", "2"], KEYS)
    assert plan.starts == [] and plan.waiting == "big" and plan.reserved == ["1", "2"]
    # once a third device frees up, big starts first
    plan = plan_starts([Want("big", 3), Want("small", 1)], ["1", "2", "3"], KEYS)
    assert plan.starts == [("big", ["1", "2", "3"])]
    assert plan.waiting == "small"


def test_explicit_ids_wait_for_their_own_devices_and_let_others_pass():
    plan = plan_starts([Want("pinned", 2, ("0", "1")), Want("any", 1)], ["1", "2"], KEYS)
    # pinned waits for GPU 0 and holds GPU 1; "any" takes GPU 2
    assert plan.waiting == "pinned" and plan.reserved == ["1"]
    assert plan.starts == [("any", ["2"])]
    plan = plan_starts([Want("pinned", 2, ("3", "1"))], ["1", "3"], KEYS)
    assert plan.starts == [("pinned", ["3", "1"])]


def test_impossible_requests_are_reported_and_do_not_block():
    plan = plan_starts([Want("huge", 5), Want("ghost", 1, ("7",)), Want("ok", 1)], ["0"], KEYS)
    assert [e for e, _ in plan.impossible] == ["huge", "ghost"]
    assert "needs 5 devices; the engine has 4" in plan.impossible[0][1]
    assert "device 7 is not one of" in plan.impossible[1][1]
    assert plan.starts == [("ok", ["0"])]


def test_cpu_slots_schedule_like_gpus():
    plan = plan_starts([Want("a"), Want("b"), Want("c")], ["cpu0", "cpu1"], ["cpu0", "cpu1"])
    assert plan.starts == [("a", ["cpu0"]), ("b", ["cpu1"])] and plan.waiting == "c"


# ---- serve's slots -------------------------------------------------------------------------------------


def test_slots_track_holders_and_pin_workers(tmp_path):
    from engine.devices.slots import Slots

    slots = Slots(discover("", env={}, gpus=GPUS))
    entry = tmp_path / "e.toml"
    entry.write_text('name = "e"\n[train]\ndevices = [2, 0]\n')
    want = slots.want_of("e", entry)
    assert want == Want("e", 2, ("2", "0"))
    plan = slots.plan([want, Want("f", 1)])
    assert plan.starts == [("e", ["2", "0"]), ("f", ["1"])]
    slots.hold("e", ["2", "0"])
    slots.hold("f", ["1"])
    assert slots.free() == ["3"]
    env = slots.env_for(["2", "0"])
    assert env == {PIN_ENV: f"{GPUS[2][0]},{GPUS[0][0]}", PINNED_ENV: "2,0"}
    slots.release("e")
    assert slots.free() == ["0", "2", "3"]
    # unreadable or missing devices: one device (the worker reports the bad config itself)
    entry.write_text("[train\n")
    assert slots.want_of("e", entry) == Want("e", 1)


def test_cpu_slots_hide_the_gpus_from_their_workers(tmp_path):
    from engine.devices.slots import Slots

    slots = Slots(discover("cpu:2", env={}, gpus=GPUS))
    assert slots.env_for(["cpu1"]) == {PIN_ENV: "", PINNED_ENV: "cpu1"}
    entry = tmp_path / "e.toml"
    entry.write_text("[train]\ndevices = [1]\n")
    assert slots.want_of("e", entry) == Want("e", 1, ("cpu1",))
    assert slots.describe() == "2 CPU slot(s)"
    # the one slot of a box where no GPU was found leaves CUDA_VISIBLE_DEVICES alone
    assert Slots(discover("", env={}, gpus=[])).env_for(["cpu0"]) == {PINNED_ENV: "cpu0"}


def test_the_form_reads_and_writes_devices():
    from engine.config.schema import SCHEMA_BY_KEY
    from tui.widgets.form import format_value, parse_value

    spec = SCHEMA_BY_KEY["train.devices"]
    assert parse_value(spec, "2") == (2, None)
    assert parse_value(spec, "0, 3") == ([0, 3], None)
    assert parse_value(spec, "1,") == ([1], None)
    assert parse_value(spec, "two")[1].startswith("expected a device count or device ids")
    assert format_value(spec, [0, 3]) == "0, 3" and format_value(spec, 1) == "1"
