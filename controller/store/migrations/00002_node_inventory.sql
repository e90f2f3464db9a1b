-- +goose Up
-- Hardware inventory reported by the agent during inspection
-- (GET /v1/nodes/{id}/inventory), kept apart from the node row because it
-- is large and rarely read.
CREATE TABLE node_inventory (
    node_id     INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    inventory   TEXT NOT NULL,
    plugin_data TEXT NOT NULL,
    created_at  VARCHAR(40) NOT NULL
);

-- +goose Down
DROP TABLE node_inventory;
