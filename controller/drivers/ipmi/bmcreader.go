package ipmi

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/command/storage"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

// Indicator names and states (Ironic's indicator_states and components).
const (
	IndicatorComponent = "system"
	IndicatorIdentify  = "identify"

	IndicatorOn       = "on"
	IndicatorOff      = "off"
	IndicatorBlinking = "blinking"
	IndicatorUnknown  = "unknown"
)

// identifyCache remembers the identify state we set, per BMC, for BMCs
// whose Get Chassis Status does not report it (ipmi_sim among them).
type identifyCache struct {
	mu sync.Mutex
	m  map[string]identifyState
}

type identifyState struct {
	state string
	until time.Time // blinking ends
}

func newIdentifyCache() *identifyCache { return &identifyCache{m: map[string]identifyState{}} }

func (c *identifyCache) set(key, state string, until time.Time) {
	c.mu.Lock()
	c.m[key] = identifyState{state, until}
	c.mu.Unlock()
}

func (c *identifyCache) get(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[key]
	if !ok {
		return IndicatorUnknown
	}
	if s.state == IndicatorBlinking && time.Now().After(s.until) {
		return IndicatorOff
	}
	return s.state
}

// Indicators lists the chassis identify LED.
func (m *Management) Indicators(context.Context, *model.Node) ([]drivers.Indicator, error) {
	return []drivers.Indicator{{
		Name:      IndicatorIdentify,
		Component: IndicatorComponent,
		Readonly:  false,
		States:    []string{IndicatorOff, IndicatorOn, IndicatorBlinking},
	}}, nil
}

func checkIndicator(component, name string) error {
	if component != IndicatorComponent || name != IndicatorIdentify {
		return invalid("Indicator %s@%s is not known; the ipmi driver has %s@%s.", name, component, IndicatorIdentify, IndicatorComponent)
	}
	return nil
}

