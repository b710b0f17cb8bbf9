"""A method that lives only in the tests: proves plugins need no edit of the package."""

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from contrastive import METHODS, ConfigError, Method


@METHODS.register("simsiam_lite")
class SimSiamLite(Method):
    """SimSiam (Chen & He 2021) in a dozen lines."""

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        dim = int(cfg.method.dim)
        self.projector = SimSiamProjectionHead(self.backbone.feature_dim, dim, dim)
        self.predictor = SimSiamPredictionHead(dim, dim // 4, dim)
        self.criterion = NegativeCosineSimilarity()

    @classmethod
    def validate_config(cls, cfg, data):
        if int(cfg.method.dim) < 4:
            raise ConfigError(f"method.dim must be >= 4, got {cfg.method.dim}")

    def training_losses(self, views, labels, indices):
        z0, z1 = (self.projector(self.backbone(v)) for v in views)
        p0, p1 = self.predictor(z0), self.predictor(z1)
        loss = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        return {"loss": loss}
