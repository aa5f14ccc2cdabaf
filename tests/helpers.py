"""Helpers shared by the tests (tests never import each other; fixtures live in conftest.py)."""
import json

import torch

from core.rng import generators


def measured(prior, task, ids, seed=0):
    """(x, bound task, y) for images `ids`: truths drawn from the prior (prior None: uniform in [-1, 1], seeded
    by `seed`), the task's per-image parameters drawn with `seed`, y measured with per-image noise."""
    if prior is None:
        x = torch.rand(len(ids), *task.image_shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    else:
        x = prior.sample_prior(generators(ids, "truth"))
    bound = task.bind(task.draw(ids, seed))
    return x, bound, bound.measure(x, generators(ids, "noise"))


def png(path, w, h, color=None, mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(hash(path.name) % 1000)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    img = Image.fromarray(arr)
    if color is not None:
        img = Image.new("RGB", (w, h), color)
    img.convert(mode).save(path)
    return path


def coco(tmp_path):
    root = tmp_path / "coco" / "val2017"
    for i in (139, 285, 632):
        png(root / f"{i:012d}.jpg", 20, 18)
    ann = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (139, 285, 632)],
           "annotations": [{"id": 7, "image_id": 285, "caption": "A big bear. "},
                           {"id": 3, "image_id": 139, "caption": "A room with chairs."},
                           {"id": 1, "image_id": 139, "caption": "A living room."},
                           {"id": 9, "image_id": 632, "caption": "A bed."}]}
    (tmp_path / "coco" / "annotations").mkdir()
    (tmp_path / "coco" / "annotations" / "captions_val2017.json").write_text(json.dumps(ann))
    return root
