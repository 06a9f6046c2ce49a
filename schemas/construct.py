"""Building a model from values that are already valid, without validating them again.

For the processor's hot path only (each command becomes an event and an envelope):
``Model.model_construct`` costs more than the rest of stamping an event, and even
``object.__setattr__`` on a pydantic model is slow, so the instance's slots are set through
their descriptors. Every caller passes values its model's validation would accept unchanged;
unit tests pin each use to the validated construction.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["trusted_model"]

M = TypeVar("M", bound=BaseModel)

_new_object = object.__new__
_BASE_SLOTS = BaseModel.__dict__
_set_dict = _BASE_SLOTS["__dict__"].__set__
_set_fields_set = _BASE_SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _BASE_SLOTS["__pydantic_extra__"].__set__
_set_private = _BASE_SLOTS["__pydantic_private__"].__set__


def trusted_model(cls: type[M], values: dict[str, Any], fields_set: frozenset[str]) -> M:
    """An instance of ``cls`` holding ``values`` (every field, in declaration order) as they
    are, as if validated with ``fields_set`` given explicitly. The model must have no extra
    fields and no private attributes (frozen payload models and the envelope)."""
    model = _new_object(cls)
    _set_dict(model, values)
    # A fresh set per instance: model_copy(update=...) adds to the copy's set.
    _set_fields_set(model, set(fields_set))
    _set_extra(model, None)
    _set_private(model, None)
    return model
