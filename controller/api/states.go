package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
)

func (s *Server) nodeStates(c echo.Context) error {
	n, err := s.node(c)
	if err != nil {
		return err
	}
	v := version(c)
	out := map[string]any{
		"console_enabled":        n.ConsoleEnabled,
		"last_error":             nullable(n.LastError),
		"power_state":            nullable(n.PowerState),
		"provision_state":        apiProvisionState(v, n.ProvisionState),
		"provision_updated_at":   timeOrNil(n.ProvisionUpdatedAt),
		"target_power_state":     nullable(n.TargetPowerState),
		"target_provision_state": apiProvisionState(v, n.TargetProvisionState),
	}
	if v.AtLeast(12) {
		out["raid_config"] = obj(n.RAIDConfig)
		out["target_raid_config"] = obj(n.TargetRAIDConfig)
	}
	if v.AtLeast(75) {
		out["boot_mode"] = nullable(n.BootMode)
		if n.SecureBoot == nil {
			out["secure_boot"] = nil
		} else {
			out["secure_boot"] = *n.SecureBoot
		}
	}
	return c.JSON(http.StatusOK, out)
}

// strictObject decodes a JSON object body, refusing unknown keys.
func strictObject(c echo.Context, allowed ...string) (map[string]json.RawMessage, error) {
	var body map[string]json.RawMessage
	if err := decodeBody(c, &body); err != nil {
		return nil, err
	}
	if body == nil {
		return nil, badRequest("Invalid request body: expected a JSON object")
	}
	for k := range body {
		found := false
		for _, a := range allowed {
			if k == a {
				found = true
			}
		}
		if !found {
			return nil, badRequest("Additional properties are not allowed ('%s' was unexpected)", k)
		}
	}
	return body, nil
}

func rawString(body map[string]json.RawMessage, key string) (string, bool, error) {
	raw, ok := body[key]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, badRequest("Invalid input for field/attribute %s. Value: %s. %s is not of type 'string'", key, raw, raw)
	}
	return s, true, nil
}

func (s *Server) setPower(c echo.Context) error {
	body, err := strictObject(c, "target", "timeout")
	if err != nil {
		return err
	}
	target, ok, err := rawString(body, "target")
	if err != nil {
		return err
	}
	if !ok {
		return badRequest("'target' is a required property")
	}
	var timeout time.Duration
	if raw, ok := body["timeout"]; ok && string(raw) != "null" {
		if err := needVersion(c, 27, "The timeout parameter"); err != nil {
			return err
		}
		var t int
		if err := json.Unmarshal(raw, &t); err != nil {
			return badRequest("Invalid input for field/attribute timeout. Value: %s. %s is not of type 'integer'", raw, raw)
		}
		if t < 1 {
			return badRequest("timeout has to be positive integer")
		}
		timeout = time.Duration(t) * time.Second
	}
	if (target == drivers.SoftPowerOff || target == drivers.SoftRebooting) && !version(c).AtLeast(27) {
		return apiErr(http.StatusNotAcceptable, "Power target %q requires API version 1.27 or later (requested %s).", target, version(c))
	}
	if err := s.cond.ChangePower(c.Request().Context(), c.Param("node"), target, timeout); err != nil {
		return err
	}
	return accepted(c, s.baseURL(c), c.Param("node"))
}

