package conductor

import (
	"errors"
	"fmt"

	"github.com/ironlite/ironlite/controller/store"
)

// Kind classifies a conductor error the way Ironic's exceptions carry an
// HTTP code; the API turns a Kind into a status.
type Kind int

const (
	Invalid       Kind = iota // 400: bad input, transition not allowed
	Forbidden                 // 403: protected node
	NotFound                  // 404
	NotAcceptable             // 406: microversion too old
	Conflict                  // 409: locked, duplicate, wrong state for delete
	Unavailable               // 503: no free worker
	Internal                  // 500
)

// Error is an error with a Kind and an operator-facing message.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err: a *Error's own, Conflict for a locked
// node, NotFound for a missing row, Internal otherwise.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrDuplicateName),
		errors.Is(err, store.ErrDuplicateMAC), errors.Is(err, store.ErrDuplicateUUID),
		errors.Is(err, store.ErrDuplicateInst):
		return Conflict
	case errors.Is(err, store.ErrNotFound):
		return NotFound
	}
	return Internal
}

func nodeNotFound(ident string) *Error {
	return &Error{Kind: NotFound, Msg: fmt.Sprintf("Node %s could not be found.", ident), Err: store.ErrNotFound}
}

func invalidState(verb, uuid, state string) *Error {
	return errorf(Invalid, "The requested action \"%s\" can not be performed on node \"%s\" while it is in state \"%s\".", verb, uuid, state)
}
