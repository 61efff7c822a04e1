"""讲义测试用的小笔记本：直接写好输出（相当于执行过），不用启动内核，几毫秒就能造好。

里面有讲义要处理的各种情况：中文 Markdown、无人值守时进度条留下的 \\r 中间帧（和结束时重复的最后一帧）、
一条真正的警告、输出里本机的绝对路径、一张图、没有保存状态的网页进度条（只剩 “HBox(...)” 文字）、
打了 solution 标签的参考答案单元格、指向参考答案笔记本的链接。
"""

import base64
import io
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image, ImageDraw

from course_utils.compare import RECORD_METADATA_KEY
from course_utils.paths import REPO_ROOT

SECRET = "秘密答案"  # 只应出现在教师版里
WARNING = "UserWarning: 这是一条真正的警告"
FIGURE_PATH = "outputs/demo/figures/confusion_matrix_freeze.png"  # 输出里写成本机绝对路径
CACHE_PATH = ".cache/torch/hub/checkpoints/resnet18.pth"  # 家目录下的文件（输出里写成绝对路径）


def sample_png(width=160, height=100) -> str:
    """一张有内容（不是纯色）的小图，base64 编码。"""
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 70, 90), fill=(200, 40, 40))
    draw.ellipse((80, 20, 150, 90), fill=(40, 120, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_photo(size=600) -> str:
    """一张像照片的大图（渐变加噪点）：PNG 很大，JPEG 小得多。"""
    import numpy as np

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 55, size)[:, None, None]
    pixels = np.clip(ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_executed_notebook(path, title="05 模型评估", purpose="用测试集给模型打分，看它错在哪里。",
                            injected=None, math=False, photo=False, uses_model=False, record=None):
    """写一个“执行过”的笔记本。

    参数：
        injected：papermill 注入的参数（字典）；uses_model：代码里加载检查点（用到训练结果）；
        record：像 06 执行 04 那样在元数据里标成训练记录（值为策略名）。
    """
    nb = new_notebook()
    intro = f"# {title}\n\n> {purpose}\n\n## 学习目标\n- 读懂混淆矩阵：行是真实类别，列是预测类别"
    if math:
        intro += "\n\n准确率 $\\mathrm{acc} = \\frac{正确}{总数}$"
    params = new_code_cell('PROFILE = None  # 档位', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(intro), params]
    if injected:
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items())
        cell = new_code_cell(source, execution_count=2)
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.append(cell)
    train = new_code_cell("for _ in cu.progress_bar(range(4), desc='训练'):\n    pass  # 每轮训练", execution_count=3)
    train.outputs = [
        new_output("stream", name="stderr", text="训练:   0%|          | 0/4 [00:00<?, ?it/s]\r"),
        new_output("stream", name="stderr", text="训练:  50%|#####     | 2/4 [00:01<00:01, 2.00it/s]\r"),
        new_output("stream", name="stderr", text="\r训练: 100%|##########| 4/4 [00:02<00:00, 2.00it/s]\n"),
        new_output("stream", name="stderr", text="训练: 100%|##########| 4/4 [00:02<00:00, 1.99it/s]\n"),
        new_output("stream", name="stdout", text="测试集准确率：87.5%\n"),
        new_output("stream", name="stdout", text=f"权重缓存：{Path.home() / CACHE_PATH}\n"),
        new_output("stream", name="stderr", text=f"{WARNING}\n"),
        new_output("execute_result", data={"text/plain": f"PosixPath('{REPO_ROOT / FIGURE_PATH}')"},
                   execution_count=3),
        new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "HBox(children=(FloatProgress(value=0.0, max=4.0),))",
        }),
    ]
    code = "fig = cu.plot_confusion_matrix(labels, preds, class_names)"
    if uses_model:
        code = "model, meta = cu.load_checkpoint(checkpoint)\n" + code
    figure = new_code_cell(code, execution_count=4)
    figure.outputs = [new_output("display_data", data={"image/png": sample_png(), "text/plain": "<Figure>"})]
    if photo:
        figure.outputs.append(new_output("display_data", data={"image/png": sample_photo(), "text/plain": "<Figure>"}))
    solution = new_code_cell(f"answer = 42  # {SECRET}\nanswer", execution_count=5)
    solution.metadata["tags"] = ["solution"]
    solution.outputs = [new_output("execute_result", data={"text/plain": "42"}, execution_count=5)]
    outro = new_markdown_cell(
        "## 小结\n\n- 混淆矩阵告诉我们模型把哪些水果认错了，例如“脐橙”和“砂糖橘”。\n\n"
        "参考答案：[solutions/05_evaluate_solutions.ipynb](solutions/05_evaluate_solutions.ipynb)\n\n"
        "**上一节**：[00 环境配置与中文字体](00_setup.ipynb) ｜ **下一节**：[06 三种策略对比](06_compare.ipynb)"
        + ("\n\n**返回**：[05 模型评估](../05_evaluate.ipynb)" if Path(path).parent.name == "solutions" else "")
    )
    nb.cells += [train, figure, solution, outro]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if record:
        nb.metadata[RECORD_METADATA_KEY] = {"strategy": record, "parameters": injected or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
