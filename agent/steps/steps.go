// Package steps is the agent's catalogue of in-band clean and deploy steps
// (IPA's GenericHardwareManager get_clean_steps / get_deploy_steps).
//
// Steps live in their own packages (disk erase, image writing, RAID) and
// register here from init() or from main; the clean/deploy extensions only
// list and dispatch. A step that is listed but has no implementation yet is
// registered with a nil Run and fails with a clear error when executed, so
// that Ironic never sees a fake success (e.g. a disk reported erased that
// was not).
package steps

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/ironlite/ironlite/agent/protocol"
)

// Kind separates cleaning from deployment steps.
type Kind string

// Step kinds.
const (
	Clean  Kind = "clean"
	Deploy Kind = "deploy"
)

// Request is what a step receives: the step as sent by the conductor (with
// Args), and the node and ports dicts from the command params.
type Request struct {
	Step  protocol.Step
	Node  map[string]any
	Ports []any
}

// Func runs a step and returns its clean_result / deploy_result.
type Func func(ctx context.Context, req Request) (any, error)

// Definition is one step: what get_*_steps advertises plus how to run it.
type Definition struct {
	protocol.Step
	// Run is nil for a step that is advertised but not implemented in this
	// agent build; executing it fails.
	Run Func
}

var (
	mu       sync.RWMutex
	registry = map[Kind]map[string]Definition{}
)

func key(iface, name string) string { return iface + "." + name }

// Register adds or replaces a step definition. Later registrations win, so an
// implementation can replace the placeholder registered by this package.
func Register(kind Kind, def Definition) {
	if def.Step.Step == "" || def.Interface == "" {
		panic(fmt.Sprintf("steps: incomplete registration %+v", def.Step))
	}
	mu.Lock()
	defer mu.Unlock()
	if registry[kind] == nil {
		registry[kind] = map[string]Definition{}
	}
	registry[kind][key(def.Interface, def.Step.Step)] = def
}

// List returns the advertised steps of a kind, sorted by interface and name.
func List(kind Kind) []protocol.Step {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]protocol.Step, 0, len(registry[kind]))
	for _, d := range registry[kind] {
		s := d.Step
		s.Args = nil
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Interface != out[j].Interface {
			return out[i].Interface < out[j].Interface
		}
		return out[i].Step < out[j].Step
	})
	return out
}

// Lookup finds a step by interface and name.
func Lookup(kind Kind, iface, name string) (Definition, bool) {
	mu.RLock()
	defer mu.RUnlock()
	d, ok := registry[kind][key(iface, name)]
	return d, ok
}

// ErrNotImplemented is wrapped by the error of a step without Run.
var ErrNotImplemented = fmt.Errorf("not implemented in this agent build")

// Placeholders: the steps IPA's GenericHardwareManager advertises that the
// controller relies on, with IPA's default priorities. Their real
// implementations (agent/disk, agent/imagewrite, agent/raid) replace these
// entries by registering the same interface and name.
func init() {
	Register(Clean, Definition{Step: protocol.Step{Step: "erase_devices_metadata", Interface: "deploy", Priority: 99, Abortable: true}})
	Register(Clean, Definition{Step: protocol.Step{Step: "erase_devices", Interface: "deploy", Priority: 10, Abortable: true}})
	Register(Deploy, Definition{Step: protocol.Step{Step: "write_image", Interface: "deploy", Priority: 0}})
}
