"""课程用的 ImageFolder：与 torchvision 的 ImageFolder 用法相同，多了两条保护。

1. 隐藏目录和垃圾目录（``.ipynb_checkpoints``、``__MACOSX``、``.DS_Store``、以 ``.`` 开头的名字）
   不会被当成类别，里面的文件也不会被当成样本；
2. 每张图片都用 ``load_rgb_image`` 读成 RGB（灰度、CMYK、带透明通道、调色板图片都能处理）。

本模块在导入时就导入 torchvision（类要继承 ImageFolder）；笔记本里一般通过
``cu.image_folder(...)`` 和 ``cu.make_datasets(...)`` 间接使用它。
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from torch.utils.data import Subset
from torchvision.datasets import ImageFolder

from .data import DatasetError, has_image_extension, load_rgb_image
from .download import is_junk_name

__all__ = ["CourseImageFolder", "SplitSubset"]


class CourseImageFolder(ImageFolder):
    """``root/<类名>/<图片>`` 结构的数据集；样本是 (图片, 类别序号)，``.samples`` 按顺序列出 (路径, 类别序号)。"""

    def __init__(self, root, transform=None):
        super().__init__(
            str(root), transform=transform, loader=load_rgb_image, allow_empty=True,
            is_valid_file=has_image_extension,
        )

    def find_classes(self, directory):
        """类别 = directory 下的子目录（跳过隐藏和垃圾目录），按名字排序后编号。"""
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not is_junk_name(e.name))
        if not classes:
            raise DatasetError(f"{directory} 里没有任何类别子目录。数据集应是 <根目录>/<类名>/<图片> 的结构。")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """与 torchvision 相同，但丢掉路径里含隐藏或垃圾目录的文件（如 类名/.ipynb_checkpoints/x.jpg）。"""
        samples = super().make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)
        return [(path, label) for path, label in samples
                if not any(is_junk_name(part) for part in Path(path).relative_to(directory).parts)]

    def with_transform(self, transform) -> "CourseImageFolder":
        """同一批样本、换一个预处理的副本（不重新扫描目录）。"""
        other = copy.copy(self)
        other.transform = transform
        other.transforms = type(self.transforms)(transform, self.target_transform)
        return other


class SplitSubset(Subset):
    """数据集的一部分（按下标取），并像 ImageFolder 一样提供 samples、targets、classes、class_to_idx。"""

    @property
    def samples(self) -> list[tuple[str, int]]:
        return [self.dataset.samples[i] for i in self.indices]

    @property
    def targets(self) -> list[int]:
        return [self.dataset.targets[i] for i in self.indices]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.dataset.class_to_idx

    @property
    def transform(self):
        return self.dataset.transform
