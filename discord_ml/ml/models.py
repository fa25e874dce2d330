"""The ranking networks: a DLRM-style model and a DCN-v2 cross network over the same features.

Both keep every sparse feature's embedding table in `self.embeddings` so the trainer can shard
each table across workers with FSDP2 (`fully_shard`), and both return one logit per row.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from torch import nn

from discord_ml.ml.features import DENSE, FeatureSpec

NEURAL_MODELS = ("dlrm", "dcn_v2")
LEARNING_RATE_DECAY = 0.5  # per epoch, in every trainer of these models


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a ranking network; saved beside its weights in the registry."""

    model_name: str
    embedding_dim: int = 16
    features: FeatureSpec = field(default_factory=FeatureSpec)
    hidden: int = 128
    cross_layers: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict) -> ModelConfig:
        return cls(**{**value, "features": FeatureSpec(**value["features"])})


def _mlp(sizes: list[int], *, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Embeddings(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, config.embedding_dim) for n in config.features.cardinalities())
        for table in self.tables:
            nn.init.normal_(cast(nn.Embedding, table).weight, std=0.05)

    def forward(self, sparse: torch.Tensor) -> list[torch.Tensor]:
        return [table(sparse[:, i]) for i, table in enumerate(self.tables)]


class DLRM(nn.Module):
    """Bottom MLP on dense features, pairwise dot interactions with every embedding, top MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        self.embeddings = _Embeddings(config)
        self.bottom = _mlp([len(DENSE), 64, d])
        vectors = len(config.features.cardinalities()) + 1
        pairs = vectors * (vectors - 1) // 2
        self.top = _mlp([pairs + d, config.hidden, config.hidden // 2, 1], last_activation=False)
        self.register_buffer("upper", torch.triu_indices(vectors, vectors, offset=1), persistent=False)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)
        stacked = torch.stack([bottom, *self.embeddings(sparse)], dim=1)
        upper = self.get_buffer("upper")
        dots = torch.bmm(stacked, stacked.transpose(1, 2))[:, upper[0], upper[1]]
        return self.top(torch.cat([bottom, dots], dim=1)).squeeze(-1)


class DCNv2(nn.Module):
    """Full-rank cross layers x_{l+1} = x_0 * (W x_l + b) + x_l, then a deep MLP (stacked DCN-v2)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        width = len(config.features.cardinalities()) * config.embedding_dim + len(DENSE)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        self.deep = _mlp([width, config.hidden, config.hidden // 2, 1], last_activation=False)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([*self.embeddings(sparse), dense], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.deep(x).squeeze(-1)


def build_model(config: ModelConfig) -> nn.Module:
    if config.model_name == "dlrm":
        return DLRM(config)
    if config.model_name == "dcn_v2":
        return DCNv2(config)
    raise ValueError(f"model_name {config.model_name!r} is not a neural model; known: {', '.join(NEURAL_MODELS)}")


def shard_embeddings(model: nn.Module) -> None:
    """FSDP2: shard each embedding table row-wise across the process group, then the rest."""
    from torch.distributed.fsdp import fully_shard

    embeddings = model.get_submodule("embeddings")
    assert isinstance(embeddings, _Embeddings)
    for table in embeddings.tables:
        fully_shard(table)
    fully_shard(model)
