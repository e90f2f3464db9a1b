// Package store persists nodes and ports and implements node locking
// (the "reservation" a conductor holds while it works on a node).
//
// The default backend is SQLite (modernc.org/sqlite, pure Go, WAL) with
// goose migrations embedded in the binary. Callers use the Store type and
// its sentinel errors only, so a PostgreSQL backend (pgx) can follow behind
// the same methods.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/ironlite/ironlite/controller/model"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Sentinel errors; wrap-checked with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrDuplicateName = errors.New("duplicate name")
	ErrDuplicateUUID = errors.New("duplicate uuid")
	ErrDuplicateMAC  = errors.New("duplicate MAC address")
	ErrDuplicateInst = errors.New("duplicate instance uuid")
	ErrLocked        = errors.New("node locked")
)

// LockedError says who holds a node's reservation.
type LockedError struct{ UUID, Host string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("Node %s is locked by host %s, please retry after the current operation is completed.", e.UUID, e.Host)
}

// Is makes errors.Is(err, ErrLocked) true for a *LockedError.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Store is the persistence layer.
type Store struct {
	db *sql.DB
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// migrates it to the newest schema.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	dsn := "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One writer at a time is what SQLite does anyway; a few connections
	// let readers proceed beside it under WAL.
	db.SetMaxOpenConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		db.Close()
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate database %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const tsLayout = "2006-01-02T15:04:05.000000Z07:00"

func ts(t time.Time) string { return t.UTC().Format(tsLayout) }

func tsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ts(*t)
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// oneRow turns a statement that touched no row into ErrNotFound.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return ErrNotFound
	}
	return nil
}

// Now returns the current time at the precision the store keeps.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.Contains(msg, "UNIQUE constraint failed") {
		switch {
		case strings.Contains(msg, "nodes.name"):
			return ErrDuplicateName
		case strings.Contains(msg, "nodes.uuid"), strings.Contains(msg, "ports.uuid"):
			return ErrDuplicateUUID
		case strings.Contains(msg, "nodes.instance_uuid"):
			return ErrDuplicateInst
		case strings.Contains(msg, "ports.address"):
			return ErrDuplicateMAC
		}
	}
	return err
}

const nodeCols = "id, reservation, data"

func scanNode(row interface{ Scan(...any) error }) (*model.Node, error) {
	var (
		id   int64
		res  sql.NullString
		data string
	)
	if err := row.Scan(&id, &res, &data); err != nil {
		return nil, err
	}
	n := &model.Node{}
	if err := json.Unmarshal([]byte(data), n); err != nil {
		return nil, fmt.Errorf("decode node %d: %w", id, err)
	}
	n.ID = id
	n.Reservation = res.String
	return n, nil
}

func nodeArgs(n *model.Node) ([]any, error) {
	data, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode node %s: %w", n.UUID, err)
	}
	return []any{
		n.UUID, nullStr(n.Name), n.Driver, nullStr(n.PowerState), nullStr(n.TargetPowerState),
		n.ProvisionState, nullStr(n.TargetProvisionState), tsPtr(n.ProvisionUpdatedAt),
		n.Maintenance, nullStr(n.Fault), nullStr(n.InstanceUUID), nullStr(n.ResourceClass),
		n.ConductorGroup, nullStr(n.Owner), nullStr(n.Lessee), n.Retired, nullStr(n.Shard),
		ts(n.CreatedAt), tsPtr(n.UpdatedAt), string(data),
	}, nil
}

// CreateNode inserts n and sets n.ID.
func (s *Store) CreateNode(ctx context.Context, n *model.Node) error {
	args, err := nodeArgs(n)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO nodes (uuid, name, driver, power_state, target_power_state,
		provision_state, target_provision_state, provision_updated_at, maintenance, fault, instance_uuid,
		resource_class, conductor_group, owner, lessee, retired, shard, created_at, updated_at, data)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args...)
	if err != nil {
		return mapErr(err)
	}
	n.ID, err = res.LastInsertId()
	return err
}

