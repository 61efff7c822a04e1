"""课程的性能基准测试：``python -m benchmarks``（或 ``make bench``）。

六个部分，都在同一台机器、同一次运行里比较，结果（JSON 和 Markdown）写到 ``benchmarks/results/``：

1. ``strategies``：原教程式的 strategy 1（主干照样求梯度、BatchNorm 被改写）对比本课程的 freeze 与 freeze + 特征缓存；
2. ``throughput``：ResNet-18（224 像素）与 EfficientNet-Lite0（112 像素）每秒训练多少张图，
   channels_last 与 contiguous 两种内存布局，以及 torch.compile；
3. ``loading``：DataLoader 读大 JPEG 的速度与模型速度之比，加载进程数，预先缩小图片的效果；
4. ``memory``：批量 32 时训练的峰值内存（每种做法一个新进程）；
5. ``roofline``：每张图的浮点运算量与本机矩阵乘法速度，各做法达到峰值的百分之几；
6. ``lr_sweep``：在 demo 验证集上扫 freeze 分类头的学习率（课程默认 1e-3 就是这样选的）。

另有 ``course_time``（``--course``）：在与 fruit30 同样大小的生成数据上，计时 quick 档位的整个课程。
ResNet-18 的 torchvision 权重在这里下载不了，测速度和内存时用随机初始化（速度与权重取值无关）；
第 6 节用 pip 包里真正的 EfficientNet-Lite0 ImageNet 权重。
"""
