"""Plain single-process PyTorch training of the same models on the same features: the reference
the benchmark holds the Ray Train + FSDP2 trainer against (no Ray, no process group)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from discord_ml.ml.features import matrices
from discord_ml.ml.metrics import auc, log_loss
from discord_ml.ml.models import LEARNING_RATE_DECAY, ModelConfig, build_model


def train_single_process(
    model_config: ModelConfig,
    train: pa.Table,
    valid: pa.Table,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    on_epoch: Any = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    torch.manual_seed(seed)
    model = build_model(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sparse, dense = matrices(train)
    labels = train["label"].to_numpy().astype(np.float32)
    v_sparse, v_dense = (torch.from_numpy(a) for a in matrices(valid))
    v_labels = valid["label"].to_numpy()
    history = []
    for epoch in range(epochs):
        for group in optimizer.param_groups:  # halve the step each epoch: settles instead of overfitting
            group["lr"] = LEARNING_RATE_DECAY**epoch * learning_rate
        started = time.perf_counter()
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(labels))
        steps = len(labels) // batch_size
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            loss = loss_fn(
                model(torch.from_numpy(sparse[index]), torch.from_numpy(dense[index])), torch.from_numpy(labels[index])
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(v_sparse, v_dense)).numpy()
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