// UpdateNode writes every field of n except the reservation, which only
// Reserve and Release change. It sets n.UpdatedAt.
func (s *Store) UpdateNode(ctx context.Context, n *model.Node) error {
	now := Now()
	n.UpdatedAt = &now
	args, err := nodeArgs(n)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET uuid=?, name=?, driver=?, power_state=?, target_power_state=?,
		provision_state=?, target_provision_state=?, provision_updated_at=?, maintenance=?, fault=?,
		instance_uuid=?, resource_class=?, conductor_group=?, owner=?, lessee=?, retired=?, shard=?,
		created_at=?, updated_at=?, data=? WHERE id=?`, append(args, n.ID)...)
	return mapErr(oneRow(res, err))
}

// GetNode finds a node by UUID or, failing that, by name.
func (s *Store) GetNode(ctx context.Context, ident string) (*model.Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, "SELECT "+nodeCols+" FROM nodes WHERE uuid = ? OR name = ? ORDER BY uuid = ? DESC LIMIT 1", ident, ident, ident))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return n, err
}

// GetNodeByID finds a node by its internal id.
func (s *Store) GetNodeByID(ctx context.Context, id int64) (*model.Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, "SELECT "+nodeCols+" FROM nodes WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return n, err
}

// DeleteNode removes a node and its ports.
func (s *Store) DeleteNode(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM nodes WHERE id = ?", id)
	return oneRow(res, err)
}

// NodeFilter selects and orders nodes. Zero values mean "no filter".
type NodeFilter struct {
	ProvisionState string
	Driver         string
	ResourceClass  string
	Fault          string
	ConductorGroup string
	Owner          string
	Lessee         string
	InstanceUUID   string
	Maintenance    *bool
	Associated     *bool
	Retired        *bool
	Reserved       *bool
	Shards         []string
	Sharded        *bool
	// DescriptionContains is matched against the JSON document.
	DescriptionContains string

	SortKey  string // a column name; "" = id
	SortDesc bool
	Marker   *model.Node // return nodes after this one in sort order
	Limit    int         // 0 = no limit
}

// SortableNodeColumns are the sort keys ListNodes accepts.
var SortableNodeColumns = map[string]bool{
	"id": true, "uuid": true, "name": true, "driver": true, "power_state": true,
	"target_power_state": true, "provision_state": true, "target_provision_state": true,
	"provision_updated_at": true, "maintenance": true, "fault": true, "instance_uuid": true,
	"resource_class": true, "conductor_group": true, "owner": true, "lessee": true,
	"retired": true, "shard": true, "reservation": true, "created_at": true, "updated_at": true,
}

func boolCond(col string, v *bool, where *[]string, args *[]any) {
	if v != nil {
		*where = append(*where, col+" = ?")
		*args = append(*args, *v)
	}
}

// ListNodes returns the nodes matching f.
func (s *Store) ListNodes(ctx context.Context, f NodeFilter) ([]*model.Node, error) {
	rows, err := s.ListNodeRows(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]*model.Node, len(rows))
	for i, r := range rows {
		if out[i], err = r.Node(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// NodeRow is a listed node whose JSON document is decoded only on demand:
// readers that can answer from the row's stamps (e.g. a cache of rendered
// nodes keyed by updated_at and reservation) skip the decoding.
type NodeRow struct {
	ID          int64
	UUID        string
	Reservation string
	CreatedAt   string // as stored
	UpdatedAt   string // "" when never updated
	data        []byte
}

// Node decodes the row.
func (r *NodeRow) Node() (*model.Node, error) {
	n := &model.Node{}
	if err := json.Unmarshal(r.data, n); err != nil {
		return nil, fmt.Errorf("decode node %d: %w", r.ID, err)
	}
	n.ID = r.ID
	n.Reservation = r.Reservation
	return n, nil
}

// ListNodeRows returns the rows of the nodes matching f, undecoded.
func (s *Store) ListNodeRows(ctx context.Context, f NodeFilter) ([]*NodeRow, error) {
	var where []string
	var args []any
	eq := func(col, v string) {
		if v != "" {
			where = append(where, col+" = ?")
			args = append(args, v)
		}
	}
	eq("provision_state", f.ProvisionState)
	eq("driver", f.Driver)
	eq("resource_class", f.ResourceClass)
	eq("fault", f.Fault)
	eq("conductor_group", f.ConductorGroup)
	eq("owner", f.Owner)
	eq("lessee", f.Lessee)
	eq("instance_uuid", f.InstanceUUID)
	boolCond("maintenance", f.Maintenance, &where, &args)
	boolCond("retired", f.Retired, &where, &args)
	if f.Associated != nil {
		if *f.Associated {
			where = append(where, "instance_uuid IS NOT NULL")
		} else {
			where = append(where, "instance_uuid IS NULL")
		}
	}
	if f.Reserved != nil {
		if *f.Reserved {
			where = append(where, "reservation IS NOT NULL")
		} else {
			where = append(where, "reservation IS NULL")
		}
	}
	if len(f.Shards) > 0 {
		where = append(where, "shard IN (?"+strings.Repeat(",?", len(f.Shards)-1)+")")
		for _, sh := range f.Shards {
			args = append(args, sh)
		}
	}
	if f.Sharded != nil {
		if *f.Sharded {
			where = append(where, "shard IS NOT NULL")
		} else {
			where = append(where, "shard IS NULL")
		}
	}
	if f.DescriptionContains != "" {
		where = append(where, "instr(json_extract(data, '$.description'), ?) > 0")
		args = append(args, f.DescriptionContains)
	}
	key := f.SortKey
	if key == "" {
		key = "id"
	}
	if !SortableNodeColumns[key] {
		return nil, fmt.Errorf("unsupported sort key %q", key)
	}
	dir, cmp := "ASC", ">"
	if f.SortDesc {
		dir, cmp = "DESC", "<"
	}
	if f.Marker != nil {
		// Keyset pagination on (key, id): stable even when keys repeat.
		var mv any
		if err := s.db.QueryRowContext(ctx, "SELECT "+key+" FROM nodes WHERE id = ?", f.Marker.ID).Scan(&mv); err != nil {
			return nil, fmt.Errorf("read marker: %w", err)
		}
		if key == "id" {
			where = append(where, "id "+cmp+" ?")
			args = append(args, f.Marker.ID)
		} else if mv == nil {
			// NULLs sort first in ascending SQLite order.
			if f.SortDesc {
				where = append(where, "("+key+" IS NULL AND id < ?)")
			} else {
				where = append(where, "(("+key+" IS NULL AND id > ?) OR "+key+" IS NOT NULL)")
			}
			args = append(args, f.Marker.ID)
		} else {
			if f.SortDesc {
				where = append(where, "("+key+" < ? OR ("+key+" = ? AND id < ?) OR "+key+" IS NULL)")
			} else {
				where = append(where, "("+key+" > ? OR ("+key+" = ? AND id > ?))")
			}
			args = append(args, mv, mv, f.Marker.ID)
		}
	}
	q := "SELECT id, uuid, reservation, created_at, updated_at, data FROM nodes"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + key + " " + dir
	if key != "id" {
		q += ", id " + dir
	}
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []*NodeRow
	for rows.Next() {
		r := &NodeRow{}
		var res, upd sql.NullString
		if err := rows.Scan(&r.ID, &r.UUID, &res, &r.CreatedAt, &upd, &r.data); err != nil {
			return nil, err
		}
		r.Reservation, r.UpdatedAt = res.String, upd.String
		out = append(out, r)
	}
	return out, rows.Err()
}

// Reserve takes the node's lock for host. It fails with a *LockedError when
// another holder has it. The returned node is read after the lock is taken,
// so the caller works on current data.
func (s *Store) Reserve(ctx context.Context, id int64, host string) (*model.Node, error) {
	res, err := s.db.ExecContext(ctx, "UPDATE nodes SET reservation = ? WHERE id = ? AND reservation IS NULL", host, id)
	if err != nil {
		return nil, fmt.Errorf("reserve node: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		n, err := s.GetNodeByID(ctx, id)
		if err != nil {
			return nil, err
		}
		return nil, &LockedError{UUID: n.UUID, Host: n.Reservation}
	}
	return s.GetNodeByID(ctx, id)
}

// Release drops host's lock on the node.
func (s *Store) Release(ctx context.Context, id int64, host string) error {
	_, err := s.db.ExecContext(ctx, "UPDATE nodes SET reservation = NULL WHERE id = ? AND reservation = ?", id, host)
	if err != nil {
		return fmt.Errorf("release node: %w", err)
	}
	return nil
}

// ReleaseAll drops every lock host holds (used when a controller restarts:
// whatever it held died with the previous process). It returns how many.
func (s *Store) ReleaseAll(ctx context.Context, host string) (int64, error) {
	res, err := s.db.ExecContext(ctx, "UPDATE nodes SET reservation = NULL WHERE reservation = ?", host)
	if err != nil {
		return 0, fmt.Errorf("release locks of %s: %w", host, err)
	}
	return res.RowsAffected()
}
