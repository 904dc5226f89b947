"""The schemas that popular client libraries create, written from their documented DDL, with their queries.

Each is what the library creates on first use (SQLAlchemy models, Django migrations, a platform's
guide), at 3 dimensions so a run takes seconds, and holds rows. ``search`` is the query the
library sends for a similarity search (vectors as untyped text, as the drivers send them), run as
the application's role; it must answer the same after a migration.

- langchain-postgres ``PGVector`` (langchain_postgres/vectorstores.py, its SQLAlchemy models): a
  collection table and an embedding table holding a foreign key to it (``ON DELETE CASCADE``),
  an *undimensioned* ``vector`` column, jsonb metadata with a ``jsonb_path_ops`` GIN index.
- langchain-postgres ``PGVectorStore`` (v2: langchain_postgres/v2/engine.py ``init_vectorstore_table``
  and indexes.py ``HNSWIndex``): a table of its own with a UUID key, a dimensioned ``NOT NULL``
  vector, a metadata column and JSON metadata, and ``<table>langchainvectorindex``. Its search
  selects ``cosine_distance(embedding, $1)`` by name, which the target must offer under that name
  (README, "Functions called by name"); here the distance is read through the operator instead.
- LlamaIndex ``PGVectorStore`` (llama_index/vector_stores/postgres/base.py): ``data_<name>`` with
  a bigserial key, a generated ``tsvector`` column and its GIN index, an expression index on
  ``metadata_ ->> 'ref_doc_id'``, and HNSW built with ``hnsw_kwargs``.
- Django with pgvector-python (``VectorExtension``, ``VectorField``, ``HnswIndex``): identity
  keys, a foreign key the vector table holds and one that *references* it, both ``DEFERRABLE
  INITIALLY DEFERRED`` as Django writes them.
- Supabase's guide (supabase.com/docs/guides/ai/vector-columns): a ``documents`` table with
  row-level security and a policy, and ``match_documents`` in SQL.
- pgvector's own README ("Getting Started", "Querying", "Indexing"): ``items`` with a
  ``bigserial`` key and ``vector(3)``, its HNSW index as the README creates it (unnamed, default
  options), and its query for a row's nearest neighbours by a subquery.
"""

from __future__ import annotations

from dataclasses import dataclass

APP_ROLE = "vmig_client_app"


@dataclass(frozen=True)
class ClientSchema:
    """A client library's schema, its similarity query, and the tables it holds rows in."""

    name: str
    ddl: str
    search: str
    tables: tuple[str, ...]
    grants: str | None = None  # what the application's role may do, when not the default (grants below)


ROWS = "generate_series(1, 200) i"
VECTOR = "ARRAY[cos(i), sin(i), (i % 7) / 7.0]::real[]::vector"

LANGCHAIN = ClientSchema(
    name="langchain-postgres PGVector",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE langchain_pg_collection (uuid uuid NOT NULL PRIMARY KEY, name varchar NOT NULL UNIQUE,
                                          cmetadata json);
    CREATE TABLE langchain_pg_embedding (
        id varchar NOT NULL PRIMARY KEY,
        collection_id uuid REFERENCES langchain_pg_collection (uuid) ON DELETE CASCADE,
        embedding vector,
        document varchar,
        cmetadata jsonb);
    CREATE INDEX ix_cmetadata_gin ON langchain_pg_embedding USING gin (cmetadata jsonb_path_ops);
    INSERT INTO langchain_pg_collection VALUES ('8f14e45f-ceea-467f-a8f0-5a1b2c3d4e5f', 'docs', '{{}}');
    INSERT INTO langchain_pg_embedding
    SELECT 'doc-' || i, '8f14e45f-ceea-467f-a8f0-5a1b2c3d4e5f', {VECTOR}, 'text ' || i,
           pg_catalog.jsonb_build_object('page', i % 10)
      FROM {ROWS};
    """,
    search="""
    SELECT e.id, e.document, round((e.embedding <=> '[1,0,0]')::numeric, 6) AS distance
      FROM langchain_pg_embedding e JOIN langchain_pg_collection c ON e.collection_id = c.uuid
     WHERE c.name = 'docs' AND e.cmetadata @> '{"page": 3}'
     ORDER BY e.embedding <=> '[1,0,0]', e.id LIMIT 4
    """,
    tables=("langchain_pg_collection", "langchain_pg_embedding"),
)

LANGCHAIN_V2 = ClientSchema(
    name="langchain-postgres PGVectorStore (v2)",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE "public"."langchain_docs"(
        "langchain_id" UUID PRIMARY KEY,
        "content" TEXT NOT NULL,
        "embedding" vector(3) NOT NULL,
        "page" INTEGER ,
        "langchain_metadata" JSON
    );
    CREATE INDEX "langchain_docslangchainvectorindex" ON "public"."langchain_docs"
      USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
    INSERT INTO langchain_docs
    SELECT md5(i::text)::uuid, 'text ' || i, {VECTOR}, i % 10, pg_catalog.json_build_object('source', 'doc-' || i)
      FROM {ROWS};
    """,
    search="""
    SELECT "langchain_id", "content", "page", round(("embedding" <=> '[1,0,0]')::numeric, 6) AS distance
      FROM "public"."langchain_docs" WHERE page = 3 ORDER BY "embedding" <=> '[1,0,0]' LIMIT 4
    """,
    tables=("langchain_docs",),
)

