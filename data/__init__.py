"""Datasets by explicit ids: image folders, COCO with captions, the embedded worlds."""
