-- The node that works on a version's creation and on an operation (see
-- migrations/sqlite/0011_work_nodes.sql).
ALTER TABLE versions ADD COLUMN node_id TEXT;
ALTER TABLE operations ADD COLUMN node_id TEXT;
