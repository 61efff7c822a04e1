"""数据健康检查：训练之前先给数据集“体检”，别让坏数据悄悄毁掉实验。

检查项：读不出来或被截断的文件、非 RGB 模式（灰度 L、带透明 RGBA、调色板 P、印刷用 CMYK）、太小的图片、
没有图片的类别、train/ 与 val/ 类别不一致、类别不均衡，以及造成*数据泄漏*（data leakage）、让成绩虚高的重复：
跨划分或 train/ 内部（验证集从 train/ 划出）的完全重复（文件哈希相同）与近似重复（明暗指纹和粗略的颜色都相近，
如缩放或重新压缩过的同一张图；形状一样、颜色不同的两种水果不算）。近似重复每组彼此相像的图报告一行、写明张数。
任何一个坏文件都不会让检查本身崩溃。
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import SPLITS, has_image_extension, is_junk_name, list_classes
from .progress import progress_bar

__all__ = ["check_dataset"]

LEVELS = ("错误", "警告", "提示")  # 错误：会让训练出错或结果不可信；警告：最好处理；提示：了解即可
PROBLEM_COLUMNS = ["级别", "问题", "划分", "类别", "文件", "说明"]
HASH_SIZE = 16  # 差值哈希（dHash）的边长：16×16 = 256 位
HASH_MARGIN = 2  # 右边比左边亮超过这么多个灰度级才记 1：纯色背景里相邻像素几乎一样亮，不让噪声随机翻转指纹位
COLOUR_CELLS = 4  # 颜色签名：把图缩成 4×4 个格子，每格的平均颜色（RGB）
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # 灰度图：和别的图只比明暗，不比颜色
LISTED_FILES = 8  # 一组近似重复的图，说明里最多列出这么多个文件名


@dataclass
class DatasetReport:
    """健康检查的结果：problems（问题表）、images（每张图的信息）、counts（每类张数）、summary（中文总结）。"""

    root: Path
    images: object  # pandas.DataFrame
    problems: object  # pandas.DataFrame，列见 PROBLEM_COLUMNS
    counts: object  # pandas.DataFrame：行是类别，列是 train / val
    summary: str

    @property
    def ok(self) -> bool:
        """没有“错误”级别的问题。"""
        return not (self.problems["级别"] == "错误").any()

    def _repr_html_(self) -> str:
        html = f"<p><b>数据健康检查</b>：{self.summary}</p>"
        if len(self.problems):
            html += self.problems.head(30).to_html(index=False)
            if len(self.problems) > 30:
                html += f"<p>……共 {len(self.problems)} 条，完整列表见 <code>report.problems</code>。</p>"
        return html

    def __repr__(self) -> str:
        text = f"数据健康检查：{self.summary}"
        if len(self.problems):
            text += "\n" + self.problems.head(30).to_string(index=False)
        return text


def _dhash(image: Image.Image) -> np.ndarray:
    """差值哈希：缩成 (HASH_SIZE+1)×HASH_SIZE 的灰度图，比较左右相邻像素的明暗（右边亮出 HASH_MARGIN 以上记 1），
    得到 256 位指纹。它只看明暗结构，不看颜色：形状相同的红苹果和猕猴桃指纹几乎一样，所以还要比颜色签名。"""
    small = np.asarray(image.convert("L").resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.packbits((small[:, 1:] > small[:, :-1] + HASH_MARGIN).ravel())


def _colour_signature(image: Image.Image) -> np.ndarray:
    """颜色签名：COLOUR_CELLS×COLOUR_CELLS 个格子的平均颜色，形状 (格子数, 3)，取值 0–255。
    重新压缩、缩放过的副本每格只差几个色阶；同样形状、颜色不同的水果在果实所在的格子里差几十上百。"""
    cells = image.convert("RGB").resize((COLOUR_CELLS, COLOUR_CELLS), Image.Resampling.BOX)
    return np.asarray(cells, dtype=np.float32).reshape(-1, 3)


def _inspect(path: Path) -> dict:
    """读一张图片的全部信息；出任何读图错误都记下来，而不是抛出。"""
    data = path.read_bytes()
    row = {"字节": len(data), "sha256": hashlib.sha256(data).hexdigest(), "宽": None, "高": None,
           "模式": None, "格式": None, "dhash": None, "颜色": None, "错误": None, "读取警告": None}
    with warnings.catch_warnings(record=True) as caught:  # 记录而不是屏蔽：写进报告
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data)) as image:
                row.update(宽=image.width, 高=image.height, 模式=image.mode, 格式=image.format)
                image.load()  # 完整解码一次，才能发现被截断的文件
                row["dhash"], row["颜色"] = _dhash(image), _colour_signature(image)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            kind = "图片被截断" if "truncated" in str(exc) else "无法读取"
            row["错误"] = (kind, f"{type(exc).__name__}: {str(exc)[:120]}")
    if caught:
        row["读取警告"] = "；".join(sorted({str(w.message)[:100] for w in caught}))
    return row


def _scan(root: Path, show_progress: bool | None):
    """列出全部文件并逐个检查，返回每张图片的表格和“不是图片”的文件列表。"""
    import pandas as pd

    files, others = [], []
    for split in SPLITS:
        for name in (list_classes(root / split) if (root / split).is_dir() else []):
            for path in sorted((root / split / name).rglob("*")):
                relative = path.relative_to(root / split / name)
                if not (path.is_dir() or any(is_junk_name(part) for part in relative.parts)):
                    (files if has_image_extension(path.name) else others).append((split, name, path))
    show = len(files) > 200 if show_progress is None else show_progress
    rows = [{"划分": split, "类别": name, "文件": path.relative_to(root).as_posix(), **_inspect(path)}
            for split, name, path in progress_bar(files, desc="检查图片", disable=not show)]
    columns = ["划分", "类别", "文件", "字节", "sha256", "宽", "高", "模式", "格式", "dhash", "颜色", "错误", "读取警告"]
    table = pd.DataFrame(rows, columns=columns)
    table[["宽", "高"]] = table[["宽", "高"]].astype("Int64")  # 读不出的图片没有尺寸，其余是整数
    return table, others


def _file_problems(images, min_size: int) -> list[dict]:
    """逐张图片的问题：读不出、被截断、非 RGB、太小、读取时有警告。"""
    found = []
    for row in images.itertuples(index=False):
        where = {"划分": row.划分, "类别": row.类别, "文件": row.文件}
        if row.错误 is not None:
            kind, detail = row.错误
            found.append({"级别": "错误", "问题": kind, **where, "说明": f"{detail}。删除或替换这个文件。"})
            continue
        if row.模式 != "RGB":
            found.append({"级别": "警告", "问题": "非 RGB 模式", **where,
                          "说明": f"颜色模式是 {row.模式}；课程加载时会自动转成 RGB，但最好确认图片本身没问题。"})
        if min(row.宽, row.高) < min_size:
            found.append({"级别": "警告", "问题": "图片太小", **where,
                          "说明": f"只有 {row.宽}×{row.高} 像素（小于 {min_size}），放大后几乎没有信息。"})
        if row.读取警告:
            found.append({"级别": "提示", "问题": "读取时有警告", **where, "说明": row.读取警告})
    return found


def _class_problems(counts, imbalance_ratio: float) -> list[dict]:
    """类别层面的问题：空类别、只在一个划分里出现的类别、类别不均衡。"""
    found = []
    for name, row in counts.iterrows():
        for split in SPLITS:
            if not row["_has_" + split]:
                other = SPLITS[1 - SPLITS.index(split)]
                found.append({"级别": "错误", "问题": "类别不一致", "划分": split, "类别": name, "文件": "",
                              "说明": f"{other}/ 里有这个类别，{split}/ 里没有。两边的类别子目录必须相同。"})
            elif row[split] == 0:
                found.append({"级别": "错误", "问题": "空类别", "划分": split, "类别": name, "文件": "",
                              "说明": f"{split}/{name}/ 里没有可用的图片。补上图片，或两边都删掉这个类别。"})
    for split in SPLITS:
        nonzero = counts[split][counts[split] > 0]
        if len(nonzero) >= 2 and nonzero.max() > imbalance_ratio * nonzero.min():
            found.append({"级别": "提示", "问题": "类别不均衡", "划分": split, "类别": "", "文件": "",
                          "说明": f"最多的“{nonzero.idxmax()}”有 {nonzero.max()} 张，最少的“{nonzero.idxmin()}”只有 "
                                  f"{nonzero.min()} 张（相差 {nonzero.max() / nonzero.min():.1f} 倍）。"
                                  "看整体准确率时要留意少数类别，最好同时看每类的召回率。"})
    return found


LEAK_TO_VALIDATION = ("验证集是从 train/ 里随机划出的：这样的两张图可能一张分进训练部分、一张分进验证部分，"
                      "验证准确率会虚高，挑选模型时被误导。")


def _duplicate_problems(images) -> list[dict]:
    """文件内容完全相同的图片：跨 train/ 与 val/ 是测试集泄漏，都在 train/ 里可能泄漏到验证集（都是警告），都在 val/ 里是提示。"""
    found = []
    for _, group in images[images["错误"].isna()].groupby("sha256"):
        if len(group) < 2:
            continue
        splits, classes = sorted(group["划分"].unique()), sorted(group["类别"].unique())
        if len(splits) > 1:
            problem, level = "跨划分重复（泄漏）", "警告"
            why = "同一张图既在训练集又在测试集，测试成绩会虚高；从其中一边删掉。"
        elif splits == ["train"]:
            problem, level, why = "train/ 内重复（泄漏到验证集）", "警告", LEAK_TO_VALIDATION + "只保留一份。"
        else:
            problem, level, why = "val/ 内重复", "提示", "同一张图在测试成绩里被算了好几次，只保留一份。"
        if len(classes) > 1:
            why += "而且它们分在不同的类别里，至少有一份标错了。"
        found.append({
            "级别": level, "问题": problem, "划分": "、".join(splits), "类别": "、".join(classes),
            "文件": group.iloc[0]["文件"], "说明": f"这些文件内容完全相同：{'、'.join(group['文件'])}。{why}",
        })
    return found


def _close_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, same: bool):
    """指纹 a[i] 与 b[j] 相差不超过 max_distance 位的 (i, j, 位数)；same=True 时 a 就是 b，只取 i < j。"""
    for start in range(0, len(a), 256):  # 分块计算，内存占用可控
        distance = np.bitwise_count(a[start:start + 256, None, :] ^ b[None, :, :]).sum(-1)
        for i, j in zip(*np.nonzero(distance <= max_distance)):
            if not same or start + i < j:
                yield start + i, j, int(distance[i, j])


def _colour_distance(a: np.ndarray, b: np.ndarray, gray: bool = False) -> float:
    """两个颜色签名最不一样的那个格子差多少（RGB 空间里的欧氏距离，0–441）；
    gray=True（有一张是灰度图）时只比每格的亮度（0–255）。"""
    if gray:
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return float(np.abs(a @ luma - b @ luma).max())
    return float(np.sqrt(((a - b) ** 2).sum(-1)).max())


def _look_alike_groups(pairs: list[tuple[int, int]], count: int) -> list[list[int]]:
    """把“两两相像”的图连成组（图的连通分量）：a 像 b、b 像 c，a、b、c 就是一组。组内按序号排好。"""
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in sorted({k for pair in pairs for k in pair}):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def _near_duplicate_problems(images, max_distance: int, max_colour: float) -> list[dict]:
    """明暗指纹相近（汉明距离 ≤ max_distance 位）而且颜色签名相近（≤ max_colour）、文件又不完全相同的图：
    只看 train/ 与 val/ 之间、以及 train/ 内部的图对；彼此相像的图连成一组，每组报告一行。"""
    readable = images[images["dhash"].notna()].reset_index(drop=True)
    is_train = (readable["划分"] == "train").to_numpy()
    train_index, val_index = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    if not len(train_index):
        return []
    hashes, sha = np.stack(readable["dhash"].to_list()), readable["sha256"].to_numpy()
    colours, gray = readable["颜色"].to_list(), readable["模式"].isin(GRAY_MODES).to_numpy()
    pairs, bits = [], {}
    for other, same in ((val_index, False), (train_index, True)):
        for i, j, distance in _close_pairs(hashes[train_index], hashes[other], max_distance, same):
            a, b = int(train_index[i]), int(other[j])
            if sha[a] == sha[b]:
                continue  # 完全相同的已经报告过
            if _colour_distance(colours[a], colours[b], gray[a] or gray[b]) > max_colour:
                continue  # 明暗结构一样、颜色不一样：形状相同的不同水果，不是副本
            pairs.append((a, b))
            bits[a] = max(bits.get(a, 0), distance)
            bits[b] = max(bits.get(b, 0), distance)
    found = []
    for group in _look_alike_groups(pairs, len(readable)):
        members = readable.iloc[group]
        files = sorted(members["文件"])
        splits = sorted(members["划分"].unique())
        if "val" in splits:
            problem = "跨划分近似重复（泄漏）"
            why = "同一张图的副本一边在训练集、一边在测试集，测试成绩会虚高。"
        else:
            problem, why = "train/ 内近似重复（泄漏到验证集）", LEAK_TO_VALIDATION
        listed = "、".join(files[:LISTED_FILES]) + ("……" if len(files) > LISTED_FILES else "")
        found.append({
            "级别": "警告", "问题": problem, "划分": "、".join(splits), "类别": "、".join(sorted(members["类别"].unique())),
            "文件": next(f for f in files if f.startswith("train/")),
            "说明": f"这一组 {len(files)} 张图几乎一样（明暗指纹最多相差 {max(bits[k] for k in group)} / "
                    f"{HASH_SIZE * HASH_SIZE} 位，颜色也相近）：{listed}。可能是同一张图缩放或重新压缩后的副本。"
                    f"{why}每组只留一张，或者确认它们确实是不同的照片。",
        })
    return found


def _summary(images, problems, counts) -> str:
    per_split = "，".join(f"{s} {int((images['划分'] == s).sum())} 张" for s in SPLITS)
    text = f"检查了 {len(images)} 张图片（{per_split}），{len(counts)} 个类别。"
    if problems.empty:
        return text + "没有发现问题。"
    tally = problems["级别"].value_counts()
    text += "发现 " + "、".join(f"{tally.get(level, 0)} 个{level}" for level in LEVELS) + "。"
    if tally.get("错误", 0):
        text += "先处理“错误”：它们会让训练出错或让结果不可信。"
    return text


def check_dataset(root, *, min_size: int = 32, imbalance_ratio: float = 3.0, near_duplicate_bits: int = 12,
                  near_duplicate_colour: float = 20, show_progress: bool | None = None) -> DatasetReport:
    """检查 ``root/train`` 与 ``root/val`` 两个划分里的全部图片，返回 DatasetReport。

    参数：
        min_size：短边小于它（像素）算“图片太小”；imbalance_ratio：同一划分里最多与最少的类别张数之比超过它算“类别不均衡”。
        near_duplicate_bits：两张图（train 与 val 之间，或都在 train 里）的明暗指纹（256 位）相差不超过这么多位，
            而且颜色签名相差不超过 near_duplicate_colour，才算“近似重复”；彼此相像的图合成一组，每组报告一行。
        near_duplicate_colour：颜色签名（4×4 格的平均颜色）里最不一样的格子允许差多少（RGB 欧氏距离，0–441）：
            重新压缩、缩放过的副本一般不到 10，颜色不同的水果（红苹果和猕猴桃）差 60 以上。
        show_progress：是否显示进度条；None 表示图片多于 200 张时显示。
    """
    import pandas as pd

    root = Path(root)
    classes = {split: set(list_classes(root / split)) if (root / split).is_dir() else set() for split in SPLITS}
    images, others = _scan(root, show_progress)
    readable = images[images["错误"].isna()]  # 只数能用的图片：全是坏文件的类别也算空类别
    counts = readable.groupby(["类别", "划分"]).size().unstack(fill_value=0).reindex(
        index=sorted(classes["train"] | classes["val"]), columns=list(SPLITS), fill_value=0)
    for split in SPLITS:
        counts["_has_" + split] = [name in classes[split] for name in counts.index]
    rows = _file_problems(images, min_size) + _class_problems(counts, imbalance_ratio)
    rows += _duplicate_problems(images) + _near_duplicate_problems(images, near_duplicate_bits, near_duplicate_colour)
    rows += [{"级别": "提示", "问题": "不是图片", "划分": s, "类别": n, "文件": p.relative_to(root).as_posix(),
              "说明": "扩展名不是常见图片格式，训练时会被忽略。"} for s, n, p in others]
    problems = pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
    problems["级别"] = pd.Categorical(problems["级别"], categories=LEVELS, ordered=True)
    problems = problems.sort_values(["级别", "问题", "划分", "文件"], kind="stable").reset_index(drop=True)
    counts = counts[list(SPLITS)]
    counts.columns.name = None
    return DatasetReport(root, images, problems, counts, _summary(images, problems, counts))