func (s *Server) setProvision(c echo.Context) error {
	body, err := strictObject(c, "target", "configdrive", "clean_steps", "deploy_steps", "rescue_password", "disable_ramdisk")
	if err != nil {
		return err
	}
	target, ok, err := rawString(body, "target")
	if err != nil {
		return err
	}
	if !ok {
		return badRequest("'target' is a required property")
	}
	req := conductor.ProvisionRequest{Target: target}
	if verb, ok := statemachine.LookupVerb(target); ok {
		if err := needVersion(c, verb.MinMinor, "Provision target \""+target+"\""); err != nil {
			return err
		}
		if target == "abort" {
			if n, err := s.node(c); err == nil && n.ProvisionState == statemachine.InspectWait {
				if err := needVersion(c, statemachine.AbortInspectWaitMinMinor, "Aborting inspection"); err != nil {
					return err
				}
			}
		}
	} else {
		n, err := s.node(c)
		if err != nil {
			return err
		}
		return badRequest("The requested action \"%s\" can not be performed on node \"%s\" while it is in state \"%s\".", target, n.UUID, n.ProvisionState)
	}
	if raw, ok := body["configdrive"]; ok && string(raw) != "null" {
		var cd any
		if err := json.Unmarshal(raw, &cd); err != nil {
			return badRequest("Invalid configdrive: %s", err)
		}
		if _, isObj := cd.(map[string]any); isObj {
			if err := needVersion(c, 56, "A configdrive given as a JSON object"); err != nil {
				return err
			}
		}
		req.ConfigDrive = cd
	}
	if raw, ok := body["clean_steps"]; ok {
		if err := needVersion(c, 15, "clean_steps"); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &req.CleanSteps); err != nil || req.CleanSteps == nil {
			return badRequest("Invalid clean_steps: expected a list of {\"interface\", \"step\", \"args\"} objects")
		}
	}
	if raw, ok := body["deploy_steps"]; ok {
		if err := needVersion(c, 69, "deploy_steps"); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &req.DeploySteps); err != nil {
			return badRequest("Invalid deploy_steps: expected a list of objects")
		}
	}
	if req.RescuePassword, _, err = rawString(body, "rescue_password"); err != nil {
		return err
	}
	if raw, ok := body["disable_ramdisk"]; ok {
		if err := needVersion(c, 70, "disable_ramdisk"); err != nil {
			return err
		}
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return badRequest("Invalid disable_ramdisk: expected a boolean")
		}
		req.DisableRamdisk = &b
	}
	if err := s.cond.Provision(c.Request().Context(), c.Param("node"), req); err != nil {
		return err
	}
	return accepted(c, s.baseURL(c), c.Param("node"))
}

// setRAID stores the target RAID configuration (the body is the config).
func (s *Server) setRAID(c echo.Context) error {
	if err := needVersion(c, 12, "RAID configuration"); err != nil {
		return err
	}
	var cfg model.JSONObject
	if err := decodeBody(c, &cfg); err != nil {
		return err
	}
	if cfg == nil {
		return badRequest("Invalid RAID configuration: expected a JSON object")
	}
	if err := s.cond.SetTargetRAIDConfig(c.Request().Context(), c.Param("node"), cfg); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) getBootDevice(c echo.Context) error {
	bd, err := s.cond.BootDevice(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, bd)
}

func (s *Server) setBootDevice(c echo.Context) error {
	body, err := strictObject(c, "boot_device", "persistent")
	if err != nil {
		return err
	}
	dev, ok, err := rawString(body, "boot_device")
	if err != nil {
		return err
	}
	if !ok {
		return badRequest("'boot_device' is a required property")
	}
	persistent := false
	if raw, ok := body["persistent"]; ok {
		if err := json.Unmarshal(raw, &persistent); err != nil {
			return badRequest("Invalid input for field/attribute persistent. Value: %s. %s is not of type 'boolean'", raw, raw)
		}
	}
	if err := s.cond.SetBootDevice(c.Request().Context(), c.Param("node"), dev, persistent); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) supportedBootDevices(c echo.Context) error {
	devs, err := s.cond.SupportedBootDevices(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"supported_boot_devices": devs})
}

