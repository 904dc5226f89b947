"""The words a user sees: phases, condition types, reasons, and the API's names.

Everything a status, an event, a log line or a test compares against is spelled here once,
so the engine, the command line and the operator cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum

API_GROUP = "ruvector.dev"
API_VERSION = "v1alpha1"
KIND = "VectorMigration"
PLURAL = "vectormigrations"
SINGULAR = "vectormigration"
SHORT_NAME = "vmig"
CATEGORIES = ("all", PLURAL)  # `kubectl get all` lists migrations beside the Jobs they start

# Who the operator is, to the API server and to `kubectl describe` (an Event's "From" column).
COMPONENT = "vector-migration-operator"
# The finalizer that holds a resource until its deletion handler has released the database.
FINALIZER = f"{API_GROUP}/finalizer"
# kopf's default finalizer, which resources created by releases before 0.2 carry; it is removed
# when they are next reconciled or deleted, so they are never stuck in Terminating.
LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"

# Annotations a person sets on a VectorMigration.
ANNOTATION_APPROVE = f"{API_GROUP}/approve"  # value: the plan hash being approved
ANNOTATION_PAUSED = f"{API_GROUP}/paused"  # "true" holds the migration between phases
ANNOTATION_DELETE_BACKUP = f"{API_GROUP}/delete-backup"  # "true": the backup claim goes with the resource
ANNOTATION_RESTORE = f"{API_GROUP}/restore"  # the restore token of the backup a person consents to restore
ANNOTATION_PROMOTE = f"{API_GROUP}/promote"  # "true": end the current indefinite cutover pause (consumed)
ANNOTATION_ROLLBACK = f"{API_GROUP}/rollback"  # "true": undo a succeeded migration

# Schema and table the engine keeps in the migrated database: the record of what is done,
# which outlives any status patch that a crash may lose.
JOURNAL_SCHEMA = "vector_migration"
JOURNAL_TABLE = "journal"

# One migration per database: advisory locks are scoped to the current database, so one
# constant key is enough (ASCII "vmigrate" read as a big-endian 64-bit integer).
ADVISORY_LOCK_KEY = 0x766D_6967_7261_7465


class Phase(StrEnum):
    """Where a migration is; one field, one enum."""

    PENDING = "Pending"
    CHECKLIST = "Checklist"
    BACKUP = "Backup"
    AWAITING_APPROVAL = "AwaitingApproval"
    SWAP = "Swap"
    BACKFILL = "Backfill"
    REINDEX = "Reindex"
    VERIFY = "Verify"
    CUTOVER = "Cutover"
    FINALIZE = "Finalize"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"

    @property
    def terminal(self) -> bool:
        """Whether no further phase follows without a person."""
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK)


class Timing(StrEnum):
    """The keys of status.timings beyond each phase's own (``<phase>Seconds``, status.timing_key)."""

    WRITE_BLOCKED = "writeBlockedSeconds"  # the window in which the application could not write
    ROLLBACK_WRITE_BLOCKED = "rollbackWriteBlockedSeconds"
    PROOF_HELD_WRITES = "proofHeldWritesSeconds"  # Replicate's proof held writers this long
    CHECKSUM_BEFORE_LOCK = "checksumBeforeLockSeconds"
    CATALOG_READ_BEFORE = "catalogReadBeforeSeconds"
    CATALOG_CHECK = "catalogCheckSeconds"


class Strategy(StrEnum):
    """How the data moves to the target extension."""

    IN_PLACE = "InPlace"
    PARALLEL = "Parallel"
    REBUILD = "Rebuild"
    REPLICATE = "Replicate"


class ReindexMode(StrEnum):
    """When the target indexes are built relative to the swap's commit."""

    ATOMIC = "Atomic"
    CONCURRENT = "Concurrent"


class UnmappableIndexes(StrEnum):
    """What happens to an index the target offers no counterpart for (an expression it lacks a function for)."""

    REFUSE = "Refuse"  # the checklist stops, naming each such index
    DROP = "Drop"  # dropped in the swap; its definition is kept in the plan, the status and an Event


class BackupScope(StrEnum):
    """What the pre-migration dump holds."""

    FULL = "Full"
    VECTOR_TABLES = "VectorTables"


class Approval(StrEnum):
    """Whether the swap waits for a person to approve the plan."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class RollbackPolicy(StrEnum):
    """What happens when a phase after the swap fails."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class LatencyEnforcement(StrEnum):
    """What a latency regression that survives re-measuring does."""

    ROLLBACK = "Rollback"  # fail verification (and roll back when rollback.onFailure is Automatic)
    HOLD = "Hold"  # hold for a person: promote to accept, or roll back
    WARN = "Warn"  # succeed with a warning


