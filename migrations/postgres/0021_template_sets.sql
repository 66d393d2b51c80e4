-- Template sets kept in the database (issue 24). Keep in step with
-- ../sqlite/0021_template_sets.sql. A set is stored whole, every file, addressed by its digest
-- (the one each outbox row records); a publication makes a set the live one for every process.
-- The newest publication wins; a rollback is a new publication of an earlier set.

CREATE TABLE template_sets (
    digest     TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- The files of a set, by their path inside the templates folder (`layout/base.html`...).
CREATE TABLE template_files (
    digest  TEXT NOT NULL REFERENCES template_sets (digest),
    path    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (digest, path)
);

-- Each publication: `publish` (from a folder or a draft), `rollback` (an earlier set again), or
-- `seed` (the `templates/` folder imported on the first start, once: the unique index).
CREATE TABLE template_publications (
    id           BIGSERIAL PRIMARY KEY,
    digest       TEXT NOT NULL REFERENCES template_sets (digest),
    kind         TEXT NOT NULL CHECK (kind IN ('publish', 'rollback', 'seed')),
    published_by TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    note         TEXT NOT NULL
);
CREATE UNIQUE INDEX template_publications_one_seed ON template_publications (kind) WHERE kind = 'seed';
