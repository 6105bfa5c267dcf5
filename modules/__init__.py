"""LightningModules: the training algorithms."""

from modules.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
