-- The matcher keeps every driver's profile in memory and reads only what changed (issue 13).

-- +goose Up
CREATE INDEX drivers_updated ON drivers (updated_at);

-- +goose Down
DROP INDEX drivers_updated ON drivers;