class Verdict(StrEnum):
    """A measurement's 95% interval against its bound: wholly on the good side, wholly on the bad, or across it."""

    PASSED = "Pass"
    FAILED = "Fail"
    INCONCLUSIVE = "Inconclusive"


class ConditionType(StrEnum):
    """Condition types, following kstatus: Ready summarises, Reconciling/Stalled are abnormal-true."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    CHECKLIST_PASSED = "ChecklistPassed"
    BACKUP_COMPLETED = "BackupCompleted"
    EXTENSION_SWAPPED = "ExtensionSwapped"
    INDEXES_REBUILT = "IndexesRebuilt"
    VERIFIED = "Verified"
    SHADOW_SYNCED = "ShadowSynced"
    REPLICA_SYNCED = "ReplicaSynced"
    FINALIZED = "Finalized"
    ROLLED_BACK = "RolledBack"
    DRIFTED = "Drifted"  # abnormal-true: a succeeded migration's database no longer matches


class Reason(StrEnum):
    """Condition reasons: one CamelCase word each, as Kubernetes requires."""

    # progress
    IN_PROGRESS = "InProgress"
    PASSED = "Passed"
    COMPLETED = "Completed"
    SKIPPED = "Skipped"
    ALREADY_DONE = "AlreadyDone"
    DRY_RUN = "DryRun"
    AWAITING_APPROVAL = "AwaitingApproval"
    SUCCEEDED = "Succeeded"
    CUTOVER_PAUSED = "CutoverPaused"
    AWAITING_PROMOTION = "AwaitingPromotion"
    OLD_TABLES_KEPT = "OldTablesKept"
    # retryable
    LOCK_TIMEOUT = "LockTimeout"
    MIGRATION_LOCKED = "MigrationLocked"
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    # needs a person
    STATEMENT_TIMEOUT = "StatementTimeout"
    UNSUPPORTED_STRATEGY = "UnsupportedStrategy"
    ANALYSIS_FAILED = "AnalysisFailed"
    UNSUPPORTED_SERVER = "UnsupportedServer"
    SOURCE_EXTENSION_MISSING = "SourceExtensionMissing"
    TARGET_EXTENSION_UNAVAILABLE = "TargetExtensionUnavailable"
    INSUFFICIENT_PRIVILEGE = "InsufficientPrivilege"
    UNSUPPORTED_COLUMN = "UnsupportedColumn"
    UNMAPPED_INDEX = "UnmappedIndex"
    BLOCKING_DEPENDENT = "BlockingDependent"
    INSUFFICIENT_SCRATCH_SPACE = "InsufficientScratchSpace"
    LOCK_TABLE_TOO_SMALL = "LockTableTooSmall"
    CANNOT_BATCH = "CannotBatch"
    TABLE_NOT_FOUND = "TableNotFound"
    INCOMPLETE_SELECTION = "IncompleteSelection"
    PLAN_CHANGED = "PlanChanged"
    BACKUP_FAILED = "BackupFailed"
    SWAP_FAILED = "SwapFailed"
    REINDEX_FAILED = "ReindexFailed"
    ROLLBACK_FAILED = "RollbackFailed"
    RESTORE_NEEDS_CONSENT = "RestoreNeedsConsent"
    RESTORE_FAILED = "RestoreFailed"
    RESTORED = "Restored"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_REQUESTED = "RollbackRequested"
    NOTHING_TO_ROLL_BACK = "NothingToRollBack"
    VERIFICATION_FAILED = "VerificationFailed"
    DATA_MISMATCH = "DataMismatch"
    CATALOG_MISMATCH = "CatalogMismatch"  # the change would leave the catalog other than its plan says
    RECALL_DROPPED = "RecallDropped"
    LATENCY_REGRESSED = "LatencyRegressed"
    INVALID_SPEC = "InvalidSpec"
    SPEC_CHANGED_AFTER_SWAP = "SpecChangedAfterSwap"
    SECRET_UNAVAILABLE = "SecretUnavailable"  # noqa: S105 - a condition reason, not a secret
    PAUSED = "Paused"
    DELETED = "Deleted"
    BACKUP_DELETED = "BackupDeleted"
    BACKUP_KEPT = "BackupKept"
    WARNING = "MigrationWarning"  # an Event for each status warning (an index dropped by request, say)
    INTERNAL_ERROR = "InternalError"
    JOURNAL_UNREADABLE = "JournalUnreadable"
    DRIFTED = "Drifted"
    IN_SYNC = "InSync"
    VERIFICATION_INCONCLUSIVE = "VerificationInconclusive"
    REPLICATION_UNAVAILABLE = "ReplicationUnavailable"  # the server cannot replicate logically (wal_level, slots)
    NO_REPLICA_IDENTITY = "NoReplicaIdentity"
    REPLICATION_LAGGING = "ReplicationLagging"  # the switchover gave up waiting for the new database


class StatementKind(StrEnum):
    """What a planned statement does; part of the plan hash, so values never change."""

    TARGET_SCHEMA = "target-schema"
    CREATE_TARGET_EXTENSION = "create-target-extension"
    LOCK = "lock"
    DROP_DEPENDENT = "drop-dependent"
    DROP_INDEX = "drop-index"
    EXPORT = "export"
    EMPTY_TABLE = "empty-table"
    CONVERT_TO_INTERMEDIATE = "convert-to-intermediate"
    CONVERT_COLUMNS = "convert-columns"
    DROP_SOURCE_EXTENSION = "drop-source-extension"
    RECREATE_DEPENDENT = "recreate-dependent"
    VALIDATE_FUNCTION = "validate-function"
    CARRY_SETTING = "carry-setting"
    IMPORT = "import"
    IMPORT_CHECKED = "import-checked"
    BUILD_INDEX = "build-index"
    RESTORE_INDEX = "restore-index"
    INDEX_COMMENT = "index-comment"  # an index's comment given again once it is built
    ATTACH_INDEX = "attach-index"  # a partition's index attached to its partitioned table's, once both are built
    REINDEX_CONCURRENTLY = "reindex-concurrently"
    # Parallel's
    CREATE_SHADOW = "create-shadow"
    SYNC_TRIGGER = "sync-trigger"
    BACKFILL_BATCH = "backfill-batch"
    VALIDATE_FOREIGN_KEY = "validate-foreign-key"
    SWAP_NAMES = "swap-names"
    DROP_OLD_TABLE = "drop-old-table"
    # Replicate's
    CREATE_DATABASE = "create-database"
    COPY_SCHEMA = "copy-schema"
    PUBLISH = "publish"
    CREATE_SLOT = "create-slot"
    SUBSCRIBE = "subscribe"
    BLOCK_WRITES = "block-writes"
    SET_SEQUENCES = "set-sequences"
    UNSUBSCRIBE = "unsubscribe"
    RENAME_DATABASES = "rename-databases"
    DROP_DATABASE = "drop-database"
    ANALYZE = "analyze"  # fresh planner statistics for a converted table

    @property
    def builds_index(self) -> bool:
        """Whether the statement builds an index (its progress is reported)."""
        return self in (StatementKind.BUILD_INDEX, StatementKind.RESTORE_INDEX)

    @property
    def completes_index(self) -> bool:
        """Whether the statement builds an index or finishes one (its comment): it runs where the build runs."""
        return self.builds_index or self in (StatementKind.INDEX_COMMENT, StatementKind.ATTACH_INDEX)

    @property
    def copies(self) -> bool:
        """Whether the statement is a COPY the engine streams through a file."""
        return self in (StatementKind.EXPORT, StatementKind.IMPORT)


class TransactionStep(StrEnum):
    """Where a changing transaction is, between its planned statements (Progress.step names either)."""

    BEGIN = "begin"
    LOCK = "lock"
    RE_PLAN = "re-plan"
    CATALOG_BEFORE = "catalog-before"
    CATALOG_AFTER = "catalog-after"
    CHECKSUM_BEFORE_LOCK = "checksum-before-lock"
    CHECKSUM_BEFORE = "checksum-before"
    CHECKSUM_AFTER = "checksum-after"
    DROP_SHADOW = "drop shadow"
    JOURNAL = "journal"
    COMMIT = "commit"


class ChecksumMode(StrEnum):
    """How table content is compared before and after (see measure.table_checksum)."""

    BINARY = "binary"  # the types' send functions: the target is proven to send the source's bytes
    TEXT = "text"  # the types' output functions: the target is proven to print the source's text
    NORMALIZED = "normalized"  # parsed values: always valid, slowest

    @property
    def cheap(self) -> bool:
        """A mode chosen on samples: a difference may be one of form, checked again with parsed values."""
        return self is not ChecksumMode.NORMALIZED
