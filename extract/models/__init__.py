"""Frozen backbones: a registry of specs, loaders per source library, and pooling."""

from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.registry import build_backbone, default_registry, resolve_model
from medprobe.extract.models.spec import ModelSpec, Preprocessing

__all__ = [
    "Backbone",
    "ModelSpec",
    "Preprocessing",
    "build_backbone",
    "default_registry",
    "resolve_model",
]
