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

SCHEMAS = {
    "langchain": LANGCHAIN,
    "langchain-v2": LANGCHAIN_V2,
    "llamaindex": LLAMAINDEX,
    "django": DJANGO,
    "supabase": SUPABASE,
}


def grants(schema: ClientSchema) -> str:
    """What the application's role may do: read and write its tables, use their sequences."""
    tables = ", ".join(schema.tables)
    return (
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {APP_ROLE};"
        f" GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};"
    )
