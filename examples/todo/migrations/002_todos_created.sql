ALTER TABLE todos ADD COLUMN created_at TIMESTAMP NULL;
CREATE INDEX todos_done ON todos (done);
