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
