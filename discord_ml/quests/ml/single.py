"""Plain single-process PyTorch training of the same models on the same features: the reference the
benchmark holds the Ray Train + TorchRec trainer against (no Ray, no process group, no FBGEMM).

It is given the best plain PyTorch has: the tables' `EmbeddingBag`s emit sparse gradients that
`torch.optim.Adagrad` applies to the touched rows only, the dense layers use fused Adam, and the
data is converted to tensors once.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from discord_ml.quests.ml.features import matrices
from discord_ml.quests.ml.metrics import auc, log_loss
from discord_ml.quests.ml.models import LEARNING_RATE_DECAY, ModelConfig, batch_kjt, build_model


def train_single_process(
    model_config: ModelConfig,
    train: pa.Table,
    valid: pa.Table,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    sparse_learning_rate: float,
    threads: int | None = None,
    seed: int = 0,
    on_epoch: Any = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train the model `model_config` describes in this process, with plain PyTorch; returns it and each
    epoch's metrics."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(model_config)
    bags = [m for m in model.get_submodule("embeddings").modules() if isinstance(m, torch.nn.EmbeddingBag)]
    for bag in bags:
        bag.sparse = True
    tables = [bag.weight for bag in bags]
    dense_params = [p for p in model.parameters() if all(p is not t for t in tables)]
    sparse_opt = torch.optim.Adagrad(tables, lr=sparse_learning_rate)
    dense_opt = torch.optim.Adam(dense_params, lr=learning_rate, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sparse, dense = (torch.from_numpy(a) for a in matrices(train))
    labels = torch.from_numpy(train["label"].to_numpy().astype(np.float32))
    v_sparse, v_dense = (torch.from_numpy(a) for a in matrices(valid))
    v_labels = valid["label"].to_numpy()
    history = []
    for epoch in range(epochs):
        for opt, lr in ((dense_opt, learning_rate), (sparse_opt, sparse_learning_rate)):
            for group in opt.param_groups:  # halve the steps each epoch: settles instead of overfitting
                group["lr"] = LEARNING_RATE_DECAY**epoch * lr
        started = time.perf_counter()
        model.train()
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(labels)))
        steps = len(labels) // batch_size
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            loss = loss_fn(model(batch_kjt(sparse[index]), dense[index]), labels[index])
            sparse_opt.zero_grad(set_to_none=True)
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(batch_kjt(v_sparse), v_dense)).numpy()
        metrics = {
            "epoch": epoch,
            "valid_auc": auc(v_labels, p),
            "valid_log_loss": log_loss(v_labels, p),
            "samples_per_s": steps * batch_size / seconds,
        }
        history.append(metrics)
        if on_epoch:
            on_epoch(metrics)
    return model, history
