package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SaveInventory stores (replacing) a node's inspection inventory and plugin
// data, both JSON documents.
func (s *Store) SaveInventory(ctx context.Context, nodeID int64, inventory, pluginData []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO node_inventory (node_id, inventory, plugin_data, created_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET inventory = excluded.inventory,
		plugin_data = excluded.plugin_data, created_at = excluded.created_at`,
		nodeID, string(inventory), string(pluginData), ts(Now()))
	if err != nil {
		return fmt.Errorf("save inventory: %w", err)
	}
	return nil
}

// Inventory returns a node's stored inventory and plugin data, or
// ErrNotFound when the node was never inspected.
func (s *Store) Inventory(ctx context.Context, nodeID int64) (inventory, pluginData []byte, err error) {
	var inv, pd string
	err = s.db.QueryRowContext(ctx, "SELECT inventory, plugin_data FROM node_inventory WHERE node_id = ?", nodeID).Scan(&inv, &pd)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read inventory: %w", err)
	}
	return []byte(inv), []byte(pd), nil
}