LLAMAINDEX = ClientSchema(
    name="LlamaIndex PGVectorStore",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE data_llamaindex (
        id bigserial PRIMARY KEY,
        text varchar NOT NULL,
        metadata_ json,
        node_id varchar,
        embedding vector(3),
        text_search_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);
    CREATE INDEX data_llamaindex_idx_1 ON data_llamaindex ((metadata_ ->> 'ref_doc_id'));
    CREATE INDEX ix_data_llamaindex_text_search_tsv ON data_llamaindex USING gin (text_search_tsv);
    CREATE INDEX llamaindex_embedding_idx ON data_llamaindex USING hnsw (embedding vector_cosine_ops)
      WITH (m = 16, ef_construction = 64);
    INSERT INTO data_llamaindex (text, metadata_, node_id, embedding)
    SELECT 'node text ' || i, pg_catalog.json_build_object('ref_doc_id', 'doc-' || (i % 20)), 'node-' || i, {VECTOR}
      FROM {ROWS};
    """,
    search="""
    SELECT id, node_id, round((embedding <=> '[0,1,0]')::numeric, 6) AS distance
      FROM data_llamaindex WHERE metadata_ ->> 'ref_doc_id' <> 'doc-3'
     ORDER BY embedding <=> '[0,1,0]', id LIMIT 5
    """,
    tables=("data_llamaindex",),
)

DJANGO = ClientSchema(
    name="Django + pgvector-python",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE shop_category (id bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
                                name varchar(100) NOT NULL);
    CREATE TABLE shop_item (id bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
                            embedding vector(3) NULL, category_id bigint NOT NULL);
    ALTER TABLE shop_item ADD CONSTRAINT shop_item_category_id_fk_shop_category_id
      FOREIGN KEY (category_id) REFERENCES shop_category (id) DEFERRABLE INITIALLY DEFERRED;
    CREATE INDEX shop_item_category_id ON shop_item (category_id);
    CREATE INDEX item_embedding_idx ON shop_item USING hnsw (embedding vector_l2_ops)
      WITH (m = 16, ef_construction = 64);
    CREATE TABLE shop_review (id bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
                              stars integer NOT NULL, item_id bigint NOT NULL);
    ALTER TABLE shop_review ADD CONSTRAINT shop_review_item_id_fk_shop_item_id
      FOREIGN KEY (item_id) REFERENCES shop_item (id) DEFERRABLE INITIALLY DEFERRED;
    CREATE INDEX shop_review_item_id ON shop_review (item_id);
    INSERT INTO shop_category (name) SELECT 'category ' || c FROM generate_series(1, 5) c;
    INSERT INTO shop_item (embedding, category_id) SELECT {VECTOR}, 1 + i % 5 FROM {ROWS};
    INSERT INTO shop_review (stars, item_id) SELECT 1 + i % 5, i FROM {ROWS};
    """,
    search="""
    SELECT i.id, c.name, round((i.embedding <-> '[1,1,0]')::numeric,6) AS distance,
           (SELECT count(*) FROM shop_review r WHERE r.item_id = i.id) AS reviews
      FROM shop_item i JOIN shop_category c ON c.id = i.category_id
     ORDER BY i.embedding <-> '[1,1,0]', i.id LIMIT 5
    """,
    tables=("shop_category", "shop_item", "shop_review"),
)

