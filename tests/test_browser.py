"""真实浏览器打开讲义：无头 Chromium（Debian 的 chromium 包），断网、全新的用户目录。

通过 Chrome DevTools 协议（websocket-client）驱动，不需要另外下载浏览器。检查：页面能打开、
课程字体真的加载并用来显示中文、图片都显示出来、截图不是一片空白、公式由嵌在页面里的 MathJax 画出来、
页面没有访问任何网络地址。

找浏览器的顺序：环境变量 COURSE_BROWSER（Chrome、Edge 或 Chromium 的程序路径，Windows、macOS 上用它），
然后是 PATH 里的 chromium、chromium-browser。Debian / Ubuntu 上 ``make test`` 会先装好 chromium（``make browser``）。
"""

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import websocket
from handout_samples import write_executed_notebook
from PIL import Image

from course_utils.handouts import HANDOUT_FONT_FAMILY, build_handouts

CHROMIUM_NAMES = ("chromium", "chromium-browser")
BROWSER_ENV_VAR = "COURSE_BROWSER"  # 浏览器程序的路径（Chrome、Edge、Chromium 都行）
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1100,900",
    # 断网：所有主机名都解析失败，代理指向一个没人监听的本机端口
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]


class DevTools:
    """最小的 DevTools 协议客户端：发命令、等回复，顺便收集事件。"""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=20, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events = []

    def send(self, method: str, **params):
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                assert "error" not in message, message["error"]
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                self.events = [e for e in self.events if e.get("method") != method]
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"等了 {timeout} 秒也没有等到 {method}")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]


def _browser_executable() -> str:
    """COURSE_BROWSER 指定的浏览器，否则 PATH 里的 chromium / chromium-browser；都没有时测试失败并说明怎么办。"""
    chosen = os.environ.get(BROWSER_ENV_VAR)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            pytest.fail(f"环境变量 {BROWSER_ENV_VAR}={chosen!r} 指向的浏览器不存在或不能执行。"
                        "把它改成 Chrome、Edge 或 Chromium 的程序路径，或者删掉这个环境变量。")
        return found
    found = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if found is None:
        pytest.fail("没有找到 Chromium。Debian / Ubuntu 上运行 make test 会自动安装（make browser），"
                    "也可以执行 apt-get update && apt-get install -y --no-install-recommends chromium；"
                    f"Windows、macOS 上把环境变量 {BROWSER_ENV_VAR} 设成 Chrome 或 Edge 的程序路径。")
    return found


@pytest.fixture
def chromium(tmp_path):
    """启动 Chromium 并连上它打开的第一个标签页；测试结束时关掉浏览器。"""
    executable = _browser_executable()
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert process.poll() is None, "Chromium 启动后马上退出了"
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        process.terminate()
        process.wait(timeout=20)


def _open(tools: DevTools, url: str) -> dict:
    """打开页面、等它加载完、等字体就绪，返回页面上的检查结果。"""
    tools.send("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    return tools.evaluate(f"""(async () => {{
        await document.fonts.ready;
        const ours = [...document.fonts].filter(f => f.family.replace(/"/g, "") === "{HANDOUT_FONT_FAMILY}");
        return {{
            title: document.title,
            faces: ours.map(f => f.status),
            check: document.fonts.check('16px "{HANDOUT_FONT_FAMILY}"', "中文"),
            images: [...document.images].map(i => [i.complete, i.naturalWidth]),
            text: document.body.innerText,
        }};
    }})()""")


def _fonts_used_for(tools: DevTools, selector: str) -> list[dict]:
    """浏览器实际用来画出这个元素文字的字体（CSS.getPlatformFontsForNode）。"""
    root = tools.send("DOM.getDocument")["root"]["nodeId"]
    node = tools.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
    assert node, f"页面上没有 {selector}"
    return tools.send("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]


def _screenshot(tools: DevTools) -> np.ndarray:
    data = tools.send("Page.captureScreenshot", format="png")["data"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), dtype=float)


def test_handout_opens_in_chromium_with_the_course_font_and_images(chromium, tmp_path):
    source = tmp_path / "notebooks"
    write_executed_notebook(source / "05_evaluate.ipynb")
    index = build_handouts("smoke", source_dir=source, out_dir=tmp_path / "handouts")
    for domain in ("Page", "DOM", "CSS", "Network", "Runtime"):
        chromium.send(f"{domain}.enable")

    listing = _open(chromium, index.as_uri())
    assert listing["title"] == "迁移学习图像分类实战 · 讲义"
    assert "05 模型评估" in listing["text"]
    assert listing["faces"] == ["loaded"] and listing["check"]

    page = _open(chromium, (index.parent / "05_evaluate.html").as_uri())
    assert page["title"] == "05 模型评估"
    assert "用测试集给模型打分" in page["text"]
    assert page["faces"] == ["loaded"] and page["check"], "课程字体没有加载"
    used = _fonts_used_for(chromium, "h1")
    assert any(f["isCustomFont"] and f["glyphCount"] >= 4 for f in used), f"标题没有用嵌入的字体：{used}"
    assert page["images"] and all(complete and width > 0 for complete, width in page["images"])

    pixels = _screenshot(chromium)
    assert pixels.std() > 20, "截图几乎是一片空白"
    assert (pixels < 128).mean() > 0.01  # 有足够多的深色像素（文字、图）

    requested = [e["params"]["request"]["url"] for e in chromium.events
                 if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested


def test_formulas_render_offline_with_the_embedded_mathjax(chromium, tmp_path):
    source = tmp_path / "notebooks"
    write_executed_notebook(source / "02_math.ipynb", title="02 公式", math=True)
    index = build_handouts("smoke", source_dir=source, out_dir=tmp_path / "handouts")
    for domain in ("Page", "Network", "Runtime"):
        chromium.send(f"{domain}.enable")

    _open(chromium, (index.parent / "02_math.html").as_uri())
    math = chromium.evaluate("""(async () => {
        await MathJax.startup.promise;  // 等 MathJax 排版完
        const box = [...document.querySelectorAll("mjx-container svg")].map(svg => svg.getBoundingClientRect());
        return {
            version: MathJax.version,
            containers: document.querySelectorAll("mjx-container").length,
            sizes: box.map(b => [b.width, b.height]),
            errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
            text: document.body.innerText,
        };
    })()""")
    assert math["version"].startswith("3.")
    assert math["containers"] == 1 and math["errors"] == 0, math
    assert all(width > 20 and height > 10 for width, height in math["sizes"]), math["sizes"]  # 真的画出了东西
    assert "\\frac" not in math["text"] and "$" not in math["text"], math["text"]  # 原始的 TeX 不见了

    requested = [e["params"]["request"]["url"] for e in chromium.events
                 if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested
