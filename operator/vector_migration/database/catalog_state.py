"""The whole catalog an application depends on, read as data, and compared before and after a change.

A migration may change what its plan says (a column's type, an index's access method, a rewritten
view) and nothing else. ``read_catalog`` reads every object of the database's own schemas that a
person or an application could depend on, keyed by name (never by OID, so an object dropped and
created again compares with what it was): schemas, relations, columns, constraints, indexes by
their parts, sequences, functions, triggers, rules, policies, publications and what they publish,
extended statistics, user types, per-role settings, extensions, and every comment and privilege on
them. Objects an extension owns are its own, and the migration's journal schema is the engine's.

What a change may alter of it, and the comparison, are in :mod:`.catalog_compare`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..vocabulary import JOURNAL_SCHEMA

# Rendered type references: "schema.name" with both parts quoted as identifiers (a name may hold a dot).
_TYPE = "pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.typname)"


def _relation_named(oid: str) -> str:
    """A relation's quoted, qualified name by its oid: an index lookup, not a scan.

    A correlated subquery over one of the reading's CTEs scans it for every row: the whole reading of
    1,000 tables took 0.81 s that way, and 0.25 s this way (bench/run.py --only catalog).
    """
    return (
        "(SELECT pg_catalog.quote_ident(xn.nspname) || '.' || pg_catalog.quote_ident(xc.relname) "
        f"FROM pg_catalog.pg_class xc JOIN pg_catalog.pg_namespace xn ON xn.oid = xc.relnamespace WHERE xc.oid = {oid})"
    )


def _type_named(oid: str) -> str:
    """A type's quoted, qualified name by its oid (an index lookup)."""
    return (
        "(SELECT pg_catalog.quote_ident(xn.nspname) || '.' || pg_catalog.quote_ident(xt.typname) "
        f"FROM pg_catalog.pg_type xt JOIN pg_catalog.pg_namespace xn ON xn.oid = xt.typnamespace WHERE xt.oid = {oid})"
    )


# size: one statement so the whole reading is one snapshot and one round trip; each part is a kind
_READ = f"""
WITH ext AS (
    SELECT classid, objid FROM pg_catalog.pg_depend WHERE deptype = 'e'
), ns AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                                             AND objid = n.oid)
), types AS (
    SELECT t.oid, {_TYPE} AS ref FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
), rel AS (
    SELECT c.*, ns.nspname,
           pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS qname
      FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')
       AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                             AND objid = c.oid)
), acl AS (
    SELECT a.oid, pg_catalog.array_agg(x::text ORDER BY x::text) AS items
      FROM (SELECT oid, pg_catalog.unnest(relacl) AS x FROM pg_catalog.pg_class WHERE relacl IS NOT NULL) a
     GROUP BY a.oid
)
SELECT 'schema', pg_catalog.jsonb_build_array(pg_catalog.quote_ident(nspname)), pg_catalog.jsonb_build_object(
         'owner', pg_catalog.pg_get_userbyid(nspowner),
         'acl', (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(nspacl) x),
         'comment', pg_catalog.obj_description(oid, 'pg_namespace'))
  FROM ns
UNION ALL
SELECT 'relation', pg_catalog.jsonb_build_array(r.qname), pg_catalog.jsonb_build_object(
         'kind', r.relkind::text,
         'table', CASE WHEN r.relkind = 'S' THEN (SELECT {_relation_named("d.refobjid")}
                                                  FROM pg_catalog.pg_depend d
                                                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                   AND d.objid = r.oid AND d.deptype IN ('a', 'i')
                                                   AND d.refobjsubid > 0) END,
         'owner', pg_catalog.pg_get_userbyid(r.relowner),
         'acl', acl.items,
         'options', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(r.reloptions) o),
         'persistence', r.relpersistence::text,
         'row security', r.relrowsecurity, 'forced row security', r.relforcerowsecurity,
         'replica identity', r.relreplident::text,
         'tablespace', (SELECT spcname FROM pg_catalog.pg_tablespace WHERE oid = r.reltablespace),
         'partition of', (SELECT {_relation_named("h.inhparent")} FROM pg_catalog.pg_inherits h
                           WHERE h.inhrelid = r.oid AND r.relispartition),
         'partition bound', CASE WHEN r.relispartition THEN pg_catalog.pg_get_expr(r.relpartbound, r.oid) END,
         'partition key', CASE WHEN r.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(r.oid) END,
         'inherits', (SELECT pg_catalog.array_agg({_relation_named("h.inhparent")} ORDER BY h.inhseqno)
                        FROM pg_catalog.pg_inherits h WHERE h.inhrelid = r.oid AND NOT r.relispartition),
         'definition', CASE WHEN r.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(r.oid) END,
         'populated', CASE WHEN r.relkind = 'm' THEN r.relispopulated END,
         'comment', pg_catalog.obj_description(r.oid, 'pg_class'))
  FROM rel r LEFT JOIN acl ON acl.oid = r.oid
 WHERE r.relkind NOT IN ('i', 'I')
UNION ALL
SELECT 'column', pg_catalog.jsonb_build_array(r.qname, pg_catalog.quote_ident(a.attname)),
       pg_catalog.jsonb_build_object(
         'table', r.qname,
         'position', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute b
                       WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum <= a.attnum),
         'type', ty.ref, 'typmod', a.atttypmod, 'dimensions', a.attndims,
         'not null', a.attnotnull,
         'default', pg_catalog.pg_get_expr(d.adbin, d.adrelid),
         'generated', NULLIF(a.attgenerated::text, ''), 'identity', NULLIF(a.attidentity::text, ''),
         'collation', (SELECT collname FROM pg_catalog.pg_collation WHERE oid = a.attcollation
                        AND a.attcollation <> t.typcollation),
         'storage', CASE WHEN a.attstorage = t.typstorage THEN 'the type''s (' || a.attstorage::text || ')'
                         ELSE a.attstorage::text END,
         'compression', NULLIF(a.attcompression::text, ''),
         'statistics', a.attstattarget,
         'options', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(a.attoptions) o),
         'acl', (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(a.attacl) x),
         'inherited', NOT a.attislocal,
         'comment', pg_catalog.col_description(a.attrelid, a.attnum))
  FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid JOIN types ty ON ty.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'constraint', pg_catalog.jsonb_build_array(r.qname, pg_catalog.quote_ident(k.conname)),
       pg_catalog.jsonb_build_object(
         'table', r.qname, 'kind', k.contype::text,
         'definition', pg_catalog.pg_get_constraintdef(k.oid),
         'deferrable', k.condeferrable, 'deferred', k.condeferred, 'validated', k.convalidated,
         -- NO INHERIT is a CHECK's or a NOT NULL's (CREATE TABLE's grammar): an index-backed key's flag means
         -- nothing, and pg_restore of a partition's key (ADD CONSTRAINT ON ONLY, then ATTACH) sets it
         'no inherit', CASE WHEN k.contype IN ('c', 'n') THEN k.connoinherit END, 'inherited', NOT k.conislocal,
         'index', (SELECT pg_catalog.quote_ident(i.relname) FROM pg_catalog.pg_class i WHERE i.oid = k.conindid),
         'comment', pg_catalog.obj_description(k.oid, 'pg_constraint'))
  FROM pg_catalog.pg_constraint k JOIN rel r ON r.oid = k.conrelid
UNION ALL
SELECT 'index', pg_catalog.jsonb_build_array(r.qname), pg_catalog.jsonb_build_object(
         'table', t.qname,
         'method', am.amname,
         'keys', (SELECT pg_catalog.array_agg(pg_catalog.pg_get_indexdef(i.indexrelid, n, true) ORDER BY n)
                    FROM pg_catalog.generate_series(1, i.indnkeyatts) n),
         'included', (SELECT pg_catalog.array_agg(pg_catalog.pg_get_indexdef(i.indexrelid, n, true) ORDER BY n)
                        FROM pg_catalog.generate_series(i.indnkeyatts + 1, i.indnatts) n),
         'operator classes', (SELECT pg_catalog.array_agg(pg_catalog.quote_ident(on_.nspname) || '.'
                                     || pg_catalog.quote_ident(oc.opcname) ORDER BY u.n)
                                FROM pg_catalog.unnest(i.indclass::pg_catalog.oid[]) WITH ORDINALITY u(oc_oid, n)
                                JOIN pg_catalog.pg_opclass oc ON oc.oid = u.oc_oid
                                JOIN pg_catalog.pg_namespace on_ ON on_.oid = oc.opcnamespace),
         'key options', i.indoption::text,
         'collations', i.indcollation::text,
         'predicate', pg_catalog.pg_get_expr(i.indpred, i.indrelid, true),
         'options', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(r.reloptions) o),
         'unique', i.indisunique, 'nulls not distinct', i.indnullsnotdistinct, 'primary', i.indisprimary,
         'clustered', i.indisclustered, 'replica identity', i.indisreplident,
         'tablespace', (SELECT spcname FROM pg_catalog.pg_tablespace WHERE oid = r.reltablespace),
         'partition of', (SELECT {_relation_named("h.inhparent")} FROM pg_catalog.pg_inherits h
                           WHERE h.inhrelid = r.oid),
         'comment', pg_catalog.obj_description(r.oid, 'pg_class'))
  FROM rel r JOIN pg_catalog.pg_index i ON i.indexrelid = r.oid JOIN rel t ON t.oid = i.indrelid
  JOIN pg_catalog.pg_am am ON am.oid = r.relam
UNION ALL
SELECT 'sequence', pg_catalog.jsonb_build_array(r.qname), pg_catalog.jsonb_build_object(
         'table', (SELECT {_relation_named("d.refobjid")} FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0),
         'owned by', (SELECT {_relation_named("d.refobjid")} || '.' || pg_catalog.quote_ident(a.attname)
                        FROM pg_catalog.pg_depend d
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                         AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0),
         'identity', EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = r.oid
                                AND d.deptype = 'i'),
         'type', {_type_named("s.seqtypid")},
         'start', s.seqstart, 'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
         'cache', s.seqcache, 'cycle', s.seqcycle,
         'last value', pg_catalog.pg_sequence_last_value(r.oid))
  FROM rel r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT 'function', pg_catalog.jsonb_build_array(
         pg_catalog.quote_ident(ns.nspname), pg_catalog.quote_ident(p.proname),
         (SELECT pg_catalog.jsonb_agg({_type_named("u.typ")} ORDER BY u.n)
            FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY u(typ, n))),
       pg_catalog.jsonb_build_object(
         'kind', p.prokind::text,
         'result', {_type_named("p.prorettype")}, 'returns a set', p.proretset,
         'arguments', pg_catalog.pg_get_function_arguments(p.oid),
         'language', (SELECT lanname FROM pg_catalog.pg_language WHERE oid = p.prolang),
         'source', p.prosrc,
         'owner', pg_catalog.pg_get_userbyid(p.proowner),
         'acl', (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(p.proacl) x),
         'volatility', p.provolatile::text, 'strict', p.proisstrict, 'security definer', p.prosecdef,
         'leakproof', p.proleakproof, 'parallel', p.proparallel::text, 'cost', p.procost, 'rows', p.prorows,
         'settings', (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(p.proconfig) o),
         'comment', pg_catalog.obj_description(p.oid, 'pg_proc'))
  FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
 WHERE NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND objid = p.oid)
UNION ALL
SELECT 'trigger', pg_catalog.jsonb_build_array(r.qname, pg_catalog.quote_ident(g.tgname)),
       pg_catalog.jsonb_build_object(
         'table', r.qname, 'definition', pg_catalog.pg_get_triggerdef(g.oid), 'enabled', g.tgenabled::text,
         'comment', pg_catalog.obj_description(g.oid, 'pg_trigger'))
  FROM pg_catalog.pg_trigger g JOIN rel r ON r.oid = g.tgrelid
 WHERE NOT g.tgisinternal
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
                    WHERE p.oid = g.tgfoid AND pn.nspname = $1)
UNION ALL
SELECT 'rule', pg_catalog.jsonb_build_array(r.qname, pg_catalog.quote_ident(w.rulename)),
       pg_catalog.jsonb_build_object(
         'table', r.qname, 'definition', pg_catalog.pg_get_ruledef(w.oid), 'enabled', w.ev_enabled::text,
         'comment', pg_catalog.obj_description(w.oid, 'pg_rewrite'))
  FROM pg_catalog.pg_rewrite w JOIN rel r ON r.oid = w.ev_class
 WHERE w.rulename <> '_RETURN'
UNION ALL
SELECT 'policy', pg_catalog.jsonb_build_array(r.qname, pg_catalog.quote_ident(y.polname)),
       pg_catalog.jsonb_build_object(
         'table', r.qname, 'command', y.polcmd::text, 'permissive', y.polpermissive,
         'roles', (SELECT pg_catalog.array_agg(CASE WHEN x = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x) END
                                               ORDER BY 1) FROM pg_catalog.unnest(y.polroles) x),
         'using', pg_catalog.pg_get_expr(y.polqual, y.polrelid),
         'check', pg_catalog.pg_get_expr(y.polwithcheck, y.polrelid),
         'comment', pg_catalog.obj_description(y.oid, 'pg_policy'))
  FROM pg_catalog.pg_policy y JOIN rel r ON r.oid = y.polrelid
UNION ALL
SELECT 'publication', pg_catalog.jsonb_build_array(pg_catalog.quote_ident(b.pubname)), pg_catalog.jsonb_build_object(
         'owner', pg_catalog.pg_get_userbyid(b.pubowner), 'all tables', b.puballtables,
         'insert', b.pubinsert, 'update', b.pubupdate, 'delete', b.pubdelete, 'truncate', b.pubtruncate,
         'via root', b.pubviaroot, 'comment', pg_catalog.obj_description(b.oid, 'pg_publication'))
  FROM pg_catalog.pg_publication b
UNION ALL
SELECT 'published table', pg_catalog.jsonb_build_array(pg_catalog.quote_ident(b.pubname), r.qname),
       pg_catalog.jsonb_build_object(
         'table', r.qname,
         'columns', (SELECT pg_catalog.array_agg(pg_catalog.quote_ident(a.attname) ORDER BY a.attname)
                       FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs::pg_catalog.int2[])),
         'row filter', pg_catalog.pg_get_expr(pr.prqual, pr.prrelid))
  FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication b ON b.oid = pr.prpubid
  JOIN rel r ON r.oid = pr.prrelid
UNION ALL
SELECT 'published schema', pg_catalog.jsonb_build_array(pg_catalog.quote_ident(b.pubname),
                                                        pg_catalog.quote_ident(ns.nspname)), '{{}}'::pg_catalog.jsonb
  FROM pg_catalog.pg_publication_namespace pn JOIN pg_catalog.pg_publication b ON b.oid = pn.pnpubid
  JOIN ns ON ns.oid = pn.pnnspid
UNION ALL
SELECT 'statistics', pg_catalog.jsonb_build_array(
         pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(x.stxname)),
       pg_catalog.jsonb_build_object(
         'table', r.qname, 'definition', pg_catalog.pg_get_statisticsobjdef_columns(x.oid),
         'kinds', x.stxkind::text, 'target', x.stxstattarget, 'owner', pg_catalog.pg_get_userbyid(x.stxowner),
         'comment', pg_catalog.obj_description(x.oid, 'pg_statistic_ext'))
  FROM pg_catalog.pg_statistic_ext x JOIN ns ON ns.oid = x.stxnamespace JOIN rel r ON r.oid = x.stxrelid
UNION ALL
SELECT 'type', pg_catalog.jsonb_build_array(ty.ref), pg_catalog.jsonb_build_object(
         'kind', t.typtype::text,
         'base', CASE WHEN t.typtype = 'd' THEN {_type_named("t.typbasetype")} END,
         'typmod', t.typtypmod, 'not null', t.typnotnull, 'default', t.typdefault,
         'owner', pg_catalog.pg_get_userbyid(t.typowner),
         'acl', (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(t.typacl) x),
         'comment', pg_catalog.obj_description(t.oid, 'pg_type'))
  FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace JOIN types ty ON ty.oid = t.oid
 WHERE t.typtype IN ('d', 'e', 'r', 'm') OR (t.typtype = 'c' AND
       (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
   AND NOT EXISTS (SELECT 1 FROM ext WHERE classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND objid = t.oid)
UNION ALL
SELECT 'setting', pg_catalog.jsonb_build_array(
         CASE WHEN s.setrole = 0 THEN '(every role)' ELSE pg_catalog.pg_get_userbyid(s.setrole) END,
         CASE WHEN s.setdatabase = 0 THEN 'every database' ELSE 'this database' END,
         pg_catalog.split_part(o, '=', 1)),
       pg_catalog.jsonb_build_object('value', pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1))
  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) o
 WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
    OR (s.setdatabase = 0 AND s.setrole <> 0)
UNION ALL
SELECT 'extension', pg_catalog.jsonb_build_array(pg_catalog.quote_ident(e.extname)), pg_catalog.jsonb_build_object(
         'schema', (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = e.extnamespace))
  FROM pg_catalog.pg_extension e
"""


# Names are quoted always, as the engine's quote_ident does, so a key reads as the plan's SQL names it.
_READ = re.sub(r"pg_catalog\.quote_ident\(([^()]*)\)", r"""('"' || pg_catalog.replace(\1, '"', '""') || '"')""", _READ)


def _key(kind: str, parts: list[Any]) -> str:
    """An object's name as a person reads it: ``column public.items.embedding``."""
    if kind == "function":
        schema, name, arguments = parts
        return f"function {schema}.{name}({', '.join(arguments or [])})"
    if kind in {"column", "constraint", "trigger", "rule", "policy"}:
        return f"{kind} {parts[0]}.{parts[1]}"
    if kind in {"published table", "published schema"}:
        return f"{kind} {parts[1]} in publication {parts[0]}"
    if kind == "setting":
        role, scope, name = parts
        return f"setting {name} of {role} in {scope}"
    return f"{kind} {parts[0]}"


_PUBLICATION_KINDS = frozenset({"publication", "published table", "published schema"})


@dataclass(frozen=True)
class CatalogObject:
    """One object: its kind, its name's parts (function arguments are type references), its attributes."""

    kind: str
    parts: tuple[Any, ...]
    attributes: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The object's name, as a person reads it."""
        return _key(self.kind, list(self.parts))

    @property
    def family(self) -> str:
        """A function's name without its arguments (the plan names the functions it carries so), else the key."""
        if self.kind == "function":
            return f"function {self.parts[0]}.{self.parts[1]}"
        return self.key

    def is_own(self, own: frozenset[str]) -> bool:
        """Whether the object is the migration's own: one of its relations, a part of one, or its publication."""
        if self.kind in _PUBLICATION_KINDS:
            return str(self.parts[0]) in own
        return self.table in own

    @property
    def table(self) -> str | None:
        """The relation a sub-object belongs to (a column's, an index's), or the relation itself."""
        owner = self.attributes.get("table")
        if owner is None and self.kind == "relation":
            return str(self.parts[0])
        return None if owner is None else str(owner)


@dataclass(frozen=True)
class CatalogState:
    """Every object of a reading, by key."""

    objects: Mapping[str, CatalogObject]


async def read_catalog(conn: asyncpg.Connection) -> CatalogState:
    """Everything an application depends on, as one snapshot."""
    rows = await conn.fetch(_READ, JOURNAL_SCHEMA)
    objects = {}
    for kind, parts, attributes in rows:
        found = CatalogObject(kind, tuple(json.loads(parts)), json.loads(attributes))
        objects[found.key] = found
    return CatalogState(objects)
