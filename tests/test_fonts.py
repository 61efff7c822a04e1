"""中文字体：覆盖课程用到的每个字；PNG/PDF/SVG 里没有缺字警告；PDF 嵌入 TrueType；
幂等；优先 SimHei；不写 matplotlib 的安装目录；重建脚本；笔记本 00 的测试图。"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib as mpl
import nbformat
import pytest
import seaborn as sns
from fontTools import subset
from fontTools.ttLib import TTFont
from matplotlib import font_manager
from matplotlib.figure import Figure

import course_utils as cu
from course_utils import paths
from course_utils.paths import NOTEBOOKS_DIR, REPO_ROOT

# 汉字（含扩展 A）、中日韩符号和标点、全角字符
CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
FRUIT30 = (
    "哈密瓜 圣女果 山竹 杨梅 柚子 柠檬 桂圆 梨 椰子 榴莲 火龙果 猕猴桃 石榴 砂糖橘 胡萝卜 "
    "脐橙 芒果 苦瓜 苹果-红 苹果-青 草莓 荔枝 菠萝 葡萄-白 葡萄-红 西瓜 西红柿 车厘子 香蕉 黄瓜"
).split()
REBUILD = ".venv/bin/python fonts/build_font.py"
TEXT = "准确率（%）：苹果、香蕉"


def _course_texts():
    """(来源, 文字)：每个笔记本的单元格、course_utils 的每个源文件、README、fruit30 类别名。"""
    for path in sorted(NOTEBOOKS_DIR.rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in path.parts:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            yield path.name, "".join("".join(c["source"]) for c in cells)
    for path in sorted((REPO_ROOT / "course_utils").rglob("*.py")):
        yield path.name, path.read_text(encoding="utf-8")
    yield "README.md", (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    yield "fruit30 类别名", "".join(FRUIT30)


def _font_cmap():
    with TTFont(cu.fonts.course_font_path(), lazy=True) as font:
        return font.getBestCmap()


@pytest.fixture
def rc():
    """每个测试结束后恢复 matplotlib 的全部 rcParams。"""
    with mpl.rc_context():
        yield


def _chart() -> Figure:
    """中文标题、坐标轴标签、刻度标签、图例，以及负数。"""
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [120, -480, 300], label="训练集损失")
    ax.set_title("中文字体测试：准确率（%）")
    ax.set_xlabel("轮（epoch）")
    ax.set_ylabel("损失")
    ax.set_xticks([1, 2, 3], ["第一轮", "第二轮", "第三轮"])
    ax.legend(title="图例")
    return fig


def _render_all_formats(fig) -> dict:
    """把图渲染成 PNG、PDF、SVG；缺字警告在这里变成异常。"""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt in ("png", "pdf", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt)
            out[fmt] = buffer.getvalue()
    return out


# ---------------------------------------------------------------- 字体文件


def test_bundled_font_covers_every_chinese_character_the_course_uses():
    cmap = _font_cmap()
    used = {}
    for source, text in _course_texts():
        for char in CJK.findall(text):
            used.setdefault(char, source)
    assert len(used) > 300, "扫描到的汉字太少，扫描本身可能坏了"
    missing = {char: source for char, source in used.items() if ord(char) not in cmap}
    listed = "、".join(f"{char}（{source}）" for char, source in sorted(missing.items()))
    assert not missing, f"课程字体缺少 {len(missing)} 个字：{listed}。在仓库根目录运行 {REBUILD} 重新生成（见 fonts/README.md）。"


def test_bundled_font_is_small_truetype_covering_gb2312_and_ascii():
    path = cu.fonts.course_font_path()
    assert path.suffix == ".ttf" and path.stat().st_size < 8_000_000
    with TTFont(path) as font:
        assert "glyf" in font and "CFF " not in font, "需要 TrueType（glyf）轮廓"
        cmap = font.getBestCmap()
        gb2312 = set()
        for high in range(0xA1, 0xF8):
            for low in range(0xA1, 0xFF):
                try:
                    gb2312.add(ord(bytes([high, low]).decode("gb2312")))
                except UnicodeDecodeError:
                    continue
        assert len(gb2312) == 7445
        assert not gb2312 - set(cmap), "GB2312 没有覆盖全"
        assert set(range(0x20, 0x7F)) <= set(cmap) and 0x2212 in cmap
        assert "Apache" in font["name"].getDebugName(13)
    assert (paths.FONTS_DIR / "LICENSE-Apache-2.0.txt").is_file()


def test_missing_glyphs_uses_the_font_cmap():
    assert cu.missing_glyphs("中文 abc，−5\n") == set()
    assert cu.missing_glyphs("中𠀀文") == {"𠀀"}  # 扩展 B 区的字不在子集里
    dejavu = font_manager.findfont("DejaVu Sans")
    assert cu.missing_glyphs("果 a", font_path=dejavu) == {"果"}


# ---------------------------------------------------------------- 绘图


@pytest.mark.parametrize("theme", ["setup_chinese_font", "cu.set_theme", "seaborn, then setup_chinese_font"])
def test_chinese_renders_in_png_pdf_svg_without_missing_glyph_warnings(rc, theme):
    if theme == "setup_chinese_font":
        cu.setup_chinese_font()
    elif theme == "cu.set_theme":
        cu.set_theme(style="darkgrid", context="paper")
    else:
        sns.set_theme()
        cu.setup_chinese_font()
    assert mpl.rcParams["font.sans-serif"][0] == "WenQuanYi Micro Hei Subset"
    rendered = _render_all_formats(_chart())
    assert all(len(data) > 1000 for data in rendered.values())


def test_plain_seaborn_theme_loses_the_font_which_is_why_cu_set_theme_exists(rc):
    cu.setup_chinese_font()
    sns.set_theme()  # seaborn 把 font.sans-serif 换成了它自己的列表
    with pytest.raises(UserWarning, match="missing from font"):
        _render_all_formats(_chart())
    cu.set_theme()
    _render_all_formats(_chart())


def test_pdf_embeds_the_font_as_truetype_type42_with_the_text(rc):
    cu.setup_chinese_font()
    with mpl.rc_context({"pdf.compression": 0}):  # 不压缩，才能在字节里找到字体和文字
        pdf = _render_all_formats(_chart())["pdf"]
    assert b"/FontFile2" in pdf and b"/CIDFontType2" in pdf
    assert re.search(rb"/BaseFont /[A-Z]{6}\+WenQuanYiMicroHeiSubset", pdf)
    for char in "中文字体测试准确率训练集损失第一轮图例":  # ToUnicode 表让文字可以复制、搜索
        assert f"[<{ord(char):04x}>]".encode() in pdf, char
    assert "[<2212>]".encode() in pdf  # 负号“−”


def test_svg_keeps_the_chinese_text_when_text_is_not_converted_to_paths(rc):
    cu.setup_chinese_font()
    with mpl.rc_context({"svg.fonttype": "none"}):
        svg = _render_all_formats(_chart())["svg"].decode("utf-8")
    assert "中文字体测试" in svg and "WenQuanYi Micro Hei Subset" in svg


# ---------------------------------------------------------------- setup_chinese_font


def test_setup_chinese_font_settings_and_idempotence(rc):
    before = len(font_manager.fontManager.ttflist)
    family = cu.setup_chinese_font()
    registered = len(font_manager.fontManager.ttflist)
    snapshot = {key: mpl.rcParams[key] for key in mpl.rcParams}
    assert cu.setup_chinese_font() == family == "WenQuanYi Micro Hei Subset"
    assert {key: mpl.rcParams[key] for key in mpl.rcParams} == snapshot
    assert len(font_manager.fontManager.ttflist) == registered <= before + 1
    assert mpl.rcParams["font.family"] == ["sans-serif"]
    assert mpl.rcParams["font.sans-serif"].count(family) == 1
    assert mpl.rcParams["font.sans-serif"][0] == family
    assert mpl.rcParams["pdf.fonttype"] == 42 and mpl.rcParams["ps.fonttype"] == 42
    assert mpl.rcParams["axes.unicode_minus"] is True  # 课程字体有 U+2212，保留规范负号
    found = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    assert Path(found).resolve() == cu.fonts.course_font_path().resolve()


def test_setup_never_writes_into_matplotlib_install_or_deletes_caches(rc):
    def listing(folder):
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(folder).rglob("*")}

    data_fonts = Path(mpl.get_data_path()) / "fonts"
    caches = Path(mpl.get_cachedir())
    before, cache_before = listing(data_fonts), listing(caches)
    cu.setup_chinese_font()
    cu.set_theme()
    _render_all_formats(_chart())
    assert listing(data_fonts) == before
    assert set(cache_before) <= set(listing(caches)), "缓存文件被删除了"


def _fake_simhei(path: Path, with_minus: bool = False) -> Path:
    """用课程字体做一个字体族名为 SimHei 的小字体（像真正的 SimHei 一样没有 U+2212）。"""
    options = subset.Options()
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    ascii_text = "".join(map(chr, range(0x20, 0x7F)))  # 真正的 SimHei 也有全部 ASCII
    subsetter.populate(text=ascii_text + "中文字体测试准确率训练集损失第一二三轮图例（）：" + ("−" if with_minus else ""))
    with TTFont(cu.fonts.course_font_path()) as font:
        subsetter.subset(font)
        for name_id, value in ((1, "SimHei"), (4, "SimHei"), (6, "SimHei")):
            font["name"].setName(value, name_id, 3, 1, 0x409)
        font.save(path)
    return path


@pytest.fixture
def isolated_font_list(monkeypatch):
    """测试里对 matplotlib 字体列表的改动在测试结束后撤销。"""
    manager = font_manager.fontManager
    monkeypatch.setattr(manager, "ttflist", list(manager.ttflist))
    yield manager
    monkeypatch.undo()
    manager._findfont_cached.cache_clear()


def _assert_simhei_is_used(fake: Path):
    assert mpl.rcParams["font.sans-serif"][:2] == ["SimHei", "WenQuanYi Micro Hei Subset"]
    assert mpl.rcParams["axes.unicode_minus"] is False  # SimHei 没有“−”，改用连字符
    found = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    assert Path(found).resolve() == fake.resolve()
    _render_all_formats(_chart())


def test_prefers_simhei_known_to_matplotlib(rc, isolated_font_list, tmp_path):
    fake = _fake_simhei(tmp_path / "simhei-system.ttf")
    assert cu.setup_chinese_font() == "WenQuanYi Micro Hei Subset"  # 还没有 SimHei
    isolated_font_list.addfont(str(fake))  # 相当于系统里装了 SimHei
    assert cu.setup_chinese_font() == "SimHei"
    _assert_simhei_is_used(fake)


def test_prefers_simhei_dropped_into_fonts_folder(rc, isolated_font_list, tmp_path, monkeypatch):
    fonts_dir = tmp_path / "fonts"
    fonts_dir.mkdir()
    shutil.copy(cu.fonts.course_font_path(), fonts_dir)
    fake = _fake_simhei(fonts_dir / "SimHei.ttf")
    monkeypatch.setattr(paths, "FONTS_DIR", fonts_dir)
    assert cu.setup_chinese_font() == "SimHei"
    _assert_simhei_is_used(fake)
    assert "SimHei.ttf" in (REPO_ROOT / "fonts" / ".gitignore").read_text(encoding="utf-8")


def test_simhei_with_a_real_minus_sign_keeps_it(rc, isolated_font_list, tmp_path):
    isolated_font_list.addfont(str(_fake_simhei(tmp_path / "simhei.ttf", with_minus=True)))
    assert cu.setup_chinese_font() == "SimHei"
    assert mpl.rcParams["axes.unicode_minus"] is True


# ---------------------------------------------------------------- 重建脚本


def _build_command(*args):
    return [sys.executable, str(REPO_ROOT / "fonts" / "build_font.py"), *map(str, args)]


def _build_script(*args):
    return subprocess.run(_build_command(*args), cwd=REPO_ROOT, capture_output=True, text=True)


def test_build_script_resubsets_to_cover_new_text_reproducibly(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("新增的文字：龘")])
    nbformat.write(nb, repo / "notebooks" / "99_new.ipynb")
    (repo / "notes.md").write_text("鑫淼", encoding="utf-8")
    # 离线：以现有的子集字体为源字体（它没有“龘”，脚本应当报告出来）
    outputs = [tmp_path / "a.ttf", tmp_path / "b.ttf"]
    runs = [subprocess.Popen(_build_command("--source", cu.fonts.course_font_path(), "--root", repo, "--output", out),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for out in outputs]
    for run in runs:  # 两次构建同时进行，省时间
        stdout = run.communicate(timeout=120)[0]
        assert run.returncode == 1 and "龘" in stdout, stdout
    assert outputs[0].read_bytes() == outputs[1].read_bytes(), "同样的输入应当生成同样的文件"
    with TTFont(outputs[0]) as built:
        assert built["name"].getDebugName(1) == "WenQuanYi Micro Hei Subset"
        cmap = built.getBestCmap()
    assert all(ord(c) in cmap for c in "鑫淼哈密瓜猕猴桃，。A")


def test_build_script_check_mode_lists_missing_characters(tmp_path):
    (tmp_path / "new.py").write_text('TITLE = "龘"\n', encoding="utf-8")
    result = _build_script("--check", "--root", tmp_path)
    assert result.returncode == 1 and "龘" in result.stdout and "build_font.py" in result.stdout
    assert _build_script("--check").returncode == 0


# ---------------------------------------------------------------- 笔记本 00


def test_notebook_00_saves_the_test_plot_without_missing_glyph_warnings(tmp_path):
    out = tmp_path / "00.ipynb"
    env = {**os.environ, "COURSE_OUTPUT_DIR": str(tmp_path / "outputs"), "COURSE_HEADLESS": "1"}
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS_DIR / "00_setup.ipynb"), str(out),
           "-p", "PROFILE", "smoke", "--no-progress-bar", "--cwd", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    png = tmp_path / "outputs" / "smoke" / "figures" / "font_test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    texts = []
    for cell in nbformat.read(out, as_version=4).cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
            texts += output.get("traceback", [])
    shown = "\n".join(texts)
    assert "missing from font" not in shown and "Glyph" not in shown
    assert "'WenQuanYi Micro Hei Subset'" in shown  # 第 6 节显示了使用的字体
    # 第 5 节的演示：只用 DejaVu Sans 时，警告条数等于查字符表得到的缺字个数
    warned = int(re.search(r"matplotlib 发出了 (\d+) 条缺字警告", shown).group(1))
    listed = re.search(r"^'([^'\n]+)'$", shown, re.M).group(1)
    assert warned == len(listed) > 5 and all(CJK.match(c) for c in listed)
