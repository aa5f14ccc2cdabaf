"""Image folders with explicit id lists: FFHQ, ImageNet val, COCO val2017 (with captions).

Which images make a test split is config, not code: a range of ids (`id_range`), an id-list file
(`id_file`), an inline list (`ids`), or every image of a COCO captions file; then `start`/`n` take
a slice. Each id names one file, `root / pattern.format(id=id)`.

Everything a user can get wrong is checked at construction, before any compute: the folder, the
id file, the captions and labels files, that `n` does not exceed the listed ids, and that every
image file exists and fully decodes (a valid header with truncated data fails here, before the first
batch): one sentence naming the file. With `skip_corrupt: true` unreadable images are reported
(stderr and `describe()`) and left out instead.

Images are centre-cropped to a square, resized to the prior's image size and mapped to [-1, 1], with as
many channels as the prior takes (1: grey, 3: RGB). `resize`: bicubic (anti-aliased, the default) or
nearest (torch's `interpolate` default mode, as the official PSLD script up-samples FFHQ-256 files to
512 px: each pixel repeated). Files already at the prior's size are not resampled either way.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from data.base import Dataset
from core.errors import ConfigError


def _open(path: Path):
    from PIL import Image

    return Image.open(path)


RESIZES = ("bicubic", "nearest")


def to_tensor(img, size: int, channels: int, resize: str = "bicubic") -> torch.Tensor:
    """PIL image -> [channels, size, size] in [-1,1]: centre crop, then a bicubic anti-aliased or a nearest resize."""
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(s, s, channels)
    x = x.permute(2, 0, 1).float()[None] / 255.0
    if s != size and resize == "nearest":
        x = F.interpolate(x, size=(size, size), mode="nearest")
    elif s != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x[0].clamp(0, 1) * 2 - 1).contiguous()


def _read_table(path: Path, what: str) -> list[list[str]]:
    """Non-empty, non-comment lines of a text file, split on commas or whitespace."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; fix the path in the dataset config.")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path} cannot be read as text ({e.__class__.__name__}); "
                          f"give a text file with one entry a line.") from None
    rows = [ln.replace(",", " ").split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise ConfigError(f"{what} {path} lists no entries; give a file with one entry a line.")
    return rows


class ImageFolderDataset(Dataset):
    """Explicit ids -> files under `root`; optional captions (COCO json) and class labels."""

    def __init__(self, prior, root: str, pattern: str = "{id}", ids: list | None = None,
                 id_range: list | None = None, id_format: str = "", id_file: str | None = None,
                 captions: str | None = None, labels: str | None = None, start: int = 0, n: int | None = None,
                 skip_corrupt: bool = False, name: str = "folder", split: str = "test", resize: str = "bicubic"):
        self.name, self.split = name, split
        if resize not in RESIZES:
            raise ConfigError(f"dataset {name}: resize must be one of {list(RESIZES)}, not {resize!r}; set dataset.resize.")
        self.resize = resize
        if root is None or str(root) in ("", "???"):
            raise ConfigError(f"dataset {name} needs the image folder: set dataset.root=/path/to/images "
                              f"(or the environment variable its config names).")
        self.root = Path(str(root)).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"dataset {name}: image folder {self.root} does not exist; "
                              f"set dataset.root to the folder that holds the images.")
        self.pattern = pattern
        self.captions = self._load_captions(captions) if captions else None

        chosen = [k for k, v in (("ids", ids), ("id_range", id_range), ("id_file", id_file)) if v is not None]
        if len(chosen) > 1:
            raise ConfigError(f"dataset {name} sets {' and '.join(chosen)}; give exactly one way of listing ids.")
        self.file_labels = {}
        if ids is not None:
            all_ids = [str(i) for i in ids]
        elif id_range is not None:
            r = list(id_range)
            if len(r) not in (2, 3) or any(not isinstance(v, int) for v in r):
                raise ConfigError(f"dataset.id_range must be [start, stop] or [start, stop, step] of integers, "
                                  f"got {r}.")
            all_ids = [format(i, id_format) for i in range(*r)]
        elif id_file is not None:
            path = self._path(id_file)
            rows = _read_table(path, "id file")
            all_ids = [row[0] for row in rows]
            # An id file may carry labels as its second column ("<file> <label>").
            self.file_labels = {row[0]: row[1] for row in rows if len(row) > 1}
        elif self.captions is not None:
            all_ids = sorted(self.captions, key=int)
        else:
            raise ConfigError(f"dataset {name} lists no images: set dataset.id_range, dataset.id_file or dataset.ids.")
        if start < 0 or start >= len(all_ids) or (n is not None and n < 1):
            raise ConfigError(f"dataset {name} has {len(all_ids)} ids; dataset.start must be in "
                              f"[0, {len(all_ids) - 1}] and dataset.n >= 1 (got start={start}, n={n}).")
        if n is not None and start + n > len(all_ids):  # never run fewer images than asked for, silently
            raise ConfigError(f"dataset {name} lists {len(all_ids)} ids, so dataset.n={n} from dataset.start={start} "
                              f"asks for too many; set dataset.n <= {len(all_ids) - start} (or null for all).")
        chosen_ids = all_ids[start:] if n is None else all_ids[start:start + n]

        if self.captions is not None:
            missing = [i for i in chosen_ids if i not in self.captions]
            if missing:
                raise ConfigError(f"captions file {self.captions_path} has no caption for image id {missing[0]} "
                                  f"({len(missing)} of {len(chosen_ids)} ids lack one); fix the id list or the captions file.")
        self.labels = self._load_labels(labels, chosen_ids) if labels else (
            {i: int(self.file_labels[i]) for i in chosen_ids} if self.file_labels
            and all(i in self.file_labels for i in chosen_ids) else None)

        shape = tuple(prior.image_shape)
        if len(shape) != 3 or shape[0] not in (1, 3) or shape[1] != shape[2]:
            raise ConfigError(f"dataset {name} makes square grey or RGB images, but model {prior.name} takes "
                              f"{shape}; use a model with a [1|3, H, H] image shape.")
        self.channels, self.size = shape[0], shape[1]
        self.skip_corrupt, self.skipped = bool(skip_corrupt), []
        kept = self._validate(chosen_ids)
        if not kept:
            raise ConfigError(f"dataset {name}: none of the {len(chosen_ids)} listed images under {self.root} "
                              f"can be read; check dataset.root and the id list.")
        super().__init__(kept)
        self.start, self.n = start, n

    # -- construction-time checks ------------------------------------------------------------------
    def _path(self, rel) -> Path:
        """Config paths (id file, captions, labels) are absolute or relative to the image folder."""
        p = Path(str(rel)).expanduser()
        return p if p.is_absolute() else self.root / p

    def file(self, image_id) -> Path:
        return self.root / self.pattern.format(id=image_id)

    def _load_captions(self, rel) -> dict[str, str]:
        path = self.captions_path = self._path(rel)
        if not path.is_file():
            raise ConfigError(f"captions file {path} does not exist; set dataset.captions to the COCO "
                              f"captions json (annotations/captions_val2017.json).")
        try:
            data = json.loads(path.read_text())
            anns = sorted(data["annotations"], key=lambda a: a.get("id", 0))
            out = {}
            for a in anns:  # the first caption of each image (lowest annotation id) is its prompt
                out.setdefault(str(a["image_id"]), a["caption"].strip())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"captions file {path} is not a COCO captions json (an 'annotations' list of "
                              f"{{image_id, caption}}); give captions_val2017.json.") from None
        return out

    def _load_labels(self, rel, ids) -> dict[str, int]:
        path = self._path(rel)
        table = {}
        for row in _read_table(path, "labels file"):
            if len(row) < 2:
                raise ConfigError(f"labels file {path} needs '<id> <class>' on every line; line {row} has no class.")
            table[row[0]] = row[1]
            table.setdefault(Path(row[0]).stem, row[1])
        out = {}
        for i in ids:
            lab = table.get(i, table.get(Path(i).stem))
            if lab is None:
                raise ConfigError(f"labels file {path} has no class for image id {i}; add it or fix the id list.")
            try:
                out[i] = int(lab)
            except ValueError:
                raise ConfigError(f"labels file {path} gives class {lab!r} for {i}; classes must be integers.") from None
        return out

    def _validate(self, ids) -> list[str]:
        missing = [i for i in ids if not self.file(i).is_file()]
        if missing:
            raise ConfigError(f"image file {self.file(missing[0])} does not exist ({len(missing)} of {len(ids)} "
                              f"listed images are missing); fix dataset.root, dataset.pattern or the id list.")
        kept = []
        for i in ids:
            try:
                with _open(self.file(i)) as img:
                    img.load()  # a full decode up front (not just the header): a truncated file fails before any batch
            except Exception as e:
                if not self.skip_corrupt:
                    raise ConfigError(f"image file {self.file(i)} is not a readable image ({e.__class__.__name__}); "
                                      f"replace it, remove its id, or set dataset.skip_corrupt=true.") from None
                self.skipped.append(i)
                continue
            kept.append(i)
        if self.skipped:
            print(f"dataset {self.name}: skipped {len(self.skipped)} unreadable image(s): "
                  f"{', '.join(str(self.file(i)) for i in self.skipped[:5])}"
                  f"{' ...' if len(self.skipped) > 5 else ''}", file=sys.stderr)
        return kept

    # -- loading -----------------------------------------------------------------------------------
    def load(self, image_id):
        path = self.file(image_id)
        try:
            with _open(path) as img:
                x = to_tensor(img, self.size, self.channels, self.resize)
        except Exception as e:
            raise ConfigError(f"image file {path} cannot be decoded ({e.__class__.__name__}: {e}); replace it, "
                              f"remove its id, or set dataset.skip_corrupt=true.") from None
        return x, self.caption(image_id)

    def caption(self, image_id) -> str | None:
        """The prompt: a COCO caption, else the class label (as a string) where labels are given."""
        if self.captions is not None:
            return self.captions[str(image_id)]
        if self.labels is not None:
            return str(self.labels[str(image_id)])
        return None

    def label(self, image_id) -> int | None:
        return None if self.labels is None else self.labels[str(image_id)]

    def describe(self):
        out = {"dataset": self.name, "split": self.split, "dataset_root": str(self.root), "n_listed": len(self.ids)
               + len(self.skipped)}
        if self.resize != "bicubic":  # the default leaves existing rows' dataset columns as they were
            out["resize"] = self.resize
        if self.skipped:
            out["skipped_ids"] = ",".join(map(str, self.skipped))
        return out