func (s *Server) validateNode(c echo.Context) error {
	res, err := s.cond.Validate(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

func (s *Server) setMaintenance(c echo.Context) error {
	reason := ""
	if c.Request().ContentLength != 0 {
		body, err := strictObject(c, "reason")
		if err != nil {
			return err
		}
		if reason, _, err = rawString(body, "reason"); err != nil {
			return err
		}
	}
	if err := s.cond.SetMaintenance(c.Request().Context(), c.Param("node"), true, reason); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

func (s *Server) unsetMaintenance(c echo.Context) error {
	if err := s.cond.SetMaintenance(c.Request().Context(), c.Param("node"), false, ""); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

// --- ironlite extensions: indicators, sensors, SEL --------------------------

func (s *Server) indicators(c echo.Context) (*model.Node, drivers.Indicators, error) {
	if err := needVersion(c, 63, "Indicators"); err != nil {
		return nil, nil, err
	}
	n, m, err := s.cond.Management(c.Request().Context(), c.Param("node"))
	if err != nil {
		return nil, nil, err
	}
	ind, ok := m.(drivers.Indicators)
	if !ok {
		return nil, nil, badRequest("Driver %s does not support indicators (disabled or not implemented).", n.Driver)
	}
	return n, ind, nil
}

func (s *Server) listIndicators(c echo.Context) error {
	n, ind, err := s.indicators(c)
	if err != nil {
		return err
	}
	list, err := ind.Indicators(c.Request().Context(), n)
	if err != nil {
		return apiErr(http.StatusInternalServerError, "Failed to list indicators of node %s: %s", n.UUID, err)
	}
	out := make([]map[string]any, len(list))
	for i, l := range list {
		id := l.Name + "@" + l.Component
		out[i] = map[string]any{"name": id, "component": l.Component, "readonly": l.Readonly, "states": l.States,
			"links": links(s.baseURL(c), "nodes", n.UUID+"/management/indicators/"+id)}
	}
	return c.JSON(http.StatusOK, map[string]any{"indicators": out})
}

func splitIndicator(id string) (name, component string, err error) {
	name, component, ok := strings.Cut(id, "@")
	if !ok || name == "" || component == "" {
		return "", "", badRequest("Invalid indicator %q: expected <name>@<component>", id)
	}
	return name, component, nil
}

func (s *Server) getIndicator(c echo.Context) error {
	n, ind, err := s.indicators(c)
	if err != nil {
		return err
	}
	name, comp, err := splitIndicator(c.Param("ind"))
	if err != nil {
		return err
	}
	st, err := ind.IndicatorState(c.Request().Context(), n, comp, name)
	if err != nil {
		return badRequest("Failed to read indicator %s of node %s: %s", c.Param("ind"), n.UUID, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"state": st})
}

func (s *Server) setIndicator(c echo.Context) error {
	n, ind, err := s.indicators(c)
	if err != nil {
		return err
	}
	name, comp, err := splitIndicator(c.Param("ind"))
	if err != nil {
		return err
	}
	body, err := strictObject(c, "state")
	if err != nil {
		return err
	}
	st, ok, err := rawString(body, "state")
	if err != nil {
		return err
	}
	if !ok {
		return badRequest("'state' is a required property")
	}
	if err := ind.SetIndicatorState(c.Request().Context(), n, comp, name, strings.ToLower(st)); err != nil {
		return badRequest("Failed to set indicator %s of node %s: %s", c.Param("ind"), n.UUID, err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) bmc(c echo.Context) (*model.Node, drivers.BMCReader, error) {
	n, m, err := s.cond.Management(c.Request().Context(), c.Param("node"))
	if err != nil {
		return nil, nil, err
	}
	r, ok := m.(drivers.BMCReader)
	if !ok {
		return nil, nil, badRequest("Driver %s cannot read BMC sensors or the event log (management interface %s).", n.Driver, n.Interfaces["management"])
	}
	return n, r, nil
}

func (s *Server) bmcSensors(c echo.Context) error {
	n, r, err := s.bmc(c)
	if err != nil {
		return err
	}
	list, err := r.Sensors(c.Request().Context(), n)
	if err != nil {
		return apiErr(http.StatusInternalServerError, "Failed to read sensors of node %s: %s", n.UUID, err)
	}
	if list == nil {
		list = []drivers.Sensor{}
	}
	return c.JSON(http.StatusOK, map[string]any{"sensors": list})
}

func (s *Server) bmcSEL(c echo.Context) error {
	n, r, err := s.bmc(c)
	if err != nil {
		return err
	}
	list, err := r.SEL(c.Request().Context(), n)
	if err != nil {
		return apiErr(http.StatusInternalServerError, "Failed to read the event log of node %s: %s", n.UUID, err)
	}
	if list == nil {
		list = []drivers.SELEntry{}
	}
	return c.JSON(http.StatusOK, map[string]any{"entries": list})
}

func (s *Server) bmcClearSEL(c echo.Context) error {
	n, r, err := s.bmc(c)
	if err != nil {
		return err
	}
	if err := r.ClearSEL(c.Request().Context(), n); err != nil {
		return apiErr(http.StatusInternalServerError, "Failed to clear the event log of node %s: %s", n.UUID, err)
	}
	return c.NoContent(http.StatusNoContent)
}
