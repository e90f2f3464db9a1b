package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

func (s *Server) versionDoc(c echo.Context) map[string]any {
	return map[string]any{
		"id":          "v1",
		"links":       []map[string]string{{"href": s.baseURL(c) + "/v1/", "rel": "self"}},
		"status":      "CURRENT",
		"min_version": "1.1",
		"version":     Version{Minor: MaxMinor}.String(),
	}
}

// root serves GET /: the version discovery document (IPA reads
// default_version.version from it).
func (s *Server) root(c echo.Context) error {
	v := s.versionDoc(c)
	return c.JSON(http.StatusOK, map[string]any{
		"name":            "OpenStack Ironic API",
		"description":     "Ironic is an OpenStack project which enables the provision and management of baremetal machines. (ironlite)",
		"default_version": v,
		"versions":        []any{v},
	})
}

func (s *Server) v1Root(c echo.Context) error {
	base := s.baseURL(c)
	res := func(name string) []map[string]string {
		return []map[string]string{
			{"href": base + "/v1/" + name + "/", "rel": "self"},
			{"href": base + "/" + name + "/", "rel": "bookmark"},
		}
	}
	out := map[string]any{
		"id": "v1",
		"links": []map[string]string{
			{"href": base + "/v1/", "rel": "self"},
			{"href": "https://docs.openstack.org//ironic/latest/contributor//webapi.html", "rel": "describedby", "type": "text/html"},
		},
		"media_types": map[string]string{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
		"chassis":     res("chassis"),
		"nodes":       res("nodes"),
		"ports":       res("ports"),
		"drivers":     res("drivers"),
		"version":     s.versionDoc(c),
	}
	if version(c).AtLeast(22) {
		out["lookup"] = res("lookup")
		out["heartbeat"] = res("heartbeat")
	}
	return c.JSON(http.StatusOK, out)
}
