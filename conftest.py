"""pytest 全局设置：测试一律用 smoke 档位、文字进度条。

nbval 启动的内核会继承这里设置的环境变量，所以 ``pytest --nbval-lax notebooks/`` 也跑在 smoke 档位上。
"""

import os

os.environ.setdefault("COURSE_PROFILE", "smoke")
os.environ.setdefault("COURSE_HEADLESS", "1")
