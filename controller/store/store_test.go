package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ironlite/ironlite/controller/model"
)

func TestStorePersistsAndLocks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "db.sqlite")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	n := &model.Node{UUID: "11111111-1111-1111-1111-111111111111", Name: "a", Driver: "fake-hardware",
		ProvisionState: "enroll", CreatedAt: Now(), DriverInfo: model.JSONObject{"ipmi_password": "pw"}}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	dup := *n
	dup.UUID = "22222222-2222-2222-2222-222222222222"
	if err := s.CreateNode(ctx, &dup); !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("duplicate name: %v", err)
	}
	dup.Name, dup.UUID = "b", n.UUID
	if err := s.CreateNode(ctx, &dup); !errors.Is(err, ErrDuplicateUUID) {
		t.Fatalf("duplicate uuid: %v", err)
	}
	if _, err := s.Reserve(ctx, n.ID, "h1"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Reserve(ctx, n.ID, "h2")
	var le *LockedError
	if !errors.As(err, &le) || le.Host != "h1" || !errors.Is(err, ErrLocked) {
		t.Fatalf("second reserve: %v", err)
	}
	// UpdateNode never touches the lock.
	got, _ := s.GetNode(ctx, "a")
	got.Reservation = ""
	got.ProvisionState = "manageable"
	if err := s.UpdateNode(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, n.UUID); got.Reservation != "h1" || got.ProvisionState != "manageable" {
		t.Fatalf("after update: %q %q", got.Reservation, got.ProvisionState)
	}
	if err := s.Release(ctx, n.ID, "h2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "a"); got.Reservation != "h1" {
		t.Fatalf("another host released the lock")
	}
	p := &model.Port{UUID: "33333333-3333-3333-3333-333333333333", Address: "52:54:00:00:00:01", NodeID: n.ID, CreatedAt: Now()}
	if err := s.CreatePort(ctx, p); err != nil {
		t.Fatal(err)
	}
	p2 := *p
	p2.UUID = "44444444-4444-4444-4444-444444444444"
	if err := s.CreatePort(ctx, &p2); !errors.Is(err, ErrDuplicateMAC) {
		t.Fatalf("duplicate MAC: %v", err)
	}
	s.Close()

	// Reopen: migrations are idempotent and everything survived.
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err = s.GetNode(ctx, "a")
	if err != nil || got.Reservation != "h1" || got.DriverInfo["ipmi_password"] != "pw" || got.ProvisionState != "manageable" {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
	if k, err := s.ReleaseAll(ctx, "h1"); err != nil || k != 1 {
		t.Fatalf("release all: %d %v", k, err)
	}
	ports, _ := s.ListPorts(ctx, PortFilter{NodeID: n.ID})
	if len(ports) != 1 || ports[0].NodeUUID != n.UUID {
		t.Fatalf("ports: %+v", ports)
	}
	// Deleting the node deletes its ports.
	if err := s.DeleteNode(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPort(ctx, p.UUID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("port survived its node: %v", err)
	}
}
