"""DA-2K relative-depth benchmark (Depth Anything V2), the last column of Table 1.

Format (DepthAnything/Depth-Anything-V2 ``DA-2K.md``): ``annotations.json`` maps each image path
(relative to the benchmark root) to a list of ``{"point1": [h, w], "point2": [h, w],
"closer_point": "point1"}``; coordinates are (vertical, horizontal) = (row, col) pixels, and
the README notes that point1 is always the closer one. Items: ``image``, ``pairs`` (a list of
``{"point1": (row, col), "point2": (row, col), "closer": 0 | 1}``, 0 meaning point1), ``name``.
A pair outside the image raises ``DataError`` naming the image.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from .io import DataError, image_tensor, read_bytes, read_rgb


class DA2K(Dataset):
    def __init__(self, root, annotations: str = "annotations.json"):
        self.root = Path(root)
        path = self.root / annotations
        try:
            ann = json.loads(read_bytes(path))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON ({err})") from err
        if not isinstance(ann, dict) or not ann:
            raise DataError(f"{path}: expected a non-empty object of image -> pairs")
        self.names = sorted(ann)
        self.annotations = ann

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        name = self.names[index]
        rgb = read_rgb(self.root / name)
        h, w = rgb.shape[:2]
        pairs = []
        for k, a in enumerate(self.annotations[name]):
            try:
                p1, p2 = (int(round(a["point1"][0])), int(round(a["point1"][1]))), (int(round(a["point2"][0])), int(round(a["point2"][1])))
                closer = {"point1": 0, "point2": 1}[a["closer_point"]]
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise DataError(f"{self.root / name}: malformed annotation {k} ({err!r})") from err
            for r, c in (p1, p2):
                if not (0 <= r < h and 0 <= c < w):
                    raise DataError(f"{self.root / name}: annotation {k} point ({r}, {c}) outside {h}x{w} image")
            pairs.append({"point1": p1, "point2": p2, "closer": closer})
        return {"image": image_tensor(rgb), "pairs": pairs, "name": name}
