package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/controller/drivers"
	"github.com/ironlite/ironlite/controller/model"
)

func (s *Server) renderDriver(c echo.Context, ht *drivers.HardwareType, detail bool) map[string]any {
	base := s.baseURL(c)
	out := map[string]any{
		"name":       ht.Name,
		"hosts":      []string{s.cond.Host()},
		"type":       "dynamic",
		"links":      links(base, "drivers", ht.Name),
		"properties": links(base, "drivers", ht.Name+"/properties"),
	}
	if detail && version(c).AtLeast(30) {
		for _, kind := range model.InterfaceKinds {
			out["default_"+kind+"_interface"] = ht.Default(kind)
			out["enabled_"+kind+"_interfaces"] = ht.Supported[kind]
		}
	}
	return out
}

func (s *Server) listDrivers(c echo.Context) error {
	detail := false
	if d := c.QueryParam("detail"); d != "" {
		b, err := parseBool("detail", d)
		if err != nil {
			return err
		}
		detail = *b
	}
	if t := c.QueryParam("type"); t != "" && t != "dynamic" && t != "classic" {
		return badRequest("Invalid value for type: %s. Valid values are dynamic and classic.", t)
	}
	out := []any{}
	if c.QueryParam("type") != "classic" {
		for _, ht := range s.cond.Registry().HardwareTypes() {
			out = append(out, s.renderDriver(c, ht, detail))
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"drivers": out})
}

func (s *Server) hardwareType(c echo.Context) (*drivers.HardwareType, error) {
	ht, ok := s.cond.Registry().HardwareType(c.Param("driver"))
	if !ok {
		return nil, apiErr(http.StatusNotFound, "Could not find the following driver(s) or hardware type(s): %s.", c.Param("driver"))
	}
	return ht, nil
}

func (s *Server) showDriver(c echo.Context) error {
	ht, err := s.hardwareType(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.renderDriver(c, ht, true))
}

func (s *Server) driverProperties(c echo.Context) error {
	ht, err := s.hardwareType(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.cond.Registry().Properties(ht))
}

// logicalDiskPropertier is implemented by RAID interfaces that describe
// the logical disk properties a target_raid_config may use.
type logicalDiskPropertier interface {
	LogicalDiskProperties() map[string]string
}

// raidLogicalDiskProperties serves GET /v1/drivers/{driver}/raid/
// logical_disk_properties (1.12). Ironic asks the hardware type's default
// raid interface, which for ipmi is no-raid unless configured (a 404);
// here the first supported implementation that has the properties
// answers, the default first. The properties are Ironic's schema's for
// every RAID interface, plus the interface's extensions.
func (s *Server) raidLogicalDiskProperties(c echo.Context) error {
	if err := needVersion(c, 12, "RAID configuration"); err != nil {
		return err
	}
	ht, err := s.hardwareType(c)
	if err != nil {
		return err
	}
	for _, name := range ht.Supported["raid"] {
		if p, ok := s.cond.Registry().Impl("raid", name).(logicalDiskPropertier); ok {
			return c.JSON(http.StatusOK, p.LogicalDiskProperties())
		}
	}
	return apiErr(http.StatusNotFound, "Driver %s does not support raid (disabled or not implemented).", ht.Name)
}
