-- +goose Up
-- Nodes keep the columns the API filters, sorts and locks on; the whole node
-- is also one JSON document in "data" (columns win on read). SQLite dialect;
-- PostgreSQL gets its own migrations directory (BIGSERIAL ids) with pgx.
CREATE TABLE nodes (
    id                     INTEGER PRIMARY KEY,
    uuid                   VARCHAR(36) NOT NULL UNIQUE,
    name                   VARCHAR(255) UNIQUE,
    driver                 VARCHAR(255) NOT NULL,
    power_state            VARCHAR(32),
    target_power_state     VARCHAR(32),
    provision_state        VARCHAR(32) NOT NULL,
    target_provision_state VARCHAR(32),
    provision_updated_at   VARCHAR(40),
    maintenance            BOOLEAN NOT NULL DEFAULT FALSE,
    fault                  VARCHAR(64),
    instance_uuid          VARCHAR(36) UNIQUE,
    resource_class         VARCHAR(80),
    conductor_group        VARCHAR(255) NOT NULL DEFAULT '',
    owner                  VARCHAR(255),
    lessee                 VARCHAR(255),
    retired                BOOLEAN NOT NULL DEFAULT FALSE,
    shard                  VARCHAR(255),
    reservation            VARCHAR(255),
    created_at             VARCHAR(40) NOT NULL,
    updated_at             VARCHAR(40),
    data                   TEXT NOT NULL
);
CREATE INDEX nodes_provision_state ON nodes (provision_state);
CREATE INDEX nodes_reservation ON nodes (reservation);

CREATE TABLE ports (
    id         INTEGER PRIMARY KEY,
    uuid       VARCHAR(36) NOT NULL UNIQUE,
    address    VARCHAR(18) NOT NULL UNIQUE,
    node_id    INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    created_at VARCHAR(40) NOT NULL,
    updated_at VARCHAR(40),
    data       TEXT NOT NULL
);
CREATE INDEX ports_node_id ON ports (node_id);

-- +goose Down
DROP TABLE ports;
DROP TABLE nodes;
