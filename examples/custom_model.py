"""Compress your own (non-torchvision) traceable model on your own data with the Python API.

python examples/custom_model.py
"""

import torch
from torch import nn

from n2n_fx.data import load_splits
from n2n_fx.search import compress
from n2n_fx.teacher.train import train_teacher


class ResidualNet(nn.Module):
    """A small residual CNN: surgery repairs the adds when layers inside the blocks go."""

    def __init__(self, c: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.block1 = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
        )
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            nn.BatchNorm2d(2 * c),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block1(x))
        x = self.down(x)
        x = torch.relu(x + self.block2(x))
        return self.head(x)


splits = load_splits("synthetic", num_samples=2000, image_size=20)
teacher, metrics = train_teacher(ResidualNet(), splits, "cpu", epochs=3)
print(f"teacher val accuracy {metrics['val_accuracy']:.3f}")
result = compress(
    teacher,
    splits.train_plain,
    splits.val,
    splits.test,
    run_dir="runs/custom",
    removal_iterations=4,
    shrink_iterations=3,
    quiet=False,
)
print(result.tables["summary"])
print(result.student.code)
