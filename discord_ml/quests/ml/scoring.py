"""Load a registered model and score featurized rows with it (torch or xgboost, same interface)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.features import FeatureSpec, featurize, matrices
from discord_ml.quests.model_registry import ModelVersion


class Scorer:
    """Participation probabilities from one model version, on CPU or the given torch device."""

    def __init__(self, lake: Lake, version: ModelVersion, *, device: str = "cpu", batch_size: int = 65536) -> None:
        self.version = version
        self.features = FeatureSpec(**version.card["features"])
        self.batch_size = batch_size
        self.device = device
        data = self._read(lake, version)
        if version.card["kind"] == "xgboost":
            import xgboost as xgb

            from discord_ml.quests.ml.baseline import CountStats

            self.booster = xgb.Booster()
            self.booster.load_model(bytearray(data))
            self.counts = CountStats.from_bytes(self._read(lake, version, "counts.npz"))
            self.model = None
        else:
            import torch

            from discord_ml.quests.ml.models import ModelConfig, batch_kjt, build_model

            self.batch_kjt = batch_kjt

            self.model = build_model(ModelConfig.from_dict(version.card["model"]))
            self.model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu"))
            self.model.to(device).eval()

    @staticmethod
    def _read(lake: Lake, version: ModelVersion, name: str | None = None) -> bytes:
        name = name or ("model.ubj" if version.card["kind"] == "xgboost" else "model.pt")
        with lake.filesystem.open_input_stream(f"{version.path}/{name}") as stream:
            return stream.read()

    def featurize(self, raw: pa.Table) -> pa.Table:
        """Raw (already validated) rows → this model's features."""
        return featurize(raw, self.features)

    def score(self, features: pa.Table) -> np.ndarray:
        """Participation probabilities of the (featurized) rows, in row order."""
        if self.model is None:
            import xgboost as xgb

            from discord_ml.quests.ml.baseline import scoring_matrix

            return self.booster.predict(xgb.DMatrix(scoring_matrix(features, self.counts), enable_categorical=True))
        sparse, dense = matrices(features)
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(sparse), self.batch_size):
                s = self.batch_kjt(torch.from_numpy(sparse[start : start + self.batch_size])).to(
                    torch.device(self.device)
                )
                d = torch.from_numpy(dense[start : start + self.batch_size]).to(self.device)
                out.append(torch.sigmoid(self.model(s, d)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
