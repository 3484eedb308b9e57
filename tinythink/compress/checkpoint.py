"""Training checkpoints that survive `kill -9` and resume exactly, without pickle.

A checkpoint is a directory `step-NNNNNN/` holding model.safetensors (the weights), optimizer.safetensors (every
optimizer state tensor, and the RNG state) and state.json (step, data position, counters, the optimizer's
hyperparameters). It is written under a temporary name, flushed to disk, then renamed: a directory named
`step-*` is always complete. The newest `keep` are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinythink.errors import TinythinkError


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (a tied head is the embedding table)."""
    seen, out = set(), {}
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen and v.numel():
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().contiguous()
    return out


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for i, s in state["state"].items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{i}.{k}"] = v.contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save(directory: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
         keep: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:06d}"
    tmp = directory / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(weights(model), str(tmp / "model.safetensors"))
    tensors, meta = optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": meta}, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # the same step saved again (a resumed run stopping where it resumed)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(directory)
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(directory: Path) -> Path | None:
    found = sorted(directory.glob("step-*")) if directory.is_dir() else []
    return found[-1] if found else None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore weights, optimizer state and the RNG in place; return the saved state."""
    try:
        state = json.loads((path / "state.json").read_text())
        sd = load_file(str(path / "model.safetensors"))
        opt = load_file(str(path / "optimizer.safetensors"))
    except (OSError, ValueError) as e:
        raise TinythinkError(f"{path}: unreadable checkpoint ({e})") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_embeddings)]
    if missing or unexpected:
        raise TinythinkError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    if optimizer is not None:
        meta = state["optimizer"]
        restored: dict = {}
        for key, v in opt.items():
            if key.startswith("state."):
                _, i, k = key.split(".", 2)
                restored.setdefault(int(i), {})[k] = v
        for key, v in meta["scalars"].items():
            i, k = key.split(".", 1)
            restored.setdefault(int(i), {})[k] = v
        optimizer.load_state_dict({"state": restored, "param_groups": meta["param_groups"]})
    torch.set_rng_state(opt["rng.torch"])
    return state
