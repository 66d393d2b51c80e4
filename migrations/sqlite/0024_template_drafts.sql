-- The editors' workbench (issue 24): a draft template set per editor, started from the live set,
-- and the approvals of a set before its publication (`approval.templates`). Keep in step with
-- ../postgres/0024_template_drafts.sql. A draft is never live: only a publication is.

-- One draft per editor: the live set's digest it was started from, and when it last changed.
CREATE TABLE template_drafts (
    author      TEXT PRIMARY KEY,
    base_digest TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The draft's files, by their path inside the set (`registration_incomplete/subject.txt`...).
CREATE TABLE template_draft_files (
    author  TEXT NOT NULL REFERENCES template_drafts (author) ON DELETE CASCADE,
    path    TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (author, path)
);

-- An approval of a set, by the digest of its files: any later edit makes another digest, which
-- needs its own approval. `author` is whose draft it was; the approver is never the author.
CREATE TABLE template_approvals (
    digest      TEXT NOT NULL,
    author      TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    PRIMARY KEY (digest, approved_by)
);
