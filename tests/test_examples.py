"""Every example manifest in the repository is valid, the README's too, and durations read as people write them."""

import re
from pathlib import Path

import pytest
import yaml

from vector_migration.api import VectorMigrationSpec, duration_ms, load_manifest, pg_setting_duration
from vector_migration.kube.crd import crd_document

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifests_are_valid(path: Path) -> None:
    assert load_manifest(path).metadata.name


ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def readme_spec_snippets() -> list[str]:
    """Each ```yaml block of the README and the docs that is a VectorMigration or a piece of its spec."""
    blocks = [block for page in PAGES for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL)]
    return [block for block in blocks if "kind: VectorMigration" in block or block.startswith("spec:")]


@pytest.mark.parametrize("snippet", readme_spec_snippets())
def test_the_readmes_manifests_are_valid(snippet: str) -> None:
    for document in yaml.safe_load_all(snippet):
        if document and document.get("kind", "VectorMigration") == "VectorMigration":
            spec = document.get("spec", document)
            VectorMigrationSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("written", "milliseconds"),
    [("0", 0), ("500ms", 500), ("90s", 90_000), ("10m", 600_000), ("10min", 600_000), ("1h30m", 5_400_000),
     ("24h", 86_400_000), ("7d", 604_800_000), ("2h45m30s", 9_930_000)],
)  # fmt: skip
def test_a_duration_reads_as_kubernetes_and_postgresql_users_write_it(written: str, milliseconds: int) -> None:
    spec = VectorMigrationSpec.model_validate(
        {
            "parallel": {"keepOldFor": written},
            "lockTimeout": written,
            "cutover": {"steps": [{"pause": {"duration": written}}]},
        }
    )

    assert duration_ms(spec.parallel.keep_old_for) == milliseconds
    assert pg_setting_duration(spec.lock_timeout) == str(milliseconds)
    assert re.fullmatch(crd_pattern("parallel", "keepOldFor"), written)


def test_a_bare_number_is_refused_with_the_fix_except_where_postgresql_reads_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(
        ValueError, match=r"'600' is not a duration \(a bare number has no unit here: 600 seconds is 600s"
    ):
        VectorMigrationSpec.model_validate({"parallel": {"keepOldFor": "600"}})
    with pytest.raises(ValueError, match=r"'10 minutes' is not a duration; write numbers with units"):
        VectorMigrationSpec.model_validate({"replicate": {"switchoverTimeout": "10 minutes"}})
    assert not re.fullmatch(crd_pattern("parallel", "keepOldFor"), "600")  # the API server refuses it too

    # lockTimeout and statementTimeout are PostgreSQL's settings: a bare number is its milliseconds
    spec = VectorMigrationSpec.model_validate({"lockTimeout": "1500", "statementTimeout": "1h30m"})
    assert (pg_setting_duration(spec.lock_timeout), pg_setting_duration(spec.statement_timeout)) == ("1500", "5400000")
    assert re.fullmatch(crd_pattern("lockTimeout"), "1500")


def crd_pattern(*path: str) -> str:
    node = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    pattern: str = node["pattern"]
    return pattern


def test_the_operator_quick_start_creates_what_its_example_needs_and_approves_before_it_waits() -> None:
    # examples/quickstart.sh, in order: a person who runs it must reach Ready (tests/test_quickstart.py
    # runs it; this says why, step by step)
    script = (Path(__file__).resolve().parent.parent / "examples" / "quickstart.sh").read_text()
    commands = [line.split("#")[0].strip() for line in script.splitlines() if line.startswith(("kubectl", "helm"))]
    example = load_manifest(Path(__file__).resolve().parent.parent / "examples" / "operator-shop.yaml")
    namespace, secret = example.metadata.namespace, example.spec.database.secret_ref

    def step(text: str) -> int:
        return next(i for i, command in enumerate(commands) if text in command)

    assert secret is not None
    assert step(f"create namespace {namespace}") < step(f"create secret generic {secret.name} -n {namespace}")
    assert step(f"create secret generic {secret.name}") < step("apply -f examples/operator-shop.yaml")
    assert example.spec.approval == "Manual"
    assert step("apply -f examples/operator-shop.yaml") < step(f"vmig approve {example.metadata.name}")
    assert step(f"vmig approve {example.metadata.name}") < step("--for=condition=Ready")