SUPABASE = ClientSchema(
    name="Supabase documents + RLS + match_documents",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE documents (id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY, content text, embedding vector(3));
    INSERT INTO documents (content, embedding) SELECT 'doc ' || i, {VECTOR} FROM {ROWS};
    CREATE INDEX ON documents USING hnsw (embedding vector_ip_ops);
    ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
    CREATE POLICY "documents are readable" ON documents FOR SELECT TO {APP_ROLE} USING (id % 2 = 0);
    CREATE FUNCTION match_documents(query_embedding vector(3), match_threshold float, match_count int)
    RETURNS TABLE (id bigint, content text, similarity float) LANGUAGE sql STABLE AS $$
      SELECT documents.id, documents.content, 1 - (documents.embedding <=> query_embedding) AS similarity
        FROM documents
       WHERE 1 - (documents.embedding <=> query_embedding) > match_threshold
       ORDER BY documents.embedding <=> query_embedding
       LIMIT match_count;
    $$;
    """,
    search="SELECT id, round(similarity::numeric, 6) AS s FROM match_documents('[1,0,0]', 0.2, 6)",
    tables=("documents",),
)

PGVECTOR_README = ClientSchema(
    name="pgvector README",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE items (id bigserial PRIMARY KEY, embedding vector(3));
    INSERT INTO items (embedding) VALUES ('[1,2,3]'), ('[4,5,6]');
    INSERT INTO items (embedding) SELECT {VECTOR} FROM {ROWS};
    CREATE INDEX ON items USING hnsw (embedding vector_l2_ops);
    """,
    search="""
    SELECT id FROM items WHERE id != 1 ORDER BY embedding <-> (SELECT embedding FROM items WHERE id = 1), id LIMIT 5
    """,
    tables=("items",),
)

# The shapes an independent whole-catalog check found lost (issue "Nothing of the schema lost"):
# each is what an application or its operators make, and each must come through every strategy.

DJANGO_TWO_VECTOR_MODELS = ClientSchema(
    name="Django: two models with a VectorField and a ForeignKey between them",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE vecapp_item (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, embedding vector(3) NOT NULL);
    CREATE TABLE vecapp_chunk (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, embedding vector(3),
                               item_id bigint NOT NULL);
    ALTER TABLE vecapp_chunk ADD CONSTRAINT vecapp_chunk_item_id_fk FOREIGN KEY (item_id) REFERENCES vecapp_item (id)
      DEFERRABLE INITIALLY DEFERRED;
    CREATE INDEX vecapp_chunk_item_id ON vecapp_chunk (item_id);
    CREATE INDEX vecapp_item_hnsw ON vecapp_item USING hnsw (embedding vector_l2_ops);
    CREATE INDEX vecapp_chunk_hnsw ON vecapp_chunk USING hnsw (embedding vector_cosine_ops);
    INSERT INTO vecapp_item (embedding) SELECT {VECTOR} FROM {ROWS};
    INSERT INTO vecapp_chunk (embedding, item_id) SELECT {VECTOR}, 1 + i % 50 FROM {ROWS};
    """,
    search="""
    SELECT c.id, c.item_id, round((c.embedding <=> '[1,0,0]')::numeric, 6) AS distance,
           (SELECT conname FROM pg_constraint WHERE conname = 'vecapp_chunk_item_id_fk') AS fk
      FROM vecapp_chunk c JOIN vecapp_item i ON i.id = c.item_id ORDER BY c.embedding <=> '[1,0,0]', c.id LIMIT 5
    """,
    tables=("vecapp_item", "vecapp_chunk"),
)

COLUMN_GRANTS = ClientSchema(
    name="A writer role holding UPDATE on two columns only",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(3), locked boolean DEFAULT false);
    INSERT INTO notes SELECT i, 'note ' || i, {VECTOR} FROM {ROWS};
    CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_l2_ops);
    """,
    # the application updates a vector through its column grant, inside the search (a data-modifying CTE)
    search="""
    WITH touched AS (UPDATE notes SET embedding = embedding, body = body WHERE id = 7 RETURNING id)
    SELECT n.id, round((n.embedding <-> '[1,1,0]')::numeric, 6) AS d, (SELECT count(*) FROM touched) AS updated
      FROM notes n ORDER BY n.embedding <-> '[1,1,0]', n.id LIMIT 5
    """,
    tables=("notes",),
    grants="GRANT SELECT ON notes TO {app}; GRANT UPDATE (embedding, body) ON notes TO {app};",
)

