"""Cached inputs held for the step and the encoders parked off the device (engine.train.resident):
applied when configured, a no-op on the CPU, and the training result unchanged."""

from __future__ import annotations

import pytest
import torch

from engine.train import resident


def test_the_cache_placement_follows_the_key_and_the_memory_estimate():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    gib = 2**30

    def place(setting, device=cuda, cache=1 * gib, estimate=10 * gib, total=16 * gib):
        return resident.cache_placement(
            setting, device, cache_bytes=cache, estimate_bytes=estimate, total_device=total
        )

    assert place("auto") == "device"
    assert place("auto", cache=5 * gib) == "pinned"  # 15 GiB > 90 % of 16
    assert place("device", cache=5 * gib) == "device" and place("pinned") == "pinned"
    assert place("off") == "cpu"
    assert {place(s, device=cpu) for s in resident.PLACEMENTS} == {"cpu"}


@pytest.mark.slow
def test_a_run_reads_held_caches_parks_the_encoders_around_samples_and_trains_the_same(
    tmp_path, tiny_sd15, demo_dataset, monkeypatch
):
    from engine.train.batches import LatentSource
    from tests.train_util import config_text, csv_rows, finished, of_type, run_in_process, watch_train_steps

    def losses_of(name: str, extra: dict):
        text = config_text(
            tiny_sd15,
            demo_dataset,
            name=name,
            train={"steps": 2, **extra},
            sample={"prompts": ["red circle --s 1 --w 64 --h 64"], "every_steps": 2},
        )
        rc, events, run_dir = run_in_process(tmp_path, text)
        assert rc == 0, finished(events)
        assert len(of_type(events, "sample")) == 1
        return [r[2] for r in csv_rows(run_dir)[1:]]

    plain = losses_of("plain", {})  # on the CPU "auto" changes nothing
    # What a CUDA run does, on the CPU: the caches held ("host"), the encoders parked and brought back.
    calls: list[str] = []
    monkeypatch.setattr(resident, "placement_of", lambda trainer, cfg: "host")
    monkeypatch.setattr(resident, "parking_applies", lambda cfg, trainer: True)
    for name in ("park", "unpark"):
        original = getattr(resident.EncoderParking, name)
        monkeypatch.setattr(
            resident.EncoderParking, name, lambda self, _o=original, _n=name: (calls.append(_n), _o(self))[1]
        )
    batch_latents = LatentSource.batch_latents
    in_step = watch_train_steps(monkeypatch)
    read_from_sources: list[str] = []

    def counted(self, batch):
        if in_step[0]:
            read_from_sources.append("latents")
        return batch_latents(self, batch)

    from engine.train.caches import TextCache

    text_load = TextCache.load

    def counted_text(self, caption):
        if in_step[0]:
            read_from_sources.append("text")
        return text_load(self, caption)

    monkeypatch.setattr(LatentSource, "batch_latents", counted)
    monkeypatch.setattr(TextCache, "load", counted_text)
    from engine.train import samples

    generate = samples.generate_samples

    def sampling(cfg, base, *args, **kwargs):
        calls.append("sample")
        return generate(cfg, base, *args, **kwargs)

    monkeypatch.setattr(samples, "generate_samples", sampling)
    held = losses_of("held", {})
    assert read_from_sources == []  # every step read the held caches
    assert calls == ["park", "unpark", "sample", "park"]
    assert held == plain
