-- Several nodes and the storage outbox: a recording is in the local folder of the node that finalized it, so
-- only that node can encrypt or upload it.  NULL: any node (rows queued before this migration, or by
-- `callrec storage migrate`, which works on the folder of the host it runs on).
ALTER TABLE storage_outbox ADD COLUMN node text;
COMMENT ON COLUMN storage_outbox.node IS 'the node whose recordings folder holds the file ([node] name); NULL: any node';