// IndicatorState reads the identify state from Get Chassis Status when the
// BMC reports it, else returns what this driver last set ("unknown" if
// nothing).
func (m *Management) IndicatorState(ctx context.Context, n *model.Node, component, name string) (string, error) {
	if err := checkIndicator(component, name); err != nil {
		return "", err
	}
	b, err := m.info(n)
	if err != nil {
		return "", err
	}
	var st *chassis.GetChassisStatusResponse
	err = m.d.pool.do(ctx, b, n.UUID, "chassis status", func(ctx context.Context, c *client.Client) error {
		var err error
		st, err = c.GetChassisStatus(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	if st.ChassisIdentifySupported {
		switch st.ChassisIdentifyState {
		case chassis.ChassisIdentifyStateOff:
			return IndicatorOff, nil
		case chassis.ChassisIdentifyStateTemporaryOn:
			return IndicatorBlinking, nil
		case chassis.ChassisIdentifyStateIndefiniteOn:
			return IndicatorOn, nil
		}
	}
	return m.d.ident.get(b.sessionKey()), nil
}

// SetIndicatorState drives chassis identify: "blinking" identifies for
// Options.IdentifyInterval, "on" forces it on, "off" turns it off.
func (m *Management) SetIndicatorState(ctx context.Context, n *model.Node, component, name, state string) error {
	if err := checkIndicator(component, name); err != nil {
		return err
	}
	b, err := m.info(n)
	if err != nil {
		return err
	}
	var interval uint8
	var force bool
	switch state {
	case IndicatorOff:
	case IndicatorOn:
		force = true
	case IndicatorBlinking:
		interval = uint8(m.d.opts.IdentifyInterval / time.Second)
	default:
		return invalid("Invalid indicator state %s, the valid states are: off, on, blinking.", state)
	}
	err = m.d.pool.do(ctx, b, n.UUID, "chassis identify "+state, func(ctx context.Context, c *client.Client) error {
		_, err := c.ChassisIdentify(ctx, interval, force)
		return err
	})
	if err != nil {
		return err
	}
	m.d.ident.set(b.sessionKey(), state, time.Now().Add(time.Duration(interval)*time.Second))
	return nil
}

// Sensors reads every full/compact sensor of the SDR repository with its
// current reading.
func (m *Management) Sensors(ctx context.Context, n *model.Node) ([]drivers.Sensor, error) {
	b, err := m.info(n)
	if err != nil {
		return nil, err
	}
	var raw []*types.Sensor
	err = m.d.pool.do(ctx, b, n.UUID, "sdr list", func(ctx context.Context, c *client.Client) error {
		var err error
		raw, err = c.GetSensors(ctx)
		if err != nil && emptyRepository(err) {
			// An empty SDR repository answers the first Get SDR with
			// "record not found" (0xcb): that is no sensors, not a fault.
			raw, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]drivers.Sensor, 0, len(raw))
	for _, s := range raw {
		ds := drivers.Sensor{
			Name:   strings.TrimSpace(s.Name),
			Type:   s.SensorType.String(),
			Status: s.Status(),
		}
		if s.IsThreshold() {
			ds.Unit = s.SensorUnit.String()
			if s.IsReadingValid() {
				v := s.Value
				ds.Reading = &v
			}
		}
		out = append(out, ds)
	}
	return out, nil
}

// SEL lists the system event log.
func (m *Management) SEL(ctx context.Context, n *model.Node) ([]drivers.SELEntry, error) {
	b, err := m.info(n)
	if err != nil {
		return nil, err
	}
	var recs []*types.SEL
	var names types.SDRMapBySensorNumber
	err = m.d.pool.do(ctx, b, n.UUID, "sel list", func(ctx context.Context, c *client.Client) error {
		info, err := c.GetSELInfo(ctx)
		if err != nil {
			return err
		}
		if info.Entries == 0 {
			recs = nil
			return nil
		}
		recs, err = c.GetSELEntries(ctx, 0)
		if err != nil {
			return err
		}
		names, _ = c.GetSDRsMap(ctx) // names are a nicety
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]drivers.SELEntry, 0, len(recs))
	for _, r := range recs {
		e := drivers.SELEntry{ID: int(r.RecordID)}
		switch {
		case r.Standard != nil:
			s := r.Standard
			e.Time = s.Timestamp.UTC()
			e.SensorType = s.SensorType.String()
			e.Sensor = fmt.Sprintf("%s #0x%02x", s.SensorType.String(), uint8(s.SensorNumber))
			if sdr, ok := names[s.GeneratorID][s.SensorNumber]; ok && sdr != nil {
				if nm := strings.TrimSpace(sdr.SensorName()); nm != "" {
					e.Sensor = nm
				}
			}
			e.Event = s.EventString()
			if s.EventDir {
				e.Direction = "Deasserted"
			} else {
				e.Direction = "Asserted"
			}
			e.Description = fmt.Sprintf("%s | %s | %s", e.Sensor, e.Event, e.Direction)
		case r.OEMTimestamped != nil:
			e.Time = r.OEMTimestamped.Timestamp.UTC()
			e.Event = "OEM record"
			e.Description = fmt.Sprintf("OEM timestamped record type %#02x, manufacturer %#06x", uint8(r.RecordType), r.OEMTimestamped.ManufacturerID)
		default:
			e.Event = "OEM record"
			e.Description = fmt.Sprintf("OEM record type %#02x", uint8(r.RecordType))
		}
		out = append(out, e)
	}
	return out, nil
}

// ClearSEL erases the system event log and waits until the erase is done.
func (m *Management) ClearSEL(ctx context.Context, n *model.Node) error {
	b, err := m.info(n)
	if err != nil {
		return err
	}
	return m.d.pool.do(ctx, b, n.UUID, "sel clear", func(ctx context.Context, c *client.Client) error {
		r, err := c.ReserveSEL(ctx)
		if err != nil {
			return err
		}
		if _, err := c.ClearSEL(ctx, r.ReservationID); err != nil {
			return err
		}
		for i := 0; i < 50; i++ {
			resp := &storage.ClearSELResponse{}
			if err := c.Exchange(ctx, &storage.ClearSELRequest{ReservationID: r.ReservationID, GetErasureStatusFlag: true}, resp); err != nil {
				// Some BMCs cancel the reservation once erased; treat a
				// refused status query as done.
				if _, answered := types.IsResponseError(err); answered {
					return nil
				}
				return err
			}
			if resp.ErasureProgressStatus&0x0f == 0x01 {
				return nil
			}
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
		return fmt.Errorf("SEL erase still in progress after 5s")
	})
}

// emptyRepository says whether err is a BMC's "requested sensor, data, or
// record not found" completion code (0xcb) for the first record.
func emptyRepository(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "recordID (0x0)") && strings.Contains(msg, "0xcb")
}
