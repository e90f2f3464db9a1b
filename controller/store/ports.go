package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ironlite/ironlite/controller/model"
)

const portCols = "p.id, p.node_id, n.uuid, p.data"

func scanPort(row interface{ Scan(...any) error }) (*model.Port, error) {
	var (
		id, nodeID int64
		nodeUUID   string
		data       string
	)
	if err := row.Scan(&id, &nodeID, &nodeUUID, &data); err != nil {
		return nil, err
	}
	p := &model.Port{}
	if err := json.Unmarshal([]byte(data), p); err != nil {
		return nil, fmt.Errorf("decode port %d: %w", id, err)
	}
	p.ID, p.NodeID, p.NodeUUID = id, nodeID, nodeUUID
	return p, nil
}

// CreatePort inserts p and sets p.ID.
func (s *Store) CreatePort(ctx context.Context, p *model.Port) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, "INSERT INTO ports (uuid, address, node_id, created_at, updated_at, data) VALUES (?,?,?,?,?,?)",
		p.UUID, p.Address, p.NodeID, ts(p.CreatedAt), tsPtr(p.UpdatedAt), string(data))
	if err != nil {
		return mapErr(err)
	}
	p.ID, err = res.LastInsertId()
	return err
}

// UpdatePort writes every field of p and sets p.UpdatedAt.
func (s *Store) UpdatePort(ctx context.Context, p *model.Port) error {
	now := Now()
	p.UpdatedAt = &now
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, "UPDATE ports SET uuid=?, address=?, node_id=?, updated_at=?, data=? WHERE id=?",
		p.UUID, p.Address, p.NodeID, tsPtr(p.UpdatedAt), string(data), p.ID)
	return mapErr(oneRow(res, err))
}

// GetPort finds a port by UUID.
func (s *Store) GetPort(ctx context.Context, uuid string) (*model.Port, error) {
	p, err := scanPort(s.db.QueryRowContext(ctx, "SELECT "+portCols+" FROM ports p JOIN nodes n ON n.id = p.node_id WHERE p.uuid = ?", uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return p, err
}

// DeletePort removes a port.
func (s *Store) DeletePort(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM ports WHERE id = ?", id)
	return oneRow(res, err)
}

// PortFilter selects and orders ports.
type PortFilter struct {
	NodeID    int64
	Address   string
	Addresses []string
	SortKey   string // id, uuid, address, created_at, updated_at
	SortDesc  bool
	Marker    *model.Port
	Limit     int
}

var sortablePortColumns = map[string]bool{"id": true, "uuid": true, "address": true, "created_at": true, "updated_at": true}

// SortablePortColumn says whether ListPorts can sort by key.
func SortablePortColumn(key string) bool { return sortablePortColumns[key] }

// ListPorts returns the ports matching f.
func (s *Store) ListPorts(ctx context.Context, f PortFilter) ([]*model.Port, error) {
	var where []string
	var args []any
	if f.NodeID != 0 {
		where = append(where, "p.node_id = ?")
		args = append(args, f.NodeID)
	}
	if f.Address != "" {
		where = append(where, "p.address = ?")
		args = append(args, f.Address)
	}
	if len(f.Addresses) > 0 {
		where = append(where, "p.address IN (?"+strings.Repeat(",?", len(f.Addresses)-1)+")")
		for _, a := range f.Addresses {
			args = append(args, a)
		}
	}
	key := f.SortKey
	if key == "" {
		key = "id"
	}
	if !sortablePortColumns[key] {
		return nil, fmt.Errorf("unsupported sort key %q", key)
	}
	dir, cmp := "ASC", ">"
	if f.SortDesc {
		dir, cmp = "DESC", "<"
	}
	if f.Marker != nil {
		var mv any
		if err := s.db.QueryRowContext(ctx, "SELECT "+key+" FROM ports WHERE id = ?", f.Marker.ID).Scan(&mv); err != nil {
			return nil, fmt.Errorf("read marker: %w", err)
		}
		if key == "id" {
			where = append(where, "p.id "+cmp+" ?")
			args = append(args, f.Marker.ID)
		} else {
			where = append(where, "(p."+key+" "+cmp+" ? OR (p."+key+" = ? AND p.id "+cmp+" ?))")
			args = append(args, mv, mv, f.Marker.ID)
		}
	}
	q := "SELECT " + portCols + " FROM ports p JOIN nodes n ON n.id = p.node_id"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY p." + key + " " + dir
	if key != "id" {
		q += ", p.id " + dir
	}
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	defer rows.Close()
	var out []*model.Port
	for rows.Next() {
		p, err := scanPort(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
