-- The node that works on a version's creation and on an operation: when that node is lost, the
-- node holding the `sweep` lease fails the version and the operation (a version left CREATING by
-- a lost node would stay CREATING), and a node restarted after a crash fails its own.
ALTER TABLE versions ADD COLUMN node_id TEXT;
ALTER TABLE operations ADD COLUMN node_id TEXT;
