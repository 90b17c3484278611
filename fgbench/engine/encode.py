"""Encoding a split to real-valued codes with ``model.encode`` (eval transform), on one or several processes.

The evaluation's first step: the runner encodes the query (test) and database
(train) splits here, then scores the codes (:mod:`fgbench.metrics.retrieval`).
The same pass with any function of the images in place of ``model.encode``
is ``TrainContext.map_train`` (``fn=``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fgbench.data.base import Split
from fgbench.data.loader import LoaderOptions, SplitDataset, make_loader
from fgbench.data.transforms import DeviceAugment, build_transform, pad_collate, uint8_transform
from fgbench.engine import distributed
from fgbench.engine.device import Runtime, autocast_for, batch_images
from fgbench.errors import TrainingError
from fgbench.methods import HashingModel
from fgbench.protocol import Protocol


@torch.no_grad()
def encode_split(
    model: HashingModel,
    split: Split,
    protocol: Protocol,
    runtime: Runtime,
    loader_options: LoaderOptions = LoaderOptions(),
    progress: bool = False,
    desc: str = "encode",
    gpu_augment: bool = False,
    indices: np.ndarray | None = None,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Real-valued codes ``(len(split), bits)`` of ``model.encode`` on ``split`` (eval transform), on the device.

    ``indices`` restricts encoding to those items (in that order);
    ``gpu_augment`` centre-crops and normalises on the device.  ``fn`` maps
    the images instead of ``model.encode`` (model still in eval mode): its
    outputs, float32, concatenated along dim 0, without the codes' shape check.
    """
    was_training = model.training
    model.eval()
    if gpu_augment:
        dataset = SplitDataset(split, uint8_transform(protocol, train=False), indices)
        augment: DeviceAugment | None = DeviceAugment(protocol, train=False, device=runtime.device,
                                                      channels_last=runtime.channels_last)
        loader = make_loader(dataset, loader_options, batch_size=protocol.eval_batch_size, collate_fn=pad_collate)
    else:
        dataset = SplitDataset(split, build_transform(protocol, train=False), indices)
        augment = None
        loader = make_loader(dataset, loader_options, batch_size=protocol.eval_batch_size)
    chunks = []
    for data in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images, _labels, _idx = batch_images(data, runtime, augment)
        with autocast_for(runtime):
            codes = (model.encode if fn is None else fn)(images)
        chunks.append(codes.float())
    model.train(was_training)
    if fn is not None:
        return torch.cat(chunks) if chunks else torch.zeros(0, device=runtime.device)
    codes = torch.cat(chunks) if chunks else torch.zeros(0, model.bits, device=runtime.device)
    if codes.ndim != 2 or codes.shape[1] != model.bits:
        raise TrainingError(f"{type(model).__name__}.encode returned shape {tuple(codes.shape)}, "
                            f"expected (n, {model.bits})")
    return codes


def encode_split_sharded(model: HashingModel, split: Split, protocol: Protocol, runtime: Runtime,
                         loader_options: LoaderOptions, gpu_augment: bool = False,
                         desc: str = "encode",
                         fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`encode_split` with each rank encoding ``1/N`` of the split; every rank gets all codes (or ``fn``'s outputs)."""
    if not runtime.distributed:
        return encode_split(model, split, protocol, runtime, loader_options, desc=desc, gpu_augment=gpu_augment,
                            fn=fn)
    n = len(split)
    per = -(-n // runtime.world_size)
    start, stop = distributed.shard_range(n, runtime.rank, runtime.world_size)
    # pad every shard to the same length (repeat its last item) so all_gather sees equal shapes
    own = np.arange(start, stop)
    padded = np.concatenate([own, np.full(per - len(own), stop - 1 if len(own) else 0)]) if per > len(own) else own
    codes = encode_split(model, split, protocol, runtime, loader_options, desc=desc, gpu_augment=gpu_augment,
                         indices=padded, fn=fn)
    gathered = distributed.all_gather_cat(codes)
    keep = torch.cat([torch.arange(r * per, r * per + (b - a)) for r, (a, b) in
                      enumerate(distributed.shard_range(n, r, runtime.world_size) for r in range(runtime.world_size))])
    return gathered[keep.to(gathered.device)]
