package api

import (
	"errors"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/store"
)

// portFieldMinor: the microversion that first exposes each port field.
var portFieldMinor = map[string]int{
	"pxe_enabled": 19, "local_link_connection": 19, "internal_info": 18, "portgroup_uuid": 24,
	"physical_network": 34, "is_smartnic": 53, "name": 88,
}

var portFields = []string{"uuid", "created_at", "updated_at", "address", "extra", "internal_info",
	"is_smartnic", "local_link_connection", "physical_network", "pxe_enabled", "node_uuid", "links", "portgroup_uuid"}

var portListDefault = []string{"uuid", "address", "links"}

func (s *Server) renderPort(c echo.Context, p *model.Port, fields []string) map[string]any {
	v := version(c)
	out := map[string]any{}
	set := func(f string, val any) {
		if v.AtLeast(portFieldMinor[f]) && (fields == nil || slices.Contains(fields, f)) {
			out[f] = val
		}
	}
	set("uuid", p.UUID)
	set("created_at", isoTime(p.CreatedAt))
	set("updated_at", timeOrNil(p.UpdatedAt))
	set("address", p.Address)
	set("extra", obj(p.Extra))
	set("internal_info", obj(p.InternalInfo))
	set("is_smartnic", p.IsSmartNIC)
	set("local_link_connection", obj(p.LocalLinkConnection))
	set("physical_network", nullable(p.PhysicalNetwork))
	set("pxe_enabled", p.PXEEnabled)
	set("node_uuid", p.NodeUUID)
	set("links", links(s.baseURL(c), "ports", p.UUID))
	set("portgroup_uuid", nullable(p.PortgroupUUID))
	return out
}

func parsePortFields(c echo.Context) ([]string, error) {
	raw := c.QueryParam("fields")
	if raw == "" {
		return nil, nil
	}
	if err := needVersion(c, 8, "The fields parameter"); err != nil {
		return nil, err
	}
	var out, bad []string
	for _, f := range strings.Split(raw, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(portFields, f) || !version(c).AtLeast(portFieldMinor[f]) {
			bad = append(bad, f)
			continue
		}
		out = append(out, f)
	}
	if len(bad) > 0 {
		return nil, badRequest("Field(s) \"%s\" are not valid", strings.Join(bad, ", "))
	}
	return out, nil
}

func (s *Server) listPorts(c echo.Context) error       { return s.portsCommon(c, "", false) }
func (s *Server) listPortsDetail(c echo.Context) error { return s.portsCommon(c, "", true) }
func (s *Server) listNodePorts(c echo.Context) error {
	return s.portsCommon(c, c.Param("node"), false)
}
func (s *Server) listNodePortsDetail(c echo.Context) error {
	return s.portsCommon(c, c.Param("node"), true)
}

func (s *Server) portsCommon(c echo.Context, nodeIdent string, detailPath bool) error {
	ctx := c.Request().Context()
	q := c.QueryParams()
	f := store.PortFilter{}
	if nodeIdent == "" {
		nodeIdent = q.Get("node")
		if nodeIdent == "" {
			nodeIdent = q.Get("node_uuid")
		}
	}
	if nodeIdent != "" {
		n, err := s.store.GetNode(ctx, nodeIdent)
		if err != nil {
			return apiErr(http.StatusNotFound, "Node %s could not be found.", nodeIdent)
		}
		f.NodeID = n.ID
	}
	if a := q.Get("address"); a != "" {
		mac, err := conductor.NormalizeMAC(a)
		if err != nil {
			return err
		}
		f.Address = mac
	}
	detail := detailPath
	if d := q.Get("detail"); d != "" {
		b, err := parseBool("detail", d)
		if err != nil {
			return err
		}
		detail = *b
	}
	fields, err := parsePortFields(c)
	if err != nil {
		return err
	}
	if fields != nil && detail {
		return badRequest("Can not specify ?detail=True and fields in the same request.")
	}
	if fields == nil && !detail {
		fields = portListDefault
	}
	if err := s.pageParams(c, &f.Limit, &f.SortKey, &f.SortDesc, store.SortablePortColumn); err != nil {
		return err
	}
	if m := q.Get("marker"); m != "" {
		mp, err := s.store.GetPort(ctx, m)
		if err != nil {
			return apiErr(http.StatusNotFound, "Port %s could not be found.", m)
		}
		f.Marker = mp
	}
	ports, err := s.store.ListPorts(ctx, f)
	if err != nil {
		return err
	}
	out := make([]any, len(ports))
	for i, p := range ports {
		out[i] = s.renderPort(c, p, fields)
	}
	resp := map[string]any{"ports": out}
	if f.Limit > 0 && len(ports) == f.Limit {
		path := "ports"
		if detailPath {
			path = "ports/detail"
		}
		resp["next"] = s.nextURL(c, path, ports[len(ports)-1].UUID, f.Limit, []string{"detail", "fields", "node", "address"})
	}
	return c.JSON(http.StatusOK, resp)
}

