package api

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Handler runs one command. params is the request's "params" object. A
// string result is wrapped as IPA does ({"result": ...}); any other value is
// returned as command_result as is.
type Handler func(ctx context.Context, params map[string]any) (any, error)

// Command is one registered command.
type Command struct {
	// Run executes the command.
	Run Handler
	// Async commands return RUNNING at once and finish in the background
	// (IPA @async_command); the others finish before the reply (@sync_command).
	Async bool
	// Validate, if set, runs before the command is recorded; an *Error with
	// code 400 from it is returned to the caller as HTTP 400 (IPA's
	// validators), any other error is recorded as a failed command.
	Validate func(params map[string]any) error
}

// Registry maps "<extension>.<command>" names to commands. Extensions add
// themselves from their own files (package init or main wiring), so the API
// server never needs to know the full command set.
type Registry struct {
	mu   sync.RWMutex
	cmds map[string]Command
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{cmds: map[string]Command{}} }

// Register adds or replaces a command. name must be "<extension>.<command>".
func (r *Registry) Register(name string, c Command) {
	if _, _, ok := strings.Cut(name, "."); !ok || c.Run == nil {
		panic(fmt.Sprintf("api: bad command registration %q", name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds[name] = c
}

// Names lists the registered command names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.cmds))
	for n := range r.cmds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// resolve finds a command with IPA's errors: malformed name or unknown
// command -> 400 InvalidCommandError, unknown extension -> 404.
func (r *Registry) resolve(name string) (Command, string, error) {
	ext, cmd, ok := strings.Cut(name, ".")
	if !ok {
		return Command{}, "", InvalidCommand("Command name must be of the form <extension>.<name>")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.cmds[name]; ok {
		return c, cmd, nil
	}
	for n := range r.cmds {
		if strings.HasPrefix(n, ext+".") {
			return Command{}, "", InvalidCommand("Unknown command: %s", cmd)
		}
	}
	return Command{}, "", NotFound("Extension", ext)
}
