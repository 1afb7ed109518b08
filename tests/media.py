"""Video files for tests, written with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_lossless(path: Path, frames: np.ndarray, fps: int) -> Path:
    """Encode (T, H, W, 3) RGB frames with libx264rgb at crf 0: decoding must return them bit-exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path
