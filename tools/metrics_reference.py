"""Reference PSNR/SSIM values for nodes/src/metrics (the numbers in its tests).

Wang et al. SSIM as scikit-image computes it with the paper's settings: Gaussian window
sigma 1.5 (11 taps), K1 0.01, K2 0.03, population covariance, data range 255, mean over
the RGB channels. Run: python -m venv v && v/bin/pip install scikit-image==0.25.2 numpy==2.4.6
&& v/bin/python tools/metrics_reference.py
"""
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def image(f, w=32, h=24):
    return np.array([[[f(x, y, c) for c in range(3)] for x in range(w)] for y in range(h)], dtype=np.uint8)


a = image(lambda x, y, c: (x * 7 + y * 13 + c * 29) % 256)
b = image(lambda x, y, c: min(255, max(0, (x * 7 + y * 13 + c * 29) % 256 + (x * y + c) % 11 - 5)))
d = image(lambda x, y, c: (x * x + y * 3 + c * 50) % 256)

for name, other in [("a~b", b), ("a~d", d)]:
    psnr = peak_signal_noise_ratio(a, other, data_range=255)
    ssim = structural_similarity(a, other, channel_axis=2, data_range=255, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    print(f"{name}: psnr {psnr:.10f} ssim {ssim:.10f}")