func (s *Server) port(c echo.Context) (*model.Port, error) {
	p, err := s.store.GetPort(c.Request().Context(), c.Param("port"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apiErr(http.StatusNotFound, "Port %s could not be found.", c.Param("port"))
	}
	return p, err
}

func (s *Server) showPort(c echo.Context) error {
	fields, err := parsePortFields(c)
	if err != nil {
		return err
	}
	p, err := s.port(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.renderPort(c, p, fields))
}

var portCreateFields = map[string]int{
	"address": 1, "node_uuid": 1, "extra": 1, "uuid": 1, "pxe_enabled": 19, "local_link_connection": 19,
	"physical_network": 34, "portgroup_uuid": 24, "is_smartnic": 53,
}

var portPatchable = map[string]bool{
	"address": true, "node_uuid": true, "extra": true, "pxe_enabled": true, "local_link_connection": true,
	"physical_network": true, "portgroup_uuid": true, "is_smartnic": true,
}

// applyPortDoc writes doc's keys into p with type checks.
func applyPortDoc(v Version, doc map[string]any, p *model.Port, keys []string) error {
	for _, k := range keys {
		val := doc[k]
		if minor := portFieldMinor[k]; minor > v.Minor && val != nil {
			return apiErr(http.StatusNotAcceptable, "Field \"%s\" requires API version 1.%d or later (requested %s).", k, minor, v)
		}
		var err error
		switch k {
		case "address":
			var a string
			if a, err = optString(k, val); err == nil {
				if a == "" {
					return badRequest("'address' is a required property")
				}
				p.Address, err = conductor.NormalizeMAC(a)
			}
		case "node_uuid":
			p.NodeUUID, err = optString(k, val)
		case "uuid":
			if p.UUID, err = optString(k, val); err == nil && p.UUID != "" {
				if _, perr := uuid.Parse(p.UUID); perr != nil {
					err = badRequest("Expected a UUID for uuid but received %s.", p.UUID)
				}
			}
		case "portgroup_uuid":
			p.PortgroupUUID, err = optString(k, val)
		case "physical_network":
			if p.PhysicalNetwork, err = optString(k, val); err == nil && len(p.PhysicalNetwork) > 64 {
				err = badRequest("Value for physical_network is too long (maximum 64 characters)")
			}
		case "extra":
			p.Extra, err = optObject(k, val)
		case "local_link_connection":
			p.LocalLinkConnection, err = optObject(k, val)
		case "pxe_enabled":
			if val == nil {
				p.PXEEnabled = true
			} else {
				p.PXEEnabled, err = optBool(k, val)
			}
		case "is_smartnic":
			p.IsSmartNIC, err = optBool(k, val)
		default:
			err = badRequest("Unknown attribute %s", k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) createPort(c echo.Context) error {
	var doc map[string]any
	if err := decodeBody(c, &doc); err != nil {
		return err
	}
	if doc == nil {
		return badRequest("Invalid request body: expected a JSON object")
	}
	var keys []string
	for k := range doc {
		if _, ok := portCreateFields[k]; !ok {
			return badRequest("Additional properties are not allowed ('%s' was unexpected)", k)
		}
		keys = append(keys, k)
	}
	for _, req := range []string{"address", "node_uuid"} {
		if _, ok := doc[req]; !ok {
			return badRequest("'%s' is a required property", req)
		}
	}
	sort.Strings(keys)
	p := &model.Port{PXEEnabled: true, Extra: model.JSONObject{}, InternalInfo: model.JSONObject{}, LocalLinkConnection: model.JSONObject{}}
	if err := applyPortDoc(version(c), doc, p, keys); err != nil {
		return err
	}
	if err := s.cond.CreatePort(c.Request().Context(), p); err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/ports/"+p.UUID)
	return c.JSON(http.StatusCreated, s.renderPort(c, p, nil))
}

func portDoc(p *model.Port) map[string]any {
	return map[string]any{
		"address": p.Address, "node_uuid": p.NodeUUID, "extra": cloneJSON(obj(p.Extra)),
		"pxe_enabled": p.PXEEnabled, "local_link_connection": cloneJSON(obj(p.LocalLinkConnection)),
		"physical_network": nullable(p.PhysicalNetwork), "portgroup_uuid": nullable(p.PortgroupUUID),
		"is_smartnic": p.IsSmartNIC,
	}
}

func (s *Server) patchPort(c echo.Context) error {
	var ops []PatchOp
	if err := decodeBody(c, &ops); err != nil {
		return err
	}
	old, err := s.port(c)
	if err != nil {
		return err
	}
	for _, op := range ops {
		if top := topLevel(op.Path); top != "" && !portPatchable[top] && slices.Contains(portFields, top) {
			return badRequest("'/%s' is an internal attribute and can not be updated", top)
		}
	}
	before := portDoc(old)
	patched, err := ApplyPatch(portDoc(old), ops, func(k string) bool { return portPatchable[k] })
	if err != nil {
		return err
	}
	var changed []string
	for k := range portPatchable {
		if jsonText(patched[k]) != jsonText(before[k]) {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	p := *old
	if err := applyPortDoc(version(c), patched, &p, changed); err != nil {
		return err
	}
	if err := s.cond.UpdatePort(c.Request().Context(), old, &p); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.renderPort(c, &p, nil))
}

func (s *Server) deletePort(c echo.Context) error {
	p, err := s.port(c)
	if err != nil {
		return err
	}
	if err := s.store.DeletePort(c.Request().Context(), p.ID); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
