"""课程自带的演示数据集：用 PIL 和 NumPy 现场“画”出来的水果照片，不需要下载。

目录结构与类名都取自 fruit30（``root/train/<类名>/*.jpg``、``root/val/<类名>/*.jpg``）。每张图的背景、位置、大小、
角度、光照、遮挡和噪声都不同；有几组类别故意画得很像（苹果-红 与 西红柿、苹果-红 与 苹果-青、柠檬 与 芒果 / 脐橙），
这样三种迁移学习策略才会拉开差距。同一个随机种子生成的文件逐字节相同。
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from .progress import progress_bar

__all__: list[str] = []  # 只供包内使用：笔记本通过 cu.prepare_dataset 生成演示数据

MARKER = ".demo-dataset.json"  # 生成完成后写入，记录生成参数；参数相同就不再重画
DRAWING_VERSION = 2  # 画法有任何改动就加 1：已经生成的旧数据会自动重画
SUPERSAMPLE = 2  # 先在 2 倍大小的画布上画，再缩小，边缘更平滑


# ---------------------------------------------------------------- 颜色与形状的小工具
def _hsv(rng, hue, sat, val, jitter=(6.0, 0.08, 0.08), alpha=255):
    """色相（度）、饱和度、明度各加一点随机抖动，返回 RGBA 元组。"""
    h = ((hue + rng.normal(0, jitter[0])) % 360) / 360
    s = min(1.0, max(0.0, sat + rng.normal(0, jitter[1])))
    v = min(1.0, max(0.0, val + rng.normal(0, jitter[2])))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255), alpha


def _shade(color, factor, alpha=None):
    """把颜色调暗（factor < 1）或调亮（factor > 1）。"""
    rgb = [int(min(255, max(0, c * factor))) for c in color[:3]]
    return (*rgb, color[3] if alpha is None else alpha)


def _curve(cx, cy, rx, ry, radius_fn=None, n=120):
    """参数曲线围成的多边形：椭圆，可用 radius_fn(t) 调整每个方向的半径（t=−π/2 朝上）。"""
    ks = [(t, radius_fn(t) if radius_fn else 1.0) for t in np.linspace(-math.pi, math.pi, n, endpoint=False)]
    return [(cx + rx * k * math.cos(t), cy + ry * k * math.sin(t)) for t, k in ks]


def _blur(layer, radius):
    """高斯模糊，但只处理有内容的区域（其余全透明），比模糊整张画布快得多。"""
    box = layer.getbbox()
    if box is None:
        return layer
    m = int(3 * radius) + 2
    box = (max(0, box[0] - m), max(0, box[1] - m), min(layer.width, box[2] + m), min(layer.height, box[3] + m))
    out = layer.copy()
    out.paste(layer.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return out


@contextmanager
def _texture(layer, blur=0.0, mask=None):
    """给果实画纹理：with 块里用产出的画笔画在透明图层上，结束时（先模糊 blur）按蒙版贴回果实。
    mask 默认是进入 with 时果实的轮廓，纹理不会画到果实外面。"""
    mask = layer.getchannel("A").copy() if mask is None else mask
    texture = Image.new("RGBA", layer.size, (0, 0, 0, 0))
    yield ImageDraw.Draw(texture)
    _paint_inside(layer, mask, _blur(texture, blur) if blur else texture)


def _paint_inside(layer, mask, texture):
    """把纹理图层按蒙版贴到果实图层上（纹理不会画到果实外面）。"""
    alpha = np.minimum(np.asarray(texture.getchannel("A")), np.asarray(mask))
    texture.putalpha(Image.fromarray(alpha.astype(np.uint8)))
    layer.alpha_composite(texture)


def _dots(rng, draw, cx, cy, rx, ry, count, dot, color_fn):
    """在椭圆范围内随机撒点（果皮上的斑点、毛孔、籽）。"""
    for _ in range(count):
        a, r = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
        x, y = cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)
        d = dot * rng.uniform(0.6, 1.3)
        draw.ellipse([x - d, y - d * 0.8, x + d, y + d * 0.8], fill=color_fn())


def _gloss(layer, rng, cx, cy, rx, ry, strength):
    """高光：果实左上方一块模糊的白色椭圆。"""
    spot = Image.new("RGBA", layer.size, (255, 255, 255, 0))
    hx, hy = cx - rx * rng.uniform(0.25, 0.45), cy - ry * rng.uniform(0.3, 0.5)
    w, h = rx * rng.uniform(0.18, 0.3), ry * rng.uniform(0.1, 0.2)
    ImageDraw.Draw(spot).ellipse([hx - w, hy - h, hx + w, hy + h], fill=(255, 255, 255, int(255 * strength)))
    _paint_inside(layer, layer.getchannel("A"), _blur(spot, layer.width * 0.012))


def _stem(draw, rng, x, y, length, width):
    """果柄：一段略弯的褐色粗线。"""
    color = _hsv(rng, 30, 0.6, 0.35)
    bend = rng.uniform(-0.4, 0.4) * length
    draw.line([(x, y), (x + bend * 0.5, y - length * 0.6), (x + bend, y - length)], fill=color, width=int(width))


def _leaf(draw, rng, x, y, length, angle):
    """一片叶子：两段圆弧围成的尖叶形，中间一条叶脉。"""
    color = _hsv(rng, 110, 0.65, 0.55)
    ux, uy = math.cos(angle), math.sin(angle)
    px, py = -uy, ux
    # 先沿叶脉一侧从叶柄走到叶尖，再沿另一侧走回来
    sides = [(s, length * 0.28 * math.sin(math.pi * s) * side)
             for side, ends in ((1, (0, 1)), (-1, (1, 0))) for s in np.linspace(*ends, 24)]
    draw.polygon([(x + ux * length * s + px * w, y + uy * length * s + py * w) for s, w in sides], fill=color)
    draw.line([(x, y), (x + ux * length * 0.9, y + uy * length * 0.9)], fill=_shade(color, 0.7), width=2)


def _star(draw, cx, cy, r_out, r_in, points, color, rotation=0.0):
    """星形（西红柿和草莓顶上的绿色萼片）：外角半径 r_out 与内角半径 r_in 交替。"""
    tips = [(r_in if i % 2 else r_out, rotation - math.pi / 2 + i * math.pi / points) for i in range(points * 2)]
    draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in tips], fill=color)


# ---------------------------------------------------------------- 每种水果怎么画
# 每个函数用画笔 draw 在透明图层 layer 上以 (cx, cy) 为中心、R 为大致半径画一个“正立”的水果。
def _apple(layer, draw, rng, cx, cy, R, *, skin, streak):
    """苹果：skin 是果皮的 (色相, 饱和度, 明度)，streak 是条纹的 (色相, 饱和度, 明度, 不透明度)。"""
    dent = rng.uniform(0.12, 0.22)
    def radius(t):  # 顶部凹进去一块（果柄处），底部略收窄
        return (1 - dent * math.exp(-((t + math.pi / 2) / 0.35) ** 2)) * (1 - 0.1 * max(0.0, math.sin(t)))

    shape = _curve(cx, cy, R, R * rng.uniform(0.86, 0.96), radius)
    color = _hsv(rng, *skin)
    draw.polygon(shape, fill=color)
    with _texture(layer, blur=R * 0.03) as tdraw:
        for _ in range(int(rng.integers(5, 12))):  # 竖向的条纹
            x = cx + rng.uniform(-0.8, 0.8) * R
            tdraw.line([(x, cy - R), (x + rng.uniform(-0.2, 0.2) * R, cy + R)],
                       fill=_hsv(rng, *streak[:3], alpha=streak[3]), width=int(R * rng.uniform(0.04, 0.1)))
        _dots(rng, tdraw, cx, cy, R * 0.85, R * 0.8, 40, R * 0.018, lambda: _shade(color, 1.35, 150))
    _gloss(layer, rng, cx, cy, R, R, rng.uniform(0.35, 0.6))
    top = cy - R * (1 - dent) * 0.92
    _stem(draw, rng, cx, top + R * 0.08, R * rng.uniform(0.3, 0.45), R * 0.07)
    if rng.random() < 0.5:
        _leaf(draw, rng, cx + R * 0.03, top - R * 0.12, R * rng.uniform(0.45, 0.7), rng.uniform(-2.8, -1.9))


def _tomato(layer, draw, rng, cx, cy, R):
    lobes, phase = int(rng.integers(4, 7)), rng.uniform(0, math.pi)
    shape = _curve(cx, cy, R * 1.04, R * rng.uniform(0.8, 0.9), lambda t: 1 + 0.035 * math.cos(lobes * t + phase))
    draw.polygon(shape, fill=_hsv(rng, 4, 0.88, 0.82))
    _gloss(layer, rng, cx, cy, R, R, rng.uniform(0.6, 0.85))  # 西红柿比苹果更亮
    top = cy - R * 0.8
    _star(draw, cx, top, R * rng.uniform(0.32, 0.45), R * 0.08, int(rng.integers(5, 7)),
          _hsv(rng, 105, 0.7, 0.5), rotation=rng.uniform(0, 1))
    draw.ellipse([cx - R * 0.05, top - R * 0.12, cx + R * 0.05, top + R * 0.02], fill=_hsv(rng, 100, 0.6, 0.4))


def _citrus_texture(layer, rng, cx, cy, rx, ry, color, count):
    """柑橘类果皮上的小油胞：深浅不一的小点。"""
    with _texture(layer) as tdraw:
        _dots(rng, tdraw, cx, cy, rx, ry, count, rx * 0.02, lambda: _shade(color, rng.choice([0.82, 1.12]), 140))


def _lemon(layer, draw, rng, cx, cy, R):
    rx, ry = R * rng.uniform(1.15, 1.3), R * rng.uniform(0.8, 0.9)
    color = _hsv(rng, 53, 0.82, 0.93)
    # 两头各有一个小尖：在左右方向把半径拉长
    draw.polygon(_curve(cx, cy, rx, ry, lambda t: 1 + 0.16 * math.cos(t) ** 12), fill=color)
    _citrus_texture(layer, rng, cx, cy, rx * 0.9, ry * 0.85, color, 110)
    _gloss(layer, rng, cx, cy, rx, ry, 0.3)


def _orange(layer, draw, rng, cx, cy, R):
    color = _hsv(rng, 29, 0.9, 0.94, jitter=(3, 0.05, 0.05))
    draw.ellipse([cx - R, cy - R * 0.96, cx + R, cy + R * 0.96], fill=color)
    _citrus_texture(layer, rng, cx, cy, R * 0.9, R * 0.88, color, 160)
    if rng.random() < 0.6:  # 脐橙的“肚脐”
        nx, ny = cx + rng.uniform(-0.3, 0.3) * R, cy + rng.uniform(-0.2, 0.4) * R
        draw.ellipse([nx - R * 0.1, ny - R * 0.09, nx + R * 0.1, ny + R * 0.09], fill=_shade(color, 0.7))
    else:
        _star(draw, cx, cy - R * 0.9, R * 0.1, R * 0.04, 5, _hsv(rng, 95, 0.6, 0.45))
    _gloss(layer, rng, cx, cy, R, R, 0.25)


def _mango(layer, draw, rng, cx, cy, R):
    bend = rng.uniform(0.1, 0.22)
    shape = [(x + bend * R * (1 - ((y - cy) / R) ** 2), y)
             for x, y in _curve(cx, cy, R * 0.82, R * 1.12, lambda t: 1 + 0.08 * math.sin(t))]
    base = _hsv(rng, 46, 0.85, 0.93)
    draw.polygon(shape, fill=base)
    with _texture(layer, blur=R * 0.35) as bdraw:
        side = rng.choice([-1, 1])  # 一侧泛绿或泛红
        tint = _hsv(rng, rng.choice([95, 10]), 0.7, 0.7, alpha=int(rng.uniform(120, 200)))
        bdraw.ellipse([cx + side * R * 0.2 - R * 0.8, cy - R * 1.1, cx + side * R * 0.2 + R * 0.5, cy + R * 0.2],
                      fill=tint)
    _dots(rng, draw, cx, cy, R * 0.7, R * 0.95, 25, R * 0.012, lambda: _shade(base, 0.75))
    _gloss(layer, rng, cx, cy, R * 0.8, R, 0.3)


def _banana_one(draw, rng, cx, cy, R, color):
    """一根香蕉：沿圆弧的弯曲长条，两头细。"""
    arc_r = R * rng.uniform(1.4, 1.9)
    ox, oy = cx, cy - arc_r * 0.75
    a0, a1 = math.radians(rng.uniform(35, 50)), math.radians(rng.uniform(130, 145))
    width = R * rng.uniform(0.28, 0.36)
    arc = [(a0 + (a1 - a0) * s, width * (math.sin(math.pi * s) ** 0.6)) for s in np.linspace(0, 1, 40)]
    # 外缘、内缘（只有外缘一半多宽）和表面的棱，都沿同一段圆弧
    outer, inner, ridge = ([(ox + (arc_r + k * w) * math.cos(a), oy + (arc_r + k * w) * math.sin(a)) for a, w in arc]
                           for k in (1, -0.6, 0.3))
    draw.polygon(outer + inner[::-1], fill=color)
    draw.line(ridge, fill=_shade(color, 0.85), width=max(1, int(R * 0.03)))
    for end in (outer[0], outer[-1]):  # 两头深褐色的蒂
        r = R * 0.07
        draw.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=_hsv(rng, 30, 0.6, 0.3))


def _banana(layer, draw, rng, cx, cy, R):
    color = _hsv(rng, rng.choice([52, 58, 70]), 0.82, 0.92)
    for k in range(int(rng.integers(1, 4))):  # 一到三根一串
        _banana_one(draw, rng, cx + k * R * 0.15, cy + k * R * 0.18, R, _shade(color, 1 - 0.07 * k))
    with _texture(layer) as sdraw:
        _dots(rng, sdraw, cx, cy, R * 1.3, R * 0.8, int(rng.integers(0, 40)), R * 0.02,
              lambda: _hsv(rng, 30, 0.7, 0.35, alpha=200))


def _watermelon(layer, draw, rng, cx, cy, R):
    if rng.random() < 0.5:  # 整个西瓜：浅绿底色上的深绿锯齿条纹
        rx, ry = R * 1.15, R * 0.95
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_hsv(rng, 100, 0.55, 0.65))
        with _texture(layer) as sdraw:
            dark = _hsv(rng, 125, 0.75, 0.28)
            for k in np.linspace(-1, 1, int(rng.integers(6, 9))):
                sdraw.line([(cx + k * rx * math.cos(math.asin(max(-1, min(1, v)))) + R * 0.05 * math.sin(v * 18),
                             cy + v * ry) for v in np.linspace(-1, 1, 40)], fill=dark, width=int(R * 0.12))
        _gloss(layer, rng, cx, cy, rx, ry, 0.25)
    else:  # 一块西瓜：红瓤、白边、绿皮、黑籽
        a0 = rng.uniform(0, 0.3)
        box = [cx - R * 1.2, cy - R * 1.0, cx + R * 1.2, cy + R * 1.4]
        for inset, hsv in ((0, (120, 0.7, 0.45)), (0.1, (60, 0.25, 0.92)), (0.18, (354, 0.72, 0.9))):
            d = R * inset  # 绿皮、白边、红瓤一层套一层
            draw.pieslice([box[0] + d, box[1] + d, box[2] - d, box[3] - d], 180 + a0 * 60, 360 - a0 * 60,
                          fill=_hsv(rng, *hsv))
        for _ in range(int(rng.integers(6, 14))):  # 籽：在扇形的红瓤里按极坐标撒
            a, d = math.radians(rng.uniform(200, 340)), R * rng.uniform(0.35, 0.85)
            x, y = cx + d * math.cos(a), cy + R * 0.2 + d * 0.9 * math.sin(a)
            draw.ellipse([x - R * 0.035, y - R * 0.05, x + R * 0.035, y + R * 0.05], fill=(25, 20, 20, 255))


def _strawberry(layer, draw, rng, cx, cy, R):
    # 上宽下尖的心形：半径随角度变化，底部收成尖
    shape = _curve(cx, cy, R * 0.85, R, lambda t: 1 - 0.3 * max(0.0, math.sin(t)) ** 3 + 0.15 * max(0.0, -math.sin(t)))
    shape = [(x + (x - cx) * -0.35 * max(0.0, (y - cy) / R), y) for x, y in shape]
    color = _hsv(rng, 356, 0.85, 0.85)
    draw.polygon(shape, fill=color)
    with _texture(layer) as sdraw:
        step = R * rng.uniform(0.17, 0.22)
        for row, y in enumerate(np.arange(cy - R, cy + R, step)):  # 籽交错排开
            for x in np.arange(cx - R + (row % 2) * step / 2, cx + R, step):
                sdraw.ellipse([x - R * 0.025, y - R * 0.04, x + R * 0.025, y + R * 0.04], fill=_hsv(rng, 50, 0.6, 0.95))
    _gloss(layer, rng, cx, cy, R * 0.8, R, 0.4)
    _star(draw, cx, cy - R * 0.92, R * rng.uniform(0.4, 0.55), R * 0.12, int(rng.integers(5, 8)),
          _hsv(rng, 110, 0.7, 0.5), rotation=rng.uniform(0, 1))


def _grapes(layer, draw, rng, cx, cy, R):
    color, r = _hsv(rng, 325, 0.6, 0.45), R * rng.uniform(0.2, 0.25)
    draw.line([(cx, cy - R * 1.05), (cx + R * 0.05, cy - R * 1.35)], fill=_hsv(rng, 90, 0.5, 0.35), width=int(R * 0.06))
    for i, count in enumerate([5, 5, 4, 4, 3, 2, 1]):  # 倒三角排列的一串葡萄
        y = cy - R * 0.95 + i * r * 1.55
        for j in range(count):
            x = cx + (j - (count - 1) / 2) * r * 1.7 + rng.normal(0, r * 0.15)
            c = _shade(color, rng.uniform(0.8, 1.2))
            draw.ellipse([x - r, y - r * 1.1, x + r, y + r * 1.1], fill=c)
            draw.ellipse([x - r * 0.55, y - r * 0.7, x - r * 0.2, y - r * 0.35], fill=_shade(c, 1.6))


def _kiwi(layer, draw, rng, cx, cy, R):
    skin = _hsv(rng, 32, 0.55, 0.45)
    if rng.random() < 0.5:  # 整个猕猴桃：褐色、毛茸茸
        draw.ellipse([cx - R * 1.15, cy - R * 0.9, cx + R * 1.15, cy + R * 0.9], fill=skin)
        with _texture(layer) as fdraw:
            _dots(rng, fdraw, cx, cy, R * 1.1, R * 0.85, 260, R * 0.02,
                  lambda: _shade(skin, rng.choice([0.7, 1.3]), 160))
    else:  # 切开的猕猴桃：褐色外圈、绿色果肉、浅色中心、一圈黑籽
        draw.ellipse([cx - R, cy - R * 0.92, cx + R, cy + R * 0.92], fill=skin)
        draw.ellipse([cx - R * 0.93, cy - R * 0.85, cx + R * 0.93, cy + R * 0.85], fill=_hsv(rng, 78, 0.8, 0.72))
        for k in range(int(rng.integers(22, 34))):
            a, d = k * 2 * math.pi / 30 + rng.normal(0, 0.05), R * rng.uniform(0.3, 0.42)
            x, y = cx + d * math.cos(a), cy + d * 0.92 * math.sin(a)
            draw.ellipse([x - R * 0.03, y - R * 0.03, x + R * 0.03, y + R * 0.03], fill=(20, 20, 15, 255))
        draw.ellipse([cx - R * 0.25, cy - R * 0.22, cx + R * 0.25, cy + R * 0.22], fill=_hsv(rng, 60, 0.25, 0.92))


def _dragon_fruit(layer, draw, rng, cx, cy, R):
    draw.ellipse([cx - R * 0.85, cy - R, cx + R * 0.85, cy + R], fill=_hsv(rng, 330, 0.75, 0.85))
    for k in range(int(rng.integers(9, 14))):  # 鳞片：绿色尖端的三角
        a = rng.uniform(0, 2 * math.pi)
        bx, by = cx + R * 0.75 * math.cos(a), cy + R * 0.9 * math.sin(a)
        tx, ty = bx + R * 0.35 * math.cos(a - 0.5), by + R * 0.35 * math.sin(a - 0.5)
        draw.polygon([(bx - R * 0.1, by), (bx + R * 0.1, by), (tx, ty)], fill=_hsv(rng, 95, 0.65, 0.6))
    _gloss(layer, rng, cx, cy, R * 0.85, R, 0.35)


def _pineapple(layer, draw, rng, cx, cy, R):
    for k in range(7):  # 顶上的叶冠
        a = -math.pi / 2 + (k - 3) * 0.28
        draw.polygon([(cx - R * 0.1, cy - R * 0.75), (cx + R * 0.1, cy - R * 0.75),
                      (cx + R * 1.0 * math.cos(a), cy - R * 0.75 + R * 0.9 * math.sin(a))],
                     fill=_hsv(rng, 120, 0.6, 0.45))
    color, body = _hsv(rng, 38, 0.85, 0.78), [cx - R * 0.75, cy - R * 0.85, cx + R * 0.75, cy + R * 1.05]
    draw.ellipse(body, fill=color)
    mask = Image.new("L", layer.size, 0)  # 纹理只画在果身上，不画到叶冠上
    ImageDraw.Draw(mask).ellipse(body, fill=255)
    with _texture(layer, mask=mask) as gdraw:
        for k in np.arange(-2, 2, 0.28):  # 交叉的斜线：菠萝的菱形格
            for s in (1, -1):
                gdraw.line([(cx + k * R - s * R, cy - R), (cx + k * R + s * R, cy + R)], fill=_shade(color, 0.6),
                           width=int(R * 0.04))


# 类名 -> (画法, 允许旋转的最大角度)。顺序固定：它决定每个类别的随机数流，不要调整已有项的顺序。
DEMO_FRUITS = {
    "苹果-红": (functools.partial(_apple, skin=(356, 0.78, 0.72), streak=(20, 0.7, 0.9, 90)), 25),
    "苹果-青": (functools.partial(_apple, skin=(82, 0.62, 0.8), streak=(60, 0.5, 0.95, 70)), 25),
    "西红柿": (_tomato, 25),
    "柠檬": (_lemon, 60),
    "脐橙": (_orange, 30),
    "芒果": (_mango, 50),
    "香蕉": (_banana, 70),
    "西瓜": (_watermelon, 25),
    "草莓": (_strawberry, 30),
    "葡萄-红": (_grapes, 20),
    "猕猴桃": (_kiwi, 40),
    "火龙果": (_dragon_fruit, 30),
    "菠萝": (_pineapple, 15),
}


# ---------------------------------------------------------------- 背景、阴影、遮挡、噪声
def _background(rng, size):
    """桌面背景：纯色渐变、木纹、格子布、墙面与桌面三选一，颜色随机（也可能和水果同色）。"""
    kind = rng.choice(["plain", "wood", "cloth", "table"])
    base = _hsv(rng, rng.uniform(0, 360), rng.uniform(0.05, 0.55), rng.uniform(0.45, 0.95), jitter=(0, 0, 0))
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = np.ones((size, size, 3), np.float32) * np.array(base[:3], np.float32) * (1.05 - 0.25 * y)
    if kind == "wood":
        wood = np.array(_hsv(rng, 30, 0.5, 0.6)[:3])
        waves = np.sin(np.linspace(0, rng.uniform(20, 40), size)[None, :] + 3 * np.sin(y[:, :, 0] * 6))[:, :, None]
        img = wood * (0.85 + 0.12 * waves) * np.ones((size, size, 1))
    elif kind == "cloth":
        cell = int(size / rng.uniform(5, 10))
        yy, xx = np.mgrid[0:size, 0:size]
        img = img * (0.8 + 0.2 * (((yy // cell) + (xx // cell)) % 2)[:, :, None])  # 棋盘格
    elif kind == "table":
        horizon = int(size * rng.uniform(0.25, 0.5))
        img[horizon:] = np.array(_hsv(rng, rng.uniform(0, 360), 0.3, 0.6)[:3])
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _lighting(layer, rng, cx, cy, R):
    """给果实加明暗：朝光的一侧亮、背光和边缘暗，让它看起来是立体的。"""
    box = layer.getbbox()
    if box is None:
        return layer
    arr = np.asarray(layer.crop(box)).astype(np.float32)  # 只算果实所在的矩形区域
    yy, xx = np.ogrid[box[1]:box[3], box[0]:box[2]]
    angle = rng.uniform(-2.6, -1.8)  # 光大致从左上方来
    lx, ly = math.cos(angle), math.sin(angle)
    rx = max(cx - box[0], box[2] - cx, 1.0)  # 按果实的实际宽高归一化：长条的柠檬、香蕉两头不会过暗
    ry = max(cy - box[1], box[3] - cy, 1.0)
    dx, dy = (xx - cx) / rx, (yy - cy) / ry
    light = 1.0 + 0.22 * np.clip(dx * lx + dy * ly, -1.5, 1.5) - 0.28 * np.clip(dx**2 + dy**2, 0, 1.2) ** 1.5
    arr[:, :, :3] = np.minimum(arr[:, :, :3] * np.clip(light, 0.45, 1.3)[:, :, None], 255)
    out = layer.copy()
    out.paste(Image.fromarray(arr.astype(np.uint8), "RGBA"), box[:2])
    return out


def _shadow(size, rng, cx, cy, R):
    """果实投在桌面上的模糊阴影。"""
    shadow = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ox, oy = R * rng.uniform(0.05, 0.3), R * rng.uniform(0.5, 0.8)
    ImageDraw.Draw(shadow).ellipse([cx - R + ox, cy + oy - R * 0.35, cx + R + ox, cy + oy + R * 0.35],
                                   fill=(0, 0, 0, int(rng.uniform(60, 120))))
    return _blur(shadow, size * 0.03)


def _occluder(size, rng):
    """部分遮挡：一片叶子、盘子边缘或者另一个模糊的物体挡住画面的一角。"""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    kind = rng.choice(["leaf", "plate", "blob"])
    corner = rng.choice([-1, 1], size=2)
    x0, y0 = size / 2 + corner[0] * size * 0.5, size / 2 + corner[1] * size * 0.5
    if kind == "leaf":
        _leaf(draw, rng, x0, y0, size * rng.uniform(0.4, 0.6), math.atan2(-corner[1], -corner[0]) + rng.normal(0, 0.3))
    elif kind == "plate":
        r = size * rng.uniform(0.35, 0.5)
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_hsv(rng, 40, 0.05, 0.95, jitter=(0, 0.03, 0.03)))
    else:
        r = size * rng.uniform(0.15, 0.3)
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_hsv(rng, rng.uniform(0, 360), 0.5, 0.6))
        layer = _blur(layer, size * 0.02)
    return layer


def _rotated_patch(layer, angle, cx, cy):
    """绕 (cx, cy) 旋转图层里的果实；只旋转包住果实的正方形区域，返回 (旋转后的区域, 左上角坐标)。"""
    box = layer.getbbox() or (0, 0, 1, 1)
    half = max(math.hypot(x - cx, y - cy) for x in box[::2] for y in box[1::2]) + 2
    area = (max(0, int(cx - half)), max(0, int(cy - half)),
            min(layer.width, int(cx + half) + 1), min(layer.height, int(cy + half) + 1))
    patch = layer.crop(area).rotate(angle, resample=Image.Resampling.BILINEAR, center=(cx - area[0], cy - area[1]))
    return patch, area[:2]


def draw_fruit_image(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """画一张 size×size 的水果照片（RGB）；name 是 DEMO_FRUITS 里的类名，同一个 rng 状态画出同一张图。"""
    if name not in DEMO_FRUITS:
        raise KeyError(f"演示数据集里没有“{name}”这一类。可选：{'、'.join(DEMO_FRUITS)}。")
    drawer, max_rotation = DEMO_FRUITS[name]
    S = size * SUPERSAMPLE
    canvas = _background(rng, S).convert("RGBA")
    R = S * rng.uniform(0.2, 0.34)  # 果实大小
    cx, cy = S * rng.uniform(0.32, 0.68), S * rng.uniform(0.35, 0.68)  # 位置
    canvas.alpha_composite(_shadow(S, rng, cx, cy, R))
    fruit = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    drawer(fruit, ImageDraw.Draw(fruit), rng, cx, cy, R)
    fruit = _lighting(fruit, rng, cx, cy, R)
    patch, corner = _rotated_patch(fruit, rng.uniform(-max_rotation, max_rotation), cx, cy)
    canvas.alpha_composite(patch, dest=corner)
    if rng.random() < 0.25:  # 四分之一的图有部分遮挡
        canvas.alpha_composite(_occluder(S, rng))
    image = canvas.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.15))  # 曝光
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.75, 1.2))  # 饱和度
    noise = rng.normal(0, rng.uniform(0, 7), (size, size, 3))  # 传感器噪声
    pixels = np.clip(np.asarray(image).astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


# ---------------------------------------------------------------- 生成整个数据集
def _draw_and_save(job) -> None:
    path, name, is_test, index, image_size, seed = job
    # 每张图有自己的随机数流：只取决于种子、类别、划分和序号
    rng = np.random.default_rng([seed, list(DEMO_FRUITS).index(name), int(is_test), index])
    draw_fruit_image(name, image_size, rng).save(path, quality=90)


def generate_demo_dataset(root, *, classes, train_per_class: int, test_per_class: int, image_size: int,
                          seed: int) -> Path:
    """生成演示数据集（fruit30 的目录结构：``root/train/<类名>/``、``root/val/<类名>/``），返回 root。

    classes 取自 DEMO_FRUITS；train_per_class / test_per_class 是每类放进 train/、val/ 的张数；同一个 seed 逐字节相同。
    相同参数完整生成过（有标记文件）就直接返回；先画到临时目录，画完才改名为 root；被打断的残留会清掉重来。
    """
    root = Path(root)
    spec = {"version": DRAWING_VERSION, "classes": list(classes), "train_per_class": int(train_per_class),
            "test_per_class": int(test_per_class), "image_size": int(image_size), "seed": int(seed)}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == spec:
        return root
    if root.exists() and not marker.is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} 已经存在，而且不是课程生成的演示数据集。换一个目录，或先把它移走。")
    unknown = [c for c in classes if c not in DEMO_FRUITS]
    if unknown:
        raise KeyError(f"演示数据集不会画这些类别：{'、'.join(unknown)}。可选：{'、'.join(DEMO_FRUITS)}。")
    for leftover in root.parent.glob(f"{root.name}.partial*"):  # 以前被打断的生成留下的临时目录
        if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 600:  # 10 分钟内的可能还有进程在写
            shutil.rmtree(leftover, ignore_errors=True)
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")  # 每个进程各用一个临时目录
    shutil.rmtree(partial, ignore_errors=True)
    jobs = [(partial / split / name / f"{i + 1:04d}.jpg", name, split == "val", i, image_size, seed)
            for split, count in (("train", train_per_class), ("val", test_per_class))
            for name in classes for i in range(count)]
    for path in {job[0].parent for job in jobs}:
        path.mkdir(parents=True, exist_ok=True)
    # 多线程一起画（PIL 和 NumPy 的大部分运算不占 GIL）；每张图的内容与线程和顺序无关
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(progress_bar(pool.map(_draw_and_save, jobs), total=len(jobs), desc=f"生成演示数据 {root.name}",
                          disable=len(jobs) < 200))
    (partial / MARKER).write_text(json.dumps(spec, ensure_ascii=False, indent=2), encoding="utf-8")
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == spec:
        shutil.rmtree(partial)  # 另一个笔记本同时生成完了同样的数据：用它的
        return root
    if root.exists():
        shutil.rmtree(root)  # 旧版本（参数或画法不同）的演示数据集，带着我们的标记文件
    partial.rename(root)
    return root
