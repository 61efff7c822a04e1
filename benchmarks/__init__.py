"""课程的性能基准测试：``python -m benchmarks``（或 ``make bench``）。

五个部分，都在同一台机器、同一次运行里比较，结果写到 ``benchmarks/results/``：

1. ``strategies``：原教程式的 strategy 1 对比本课程的 freeze 与 freeze + 特征缓存；
2. ``throughput``：finetune / scratch 每秒训练多少张图（channels_last、AMP、torch.compile）；
3. ``loading``：DataLoader 读大 JPEG 的速度与模型速度之比，加载进程数，预先缩小图片的效果；
4. ``memory``：批量 32 时训练的峰值内存（每种做法一个新进程）；
5. ``roofline``：ResNet-18 每张图的浮点运算量与本机矩阵乘法速度，各做法达到峰值的百分之几。

另有 ``course_time``（``--course``）：在与 fruit30 同样大小的生成数据上，计时 quick 档位的整个课程。
"""
