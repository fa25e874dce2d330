"""The ranking networks: a DLRM-style model and a DCN-v2 cross network over the same features.

Both look their sparse features up in one TorchRec `EmbeddingBagCollection` (`self.embeddings`,
one table per feature, fed a `KeyedJaggedTensor`), so that `DistributedModelParallel` can place
each table on the workers (`sharding.py`), and both return one logit per row. Unsharded, the
same module is what the registry stores and what scoring loads.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from discord_ml.quests.ml.features import DENSE, SPARSE, FeatureSpec

NEURAL_MODELS = ("dlrm", "dcn_v2")
LEARNING_RATE_DECAY = 0.5  # per epoch, in every trainer of these models
EMBEDDING_INIT_STD = 0.05


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

    def tables(self) -> list[EmbeddingBagConfig]:
        """One table per sparse feature, named after it (the shard plan reports these names)."""
        return [
            EmbeddingBagConfig(
                name=name,
                feature_names=[name],
                num_embeddings=rows,
                embedding_dim=self.embedding_dim,
                init_fn=functools.partial(nn.init.normal_, mean=0.0, std=EMBEDDING_INIT_STD),
            )
            for name, rows in zip(SPARSE, self.features.cardinalities(), strict=True)
        ]


def batch_kjt(sparse: torch.Tensor) -> KeyedJaggedTensor:
    """A `[rows, len(SPARSE)]` index matrix as a KeyedJaggedTensor: one value per feature and row."""
    rows = sparse.shape[0]
    return KeyedJaggedTensor(
        keys=SPARSE,
        values=sparse.t().reshape(-1),
        lengths=torch.ones(rows * len(SPARSE), dtype=torch.int32, device=sparse.device),
        stride=rows,
    )


def _mlp(sizes: list[int], *, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _embeddings(config: ModelConfig, device: torch.device | None) -> EmbeddingBagCollection:
    # On `meta` the tables take no memory; the sharded kernels then run each table's init_fn on their shards.
    return EmbeddingBagCollection(tables=config.tables(), device=device)


class DLRM(nn.Module):
    """Bottom MLP on dense features, pairwise dot interactions with every embedding, top MLP."""

    def __init__(self, config: ModelConfig, device: torch.device | None = None) -> None:
        super().__init__()
        d = config.embedding_dim
        self.embeddings = _embeddings(config, device)
        self.bottom = _mlp([len(DENSE), 64, d])
        vectors = len(SPARSE) + 1
        pairs = vectors * (vectors - 1) // 2
        self.top = _mlp([pairs + d, config.hidden, config.hidden // 2, 1], last_activation=False)
        self.register_buffer("upper", torch.triu_indices(vectors, vectors, offset=1), persistent=False)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)
        pooled = self.embeddings(sparse).values().view(dense.shape[0], len(SPARSE), -1)
        stacked = torch.cat([bottom.unsqueeze(1), pooled], dim=1)
        upper = self.get_buffer("upper")
        dots = torch.bmm(stacked, stacked.transpose(1, 2))[:, upper[0], upper[1]]
        return self.top(torch.cat([bottom, dots], dim=1)).squeeze(-1)


class DCNv2(nn.Module):
    """Full-rank cross layers x_{l+1} = x_0 * (W x_l + b) + x_l, then a deep MLP (stacked DCN-v2)."""

    def __init__(self, config: ModelConfig, device: torch.device | None = None) -> None:
        super().__init__()
        self.embeddings = _embeddings(config, device)
        width = len(SPARSE) * config.embedding_dim + len(DENSE)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers))
        self.deep = _mlp([width, config.hidden, config.hidden // 2, 1], last_activation=False)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.embeddings(sparse).values(), dense], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.deep(x).squeeze(-1)


def build_model(config: ModelConfig, device: torch.device | None = None) -> nn.Module:
    """The network named by `config`; on the `meta` device its tables take no memory until sharded."""
    if config.model_name == "dlrm":
        return DLRM(config, device)
    if config.model_name == "dcn_v2":
        return DCNv2(config, device)
    raise ValueError(f"model_name {config.model_name!r} is not a neural model; known: {', '.join(NEURAL_MODELS)}")
