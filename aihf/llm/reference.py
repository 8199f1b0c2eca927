"""The reference ``pi_ref`` of a PEFT policy: the model the user started from.

A fresh LoRA adapter (``B = 0``) leaves the base model unchanged, so the policy with its adapters
disabled *is* the starting model and costs nothing extra. An adapter that already changes the
model (a LoRA SFT model, the usual start of DPO) does not: there the reference is a frozen copy of
the starting adapter, loaded as a second adapter (:data:`REF_ADAPTER`, as TRL's ``"ref"``) and
selected for reference passes, so that step-0 rewards are exactly 0 and the KL is measured from
the model given.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from torch import nn

from .model_setup import is_peft

REF_ADAPTER = "aihf_reference"



def adapter_is_identity(model: nn.Module) -> bool:
    """Whether ``model``'s active adapter leaves its base model unchanged: a LoRA adapter whose
    ``B`` (or ``A``) matrices are all zero in every layer, with ``modules_to_save`` copies equal to
    the originals. Other adapter types count as changing the model (checked by their weights
    would need a per-type rule; a reference copy is exact for all of them)."""
    from peft import PeftType
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    name = model.active_adapter
    config = model.peft_config[name]
    if config.peft_type != PeftType.LORA or getattr(config, "use_dora", False):
        return False
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for a_name, b_name in (("lora_A", "lora_B"), ("lora_embedding_A", "lora_embedding_B")):
                a, b = getattr(module, a_name, {}), getattr(module, b_name, {})
                if name not in a or name not in b:
                    continue
                a_w = a[name].weight if isinstance(a[name], nn.Module) else a[name]
                b_w = b[name].weight if isinstance(b[name], nn.Module) else b[name]
                if bool(a_w.any()) and bool(b_w.any()):
                    return False
        elif isinstance(module, ModulesToSaveWrapper) and name in module.modules_to_save:
            copy_state = module.modules_to_save[name].state_dict()
            for key, value in module.original_module.state_dict().items():
                if not torch.equal(copy_state[key], value):
                    return False
    return True


def add_reference_adapter(model: nn.Module, announce: bool = True) -> str | None:
    """For a PEFT ``model`` whose active adapter changes the base model, add a frozen copy of that
    adapter named :data:`REF_ADAPTER` and return its name; else (no PEFT, a fresh adapter) None,
    and the reference stays the base model (adapters disabled). ``announce`` prints which
    reference is used, in one line on stderr."""
    if not is_peft(model) or adapter_is_identity(model):
        return None
    active = model.active_adapter
    if REF_ADAPTER in model.peft_config:
        raise ValueError(f"the policy already has an adapter named '{REF_ADAPTER}'")
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    with torch.random.fork_rng(devices=[]):  # the new adapter's random init must not shift the run's RNG
        model.add_adapter(REF_ADAPTER, model.peft_config[active])
    marker, ref_marker = f".{active}.", f".{REF_ADAPTER}."
    with torch.no_grad():
        for name, param in model.named_parameters():
            if marker in name:
                model.get_parameter(name.replace(marker, ref_marker)).copy_(param)
    for name, param in model.named_parameters():
        param.requires_grad_(trainable.get(name, False) and ref_marker not in name)
    if announce:
        print(
            f"aihf: the policy's adapter '{active}' is already trained: the reference is a frozen copy of it "
            f"(adapter '{REF_ADAPTER}'), i.e. the model as given, not the base model",
            file=sys.stderr,
            flush=True,
        )
    return REF_ADAPTER


@contextmanager
def reference_mode(model: nn.Module, adapter: str | None):
    """Run ``model`` (a PEFT model) as the reference inside the block: with ``adapter`` active, or
    with its adapters disabled when ``adapter`` is None. Which parameters train is left as it was
    (peft's ``set_adapter`` would mark the selected adapter trainable)."""
    if adapter is None:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    model.set_adapter(adapter)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for param, flag in trainable:
            param.requires_grad_(flag)


@contextmanager
def without_reference_adapter(model: nn.Module):
    """Hide :data:`REF_ADAPTER` from ``model.peft_config`` inside the block, so that
    ``save_pretrained`` writes the policy's adapter only (no ``aihf_reference/`` folder)."""
    config = getattr(model, "peft_config", None) if is_peft(model) else None
    hidden = config.pop(REF_ADAPTER, None) if isinstance(config, dict) else None
    try:
        yield
    finally:
        if hidden is not None:
            config[REF_ADAPTER] = hidden
