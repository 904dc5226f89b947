"""A model as the JSON merge patch (RFC 7386) that makes the API server's copy of it equal to the model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def merge_patch_of(model: BaseModel) -> dict[str, Any]:
    """Every field of ``model`` by its alias; a field that is None is sent as null, which removes it on the server.

    A merge patch keeps what it does not name, so leaving a cleared field out (``exclude_none``) would
    leave the server's old value in place: a rolled-back cutover would still say 50%. Nested models
    are patched the same way, field by field; lists are replaced whole, as merge patches replace them.
    Fields the model does not know (kopf's own bookkeeping, say) are left alone.
    """
    whole = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    patch: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        key = field.serialization_alias or field.alias or name
        value = getattr(model, name)
        if value is None:
            patch[key] = None
        elif isinstance(value, BaseModel):
            patch[key] = merge_patch_of(value)
        else:
            patch[key] = whole[key]
    return patch
