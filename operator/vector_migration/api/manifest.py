"""The whole resource, and reading it from a manifest: every problem one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from ..vocabulary import (
    API_GROUP,
    API_VERSION,
    KIND,
)
from .spec import VectorMigrationSpec
from .status import VectorMigrationStatus
from .values import (
    ApiModel,
)


class ObjectMeta(BaseModel):
    """Kubernetes object metadata: the fields the engine reads, and the others an API server sets.

    A field Kubernetes does not know (a typo) is refused, as `kubectl apply --validate=strict` does.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str | None, Field(max_length=63)] = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generate_name: str | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None


class VectorMigration(ApiModel):
    """The whole resource, as applied with kubectl or passed to the command line."""

    api_version: Literal["ruvector.dev/v1alpha1"] = f"{API_GROUP}/{API_VERSION}"  # type: ignore[assignment]
    kind: Literal["VectorMigration"] = KIND  # type: ignore[assignment]
    metadata: ObjectMeta
    spec: VectorMigrationSpec = Field(default_factory=VectorMigrationSpec)
    status: VectorMigrationStatus | None = None


class SpecError(ValueError):
    """A manifest that is not a valid VectorMigration; the message names the field."""


MAX_MANIFEST_BYTES = 1 << 20  # kubectl's own limit on an object is 1.5 MiB (etcd's); a migration needs far less


class _ManifestLoader(yaml.SafeLoader):
    """YAML without aliases: a manifest needs none, and expanding them is how a small file becomes a huge one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not accepted in a manifest", event.start_mark
            )
        return super().compose_node(parent, index)


def load_manifest(path: Path) -> VectorMigration:
    """Read a VectorMigration manifest, turning every problem into one readable line."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{path}: cannot read manifest: {error.strerror or error}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SpecError(f"{path}: the manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 at byte {error.start}") from None
    try:
        document = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 - a SafeLoader, aliases refused
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a VectorMigration object, found {type(document).__name__}")
    return parse_manifest(document, origin=str(path))


def parse_manifest(document: dict[str, Any], origin: str = "manifest") -> VectorMigration:
    """Validate a manifest already parsed from YAML or JSON, strictly, as the API server would.

    Strict JSON validation: "20" is not a number and "no" not a boolean (the API server refuses
    both; pydantic's lax mode would coerce them).
    """
    try:
        encoded = json.dumps(document, default=str)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{origin}: {error}") from None
    try:
        return VectorMigration.model_validate_json(encoded, strict=True)
    except ValidationError as error:
        raise SpecError(f"{origin}: {describe_validation_error(error)}") from None


def _printable(part: object) -> str:
    """A path element as text on one line: a key with control characters or odd spacing is quoted."""
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field by its manifest path."""
    problems = []
    for item in error.errors():
        location = ".".join(_printable(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"{location}: unknown field")
        else:
            problems.append(f"{location}: {item['msg']}" if location else item["msg"])  # the document itself
    return "; ".join(problems)
