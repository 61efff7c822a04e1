"""``--course``：quick 档位的整个课程在这台机器上要多久（fruit30 下载不了，用同样大小的生成数据模拟）。

- 数据：30 个类（fruit30 的类名），train/ 4376 张、val/ 1078 张，每张 800×600 的 JPEG
  （由演示数据的画法放大并加细微噪声，文件比 fruit30 的平均 40 KB 大，解码更慢，所以估计偏保守）；
- 权重：随机初始化的 ResNet-18，以 torchvision 官方文件名放进临时的 TORCH_HOME 缓存——
  只为让 quick 档位（必须有 ImageNet 权重）能运行，用时与权重的取值无关，准确率没有意义；
- 执行：``python -m course_utils run --profile quick``（不生成讲义），输出写到临时目录，跑完即删。
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import course_utils as cu
from course_utils.data import DATASETS
from course_utils.demo import DEMO_FRUITS, draw_fruit_image
from course_utils.paths import data_dir

from .common import Section, core_count, run_probe

JPEG_SIZE = (800, 600)
FOLDER = "bench-fruit30-sim-v1"


def _draw(job) -> None:
    """画一张模拟照片并保存（在进程池里运行）。"""
    import numpy as np
    from PIL import Image

    index, path = job
    rng = np.random.default_rng([20220716, index])
    fruit = list(DEMO_FRUITS)[index % len(DEMO_FRUITS)]
    small = draw_fruit_image(fruit, 160, rng)
    big = np.asarray(small.resize(JPEG_SIZE, Image.BICUBIC), dtype=np.int16)
    big = big + rng.normal(0, 4, (JPEG_SIZE[1], JPEG_SIZE[0], 1)).astype(np.int16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=90)


def simulated_fruit30() -> Path:
    """生成（或复用）与 fruit30 同样类别数、图片数的数据集；返回可作 COURSE_DATA_DIR 的目录。"""
    source = DATASETS["fruit30"]
    base = data_dir() / FOLDER
    if (base / ".complete").is_file():
        return base
    root = base / source.folder_name
    jobs = []
    for split, total in (("train", source.train_images), ("val", source.test_images)):
        for i in range(total):
            name = source.classes[i % len(source.classes)]
            jobs.append((len(jobs), str(root / split / name / f"{split}_{i:05d}.jpg")))
    with ProcessPoolExecutor(max_workers=core_count()) as pool:
        list(pool.map(_draw, jobs, chunksize=64))
    (base / ".complete").write_text("ok\n")
    return base


def fake_weights_home(folder: Path) -> Path:
    """临时 TORCH_HOME：随机初始化的 ResNet-18 权重，文件名与 torchvision 官方的 IMAGENET1K_V1 相同。"""
    import torch
    from torchvision import models

    home = Path(folder) / "torch"
    enum = models.ResNet18_Weights.IMAGENET1K_V1
    target = home / "hub" / "checkpoints" / Path(enum.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(models.resnet18(weights=None).state_dict(), target)
    return home


def drive() -> dict:
    """（在子进程里运行）按 quick 档位依次执行全部笔记本，返回每个笔记本的用时。"""
    from course_utils.runner import run_notebooks

    results = run_notebooks("quick")
    return {"notebooks": [[r.name, r.seconds] for r in results]}


def course_totals(notebooks: list) -> list[tuple[str, float]]:
    """[(合计的名字, 秒数)]：核心笔记本 00–07、加上选学的 10 以后、再加 solutions/ 里的参考答案。

    notebooks 是 [(名字, 秒数)]，名字是执行结果相对输出目录的路径，例如 "04_train.ipynb"、"solutions/04_train_solutions.ipynb"。
    """
    main = [(name, seconds) for name, seconds in notebooks if "/" not in name]
    core = sum(seconds for name, seconds in main if name[:2].isdigit() and int(name[:2]) < 10)
    with_optional = sum(seconds for _, seconds in main)
    total = sum(seconds for _, seconds in notebooks)
    return [("合计：核心笔记本 00–07（学习者依次运行的）", core), ("合计：再加选学笔记本（10 以后）", with_optional),
            ("合计：再加 solutions/ 里的参考答案", total)]


def run(device, quick: bool = False, context: dict | None = None):
    """模拟 fruit30，执行 quick 档位的全部笔记本，报告每个笔记本和总共的用时。"""
    data = simulated_fruit30()
    with tempfile.TemporaryDirectory() as folder:
        env = {"COURSE_DATA_DIR": str(data), "COURSE_OUTPUT_DIR": str(Path(folder) / "outputs"),
               "TORCH_HOME": str(fake_weights_home(Path(folder))), "COURSE_HEADLESS": "1", "COURSE_PROFILE": "quick"}
        result = run_probe("course_time", ["--drive"], timeout=3 * 3600, env=env)
    settings = cu.resolve_settings("quick")
    if "error" in result:
        rows = [{"笔记本": "（整个课程）", "说明": result["error"]}]
    else:
        rows = [{"笔记本": name, "用时（秒）": seconds, "用时（分钟）": seconds / 60} for name, seconds in result["notebooks"]]
        for label, seconds in course_totals(result["notebooks"]):
            rows.append({"笔记本": label, "用时（秒）": seconds, "用时（分钟）": seconds / 60})
    notes = [
        f"quick 档位：每类最多 {settings.per_class_limit} 张训练图（再分层划出 {settings.val_fraction:.0%} 作验证集），"
        f"{settings.image_size} 像素，{settings.epochs} 轮，批量 {settings.batch_size}；测试集是 val/ 的全部 1078 张。",
        "数据：模拟的 fruit30（30 类，train/ 4376 张、val/ 1078 张，800×600 JPEG，比真实的 fruit30 图片大，估计偏保守）。",
        "权重：随机初始化、以官方文件名放进临时 TORCH_HOME 的 ResNet-18，只为让 quick 档位能运行；"
        "用时与权重取值无关，这次运行的准确率没有意义，输出跑完即删。",
        "命令：python -m course_utils run --profile quick（含 solutions/ 里的参考答案，不生成讲义）。",
    ]
    return Section("course", "附：quick 档位整个课程的用时（模拟 fruit30）", rows, notes), []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="（内部）在子进程里执行 quick 档位的全部笔记本")
    parser.add_argument("--drive", action="store_true", required=True)
    parser.parse_args(argv)
    print(json.dumps(drive(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