SERIAL_TABLE = ClientSchema(
    name="A serial key whose sequence the application names",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE documents (id serial PRIMARY KEY, content text, embedding vector(3));
    INSERT INTO documents (content, embedding) SELECT 'doc ' || i, {VECTOR} FROM {ROWS};
    CREATE TABLE documents_audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, doc int,
                                  embedding vector(3), seen int DEFAULT nextval('documents_id_seq'));
    INSERT INTO documents_audit (doc, embedding) SELECT i, {VECTOR} FROM generate_series(1, 20) i;
    CREATE INDEX documents_hnsw ON documents USING hnsw (embedding vector_cosine_ops);
    """,
    search="""
    SELECT d.id, round((d.embedding <=> '[0,1,0]')::numeric, 6) AS distance,
           (SELECT last_value FROM documents_id_seq) AS last_id,
           (SELECT last_value FROM documents_audit_id_seq) AS last_audit_id
      FROM documents d ORDER BY d.embedding <=> '[0,1,0]', d.id LIMIT 5
    """,
    tables=("documents", "documents_audit"),
    grants="GRANT SELECT ON documents, documents_audit, documents_id_seq, documents_audit_id_seq TO {app};",
)

COMMENTED_SQL_FUNCTION = ClientSchema(
    name="A commented SQL function, as a person wrote it",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE passages (id int PRIMARY KEY, body text, embedding vector(3));
    INSERT INTO passages SELECT i, 'passage ' || i, {VECTOR} FROM {ROWS};
    CREATE INDEX passages_hnsw ON passages USING hnsw (embedding vector_ip_ops);
    CREATE FUNCTION nearest_passages(query vector(3), how_many int DEFAULT 5)
    RETURNS SETOF passages LANGUAGE sql STABLE AS $body$
        -- the closest passages first (inner product: larger is closer)
        SELECT *
          FROM passages
         ORDER BY embedding <#> query   /* uses passages_hnsw */
         LIMIT how_many;
    $body$;
    COMMENT ON FUNCTION nearest_passages(vector, int) IS 'search helper';
    """,
    search="SELECT id FROM nearest_passages('[1,0,0]', 6)",
    tables=("passages",),
)

TABLE_SETTINGS = ClientSchema(
    name="A table in publications, with a rule, storage and statistics settings, CLUSTER and comments",
    ddl=f"""
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(3))
      WITH (autovacuum_vacuum_scale_factor = 0.05, fillfactor = 90);
    INSERT INTO docs SELECT i, 'doc ' || i, {VECTOR} FROM {ROWS};
    CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops);
    CREATE INDEX docs_body ON docs (body);
    COMMENT ON INDEX docs_hnsw IS 'the search index';
    COMMENT ON INDEX docs_body IS 'lookups by body';
    COMMENT ON CONSTRAINT docs_pkey ON docs IS 'one row per document';
    COMMENT ON TABLE docs IS 'the documents';
    ALTER TABLE docs ALTER COLUMN embedding SET STORAGE PLAIN;
    ALTER TABLE docs ALTER COLUMN body SET STATISTICS 500;
    ALTER TABLE docs ALTER COLUMN body SET (n_distinct = -0.5);
    CREATE STATISTICS docs_stats (ndistinct, dependencies) ON id, body FROM docs;
    COMMENT ON STATISTICS docs_stats IS 'id and body move together';
    CLUSTER docs USING docs_pkey;
    CREATE PUBLICATION app_pub FOR TABLE docs;
    CREATE PUBLICATION app_changes FOR TABLE docs (id, body) WHERE (id > 10) WITH (publish = 'insert, update');
    CREATE RULE docs_never_delete AS ON DELETE TO docs DO INSTEAD NOTHING;
    COMMENT ON RULE docs_never_delete ON docs IS 'deletes are archived elsewhere';
    """,
    search="""
    SELECT id, round((embedding <-> '[1,0,0]')::numeric, 6) AS d FROM docs ORDER BY embedding <-> '[1,0,0]', id LIMIT 5
    """,
    tables=("docs",),
)

SCHEMAS = {
    "langchain": LANGCHAIN,
    "langchain-v2": LANGCHAIN_V2,
    "llamaindex": LLAMAINDEX,
    "django": DJANGO,
    "supabase": SUPABASE,
    "pgvector-readme": PGVECTOR_README,
    "django-two-vector-models": DJANGO_TWO_VECTOR_MODELS,
    "column-grants": COLUMN_GRANTS,
    "serial": SERIAL_TABLE,
    "commented-function": COMMENTED_SQL_FUNCTION,
    "table-settings": TABLE_SETTINGS,
}


def grants(schema: ClientSchema) -> str:
    """What the application's role may do: read and write its tables, use their sequences."""
    if schema.grants is not None:
        return schema.grants.format(app=APP_ROLE)
    tables = ", ".join(schema.tables)
    return (
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {APP_ROLE};"
        f" GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};"
    )
