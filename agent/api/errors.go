package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Error is IPA's RESTError (ironic_python_agent/errors.py): a typed error
// that command handlers return to control both the HTTP status (for errors
// raised before a command is recorded) and the command_error object the
// conductor reads. Type is the IPA class name the conductor may match on.
type Error struct {
	Type    string
	Code    int
	Message string
	Details string
}

func (e *Error) Error() string { return e.Message + ": " + e.Details }

// CommandError converts e to the wire form stored in command_error.
func (e *Error) CommandError() *protocol.CommandError {
	return &protocol.CommandError{Type: e.Type, Code: e.Code, Message: e.Message, Details: e.Details}
}

// invalidContent reports whether IPA would return e to the caller as an HTTP
// error instead of recording a failed command (InvalidContentError family).
func (e *Error) invalidContent() bool { return e.Code == http.StatusBadRequest }

// Constructors for the IPA errors the agent raises. The messages are IPA's.

// InvalidCommandParams is a 400 for bad command parameters; it is returned to
// the caller directly and no command is recorded.
func InvalidCommandParams(format string, args ...any) *Error {
	return &Error{Type: "InvalidCommandParamsError", Code: 400, Message: "Invalid command parameters", Details: fmt.Sprintf(format, args...)}
}

// InvalidCommand is a 400 for an unknown or malformed command name.
func InvalidCommand(format string, args ...any) *Error {
	return &Error{Type: "InvalidCommandError", Code: 400, Message: "Invalid command", Details: fmt.Sprintf(format, args...)}
}

// NotFound is a 404 for a missing object (extension, command result).
func NotFound(typeDescr, id string) *Error {
	return &Error{Type: "RequestedObjectNotFoundError", Code: 404, Message: "Not found", Details: fmt.Sprintf("%s with id %s not found.", typeDescr, id)}
}

// CommandExecution is the generic failure of a command (500).
func CommandExecution(format string, args ...any) *Error {
	return &Error{Type: "CommandExecutionError", Code: 500, Message: "Command execution failed", Details: fmt.Sprintf(format, args...)}
}

// CleaningError is a failed clean step.
func CleaningError(format string, args ...any) *Error {
	return &Error{Type: "CleaningError", Code: 500, Message: "Clean step failed", Details: fmt.Sprintf(format, args...)}
}

// DeploymentError is a failed deploy step.
func DeploymentError(format string, args ...any) *Error {
	return &Error{Type: "DeploymentError", Code: 500, Message: "Deploy step failed", Details: fmt.Sprintf(format, args...)}
}

// VersionMismatch is raised when the conductor's hardware manager versions
// differ from ours; the command ends in CLEAN_VERSION_MISMATCH.
func VersionMismatch(agent, node any) *Error {
	return &Error{Type: "VersionMismatch", Code: 409,
		Message: "Hardware managers version mismatch, reload agent with correct version",
		Details: fmt.Sprintf("Current versions: %v, versions used by ironic: %v", agent, node)}
}

// agentIsBusy is IPA's AgentIsBusy (409).
func agentIsBusy(name string) *Error {
	return &Error{Type: "AgentIsBusy", Code: 409, Message: "Agent is busy", Details: "executing command " + name}
}

// asRESTError converts any error to an *Error; plain errors become
// CommandExecutionError as in IPA's AsyncCommandResult.run.
func asRESTError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return CommandExecution("%v", err)
}

// fault builds IPA's error body (api/app.py format_exception).
func fault(code int, msg string) protocol.Fault {
	fc := "Client"
	if code >= 500 {
		fc = "Server"
	}
	return protocol.Fault{FaultCode: fc, FaultString: msg}
}
