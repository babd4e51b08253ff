"""Devices without torch: what a run asks for (`train.devices`), what the box has, who gets what.

- `spec`: reading `train.devices` (a count or explicit ids) and pinning a process to ids.
- `discover`: the box's GPUs (NVML through nvidia-ml-py, else `nvidia-smi -L`), CUDA_VISIBLE_DEVICES,
  declared CPU slots.
- `schedule`: which pending queue entries start on which free devices (a pure function).
"""
