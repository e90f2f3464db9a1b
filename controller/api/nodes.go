package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/controller/model"
	"github.com/ironlite/ironlite/controller/statemachine"
	"github.com/ironlite/ironlite/controller/store"
)

// nodeFieldMinor is the microversion that first exposes each node field
// (VERSIONED_FIELDS in Ironic's v1/utils.py); absent means 1.1.
var nodeFieldMinor = map[string]int{
	"driver_internal_info": 3, "name": 5, "inspection_started_at": 6, "inspection_finished_at": 6,
	"clean_step": 7, "states": 14, "raid_config": 12, "target_raid_config": 12,
	"network_interface": 20, "resource_class": 21, "portgroups": 24,
	"boot_interface": 31, "console_interface": 31, "deploy_interface": 31, "inspect_interface": 31,
	"management_interface": 31, "power_interface": 31, "raid_interface": 31, "vendor_interface": 31,
	"volume": 32, "storage_interface": 33, "traits": 37, "rescue_interface": 38, "bios_interface": 40,
	"fault": 42, "deploy_step": 44, "conductor_group": 46, "automated_clean": 47,
	"protected": 48, "protected_reason": 48, "conductor": 49, "owner": 50, "description": 51,
	"allocation_uuid": 52, "retired": 61, "retired_reason": 61, "lessee": 65, "network_data": 66,
	"boot_mode": 75, "secure_boot": 75, "shard": 82,
}

// nodeFields lists every node field in the API.
var nodeFields = []string{
	"uuid", "created_at", "updated_at", "links", "driver", "driver_info", "properties", "instance_info",
	"instance_uuid", "extra", "power_state", "target_power_state", "provision_state",
	"target_provision_state", "provision_updated_at", "maintenance", "maintenance_reason", "last_error",
	"reservation", "console_enabled", "chassis_uuid", "ports", "states", "driver_internal_info", "name",
	"inspection_started_at", "inspection_finished_at", "clean_step", "raid_config", "target_raid_config",
	"network_interface", "resource_class", "portgroups", "boot_interface", "console_interface",
	"deploy_interface", "inspect_interface", "management_interface", "power_interface", "raid_interface",
	"vendor_interface", "volume", "storage_interface", "traits", "rescue_interface", "bios_interface",
	"fault", "deploy_step", "conductor_group", "automated_clean", "protected", "protected_reason",
	"conductor", "owner", "description", "allocation_uuid", "retired", "retired_reason", "lessee",
	"network_data", "boot_mode", "secure_boot", "shard",
}

var listDefaultFields = []string{"uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance", "links"}

func fieldVisible(v Version, f string) bool { return v.AtLeast(nodeFieldMinor[f]) }

// secretWords are the substrings that make a key secret
// (oslo_utils.strutils mask_dict_password).
var secretWords = []string{"password", "adminpass", "admin_pass", "auth_token", "token", "secret",
	"configdrive", "passphrase", "private_key", "encrypted_key", "chappassword", "sslkey",
	"auth_password", "auth_key", "authkey", "secret_key"}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// maskSecrets returns a copy of m with every secret-looking key's value
// replaced by "******", recursively.
func maskSecrets(m model.JSONObject) model.JSONObject {
	out := make(model.JSONObject, len(m))
	for k, v := range m {
		switch {
		case secretKey(k):
			out[k] = "******"
		default:
			if sub, ok := v.(map[string]any); ok {
				out[k] = maskSecrets(sub)
			} else {
				out[k] = v
			}
		}
	}
	return out
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func timeOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return isoTime(*t)
}

// isoTime formats like Python's isoformat() on an aware datetime.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000+00:00") }

func obj(m model.JSONObject) model.JSONObject {
	if m == nil {
		return model.JSONObject{}
	}
	return m
}

// apiProvisionState maps a state to what older microversions show.
func apiProvisionState(v Version, st string) any {
	switch {
	case st == statemachine.Available && !v.AtLeast(2):
		return nil
	case st == statemachine.InspectWait && !v.AtLeast(39):
		return statemachine.Inspecting
	}
	return nullable(st)
}

// renderNode builds the node's JSON for microversion v. fields nil means
// every field the version exposes.
func (s *Server) renderNode(c echo.Context, n *model.Node, fields []string) json.RawMessage {
	return s.renderNodeJSON(n, version(c), s.baseURL(c), fields)
}

// renderRow renders a listed node, from the cache when the node has not
// changed since it was last rendered the same way.
func (s *Server) renderRow(c echo.Context, r *store.NodeRow, fields []string) (json.RawMessage, error) {
	v, base := version(c), s.baseURL(c)
	key := keyFor(r, v.Minor, fields, base)
	if b, ok := s.rendered.get(key); ok {
		return b, nil
	}
	n, err := r.Node()
	if err != nil {
		return nil, err
	}
	b := s.renderNodeJSON(n, v, base, fields)
	s.rendered.put(key, b)
	return b, nil
}

func (s *Server) renderNodeJSON(n *model.Node, v Version, base string, fields []string) json.RawMessage {
	want := func(f string) bool {
		if !fieldVisible(v, f) {
			return false
		}
		return fields == nil || slices.Contains(fields, f)
	}
	out := newObjWriter(3072)
	set := func(f string, val func() any) {
		if want(f) {
			out.field(f, val())
		}
	}
	set("uuid", func() any { return n.UUID })
	set("created_at", func() any { return isoTime(n.CreatedAt) })
	set("updated_at", func() any { return timeOrNil(n.UpdatedAt) })
	set("links", func() any { return links(base, "nodes", n.UUID) })
	set("driver", func() any { return n.Driver })
	set("driver_info", func() any { return maskSecrets(obj(n.DriverInfo)) })
	set("properties", func() any { return obj(n.Properties) })
	set("instance_info", func() any {
		ii := maskSecrets(obj(n.InstanceInfo))
		if _, ok := ii["image_url"]; ok {
			ii["image_url"] = "******"
		}
		return ii
	})
	set("instance_uuid", func() any { return nullable(n.InstanceUUID) })
	set("extra", func() any { return obj(n.Extra) })
	set("power_state", func() any { return nullable(n.PowerState) })
	set("target_power_state", func() any { return nullable(n.TargetPowerState) })
	set("provision_state", func() any { return apiProvisionState(v, n.ProvisionState) })
	set("target_provision_state", func() any { return apiProvisionState(v, n.TargetProvisionState) })
	set("provision_updated_at", func() any { return timeOrNil(n.ProvisionUpdatedAt) })
	set("maintenance", func() any { return n.Maintenance })
	set("maintenance_reason", func() any { return nullable(n.MaintenanceReason) })
	set("last_error", func() any { return nullable(n.LastError) })
	set("reservation", func() any { return nullable(n.Reservation) })
	set("console_enabled", func() any { return n.ConsoleEnabled })
	set("chassis_uuid", func() any { return nullable(n.ChassisUUID) })
	for _, sub := range []string{"ports", "states", "portgroups", "volume"} {
		set(sub, func() any { return links(base, "nodes", n.UUID+"/"+sub) })
	}
	set("driver_internal_info", func() any { return maskSecrets(obj(n.DriverInternalInfo)) })
	set("name", func() any { return nullable(n.Name) })
	set("inspection_started_at", func() any { return timeOrNil(n.InspectionStartedAt) })
	set("inspection_finished_at", func() any { return timeOrNil(n.InspectionFinishedAt) })
	set("clean_step", func() any { return obj(n.CleanStep) })
	set("deploy_step", func() any { return obj(n.DeployStep) })
	set("raid_config", func() any { return obj(n.RAIDConfig) })
	set("target_raid_config", func() any { return obj(n.TargetRAIDConfig) })
	for _, kind := range model.InterfaceKinds {
		f := kind + "_interface"
		set(f, func() any { return nullable(n.Interfaces[kind]) })
	}
	set("resource_class", func() any { return nullable(n.ResourceClass) })
	set("traits", func() any {
		if n.Traits == nil {
			return []string{}
		}
		return n.Traits
	})
	set("fault", func() any { return nullable(n.Fault) })
	set("conductor_group", func() any { return n.ConductorGroup })
	set("automated_clean", func() any {
		if n.AutomatedClean == nil {
			return nil
		}
		return *n.AutomatedClean
	})
	set("protected", func() any { return n.Protected })
	set("protected_reason", func() any { return nullable(n.ProtectedReason) })
	set("conductor", func() any { return s.cond.Host() })
	set("owner", func() any { return nullable(n.Owner) })
	set("description", func() any { return nullable(n.Description) })
	set("allocation_uuid", func() any { return nullable(n.AllocationUUID) })
	set("retired", func() any { return n.Retired })
	set("retired_reason", func() any { return nullable(n.RetiredReason) })
	set("lessee", func() any { return nullable(n.Lessee) })
	set("network_data", func() any { return obj(n.NetworkData) })
	set("boot_mode", func() any { return nullable(n.BootMode) })
	set("secure_boot", func() any {
		if n.SecureBoot == nil {
			return nil
		}
		return *n.SecureBoot
	})
	set("shard", func() any { return nullable(n.Shard) })
	return out.bytes()
}

// parseFields reads ?fields= (1.8+), refusing unknown or too-new fields.
func parseFields(c echo.Context) ([]string, error) {
	raw := c.QueryParam("fields")
	if raw == "" {
		return nil, nil
	}
	if err := needVersion(c, 8, "The fields parameter"); err != nil {
		return nil, err
	}
	var fields, bad []string
	for _, f := range strings.Split(raw, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(nodeFields, f) || !fieldVisible(version(c), f) {
			bad = append(bad, f)
			continue
		}
		fields = append(fields, f)
	}
	if len(bad) > 0 {
		return nil, badRequest("Field(s) \"%s\" are not valid", strings.Join(bad, ", "))
	}
	return fields, nil
}

func (s *Server) node(c echo.Context) (*model.Node, error) {
	n, err := s.store.GetNode(c.Request().Context(), c.Param("node"))
	if err == store.ErrNotFound {
		return nil, apiErr(http.StatusNotFound, "Node %s could not be found.", c.Param("node"))
	}
	return n, err
}

func (s *Server) showNode(c echo.Context) error {
	fields, err := parseFields(c)
	if err != nil {
		return err
	}
	n, err := s.node(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.renderNode(c, n, fields))
}

func (s *Server) listNodes(c echo.Context) error { return s.listNodesCommon(c, false) }

func (s *Server) listNodesDetail(c echo.Context) error {
	if c.QueryParam("detail") != "" {
		return badRequest("The \"detail\" parameter is not allowed on /nodes/detail")
	}
	return s.listNodesCommon(c, true)
}

// listNodesCommon serves GET /v1/nodes and /v1/nodes/detail with Ironic's
// filters, sorting and marker pagination.
func (s *Server) listNodesCommon(c echo.Context, detailPath bool) error {
	q := c.QueryParams()
	f := store.NodeFilter{}
	var err error

	detail := detailPath
	if d := q.Get("detail"); d != "" {
		if err := needVersion(c, 43, "The detail parameter"); err != nil {
			return err
		}
		b, err := parseBool("detail", d)
		if err != nil {
			return err
		}
		detail = *b
	}
	fields, err := parseFields(c)
	if err != nil {
		return err
	}
	if fields != nil && detail {
		return badRequest("Can not specify ?detail=True and fields in the same request.")
	}
	if fields == nil && !detail {
		fields = listDefaultFields
	}

	if ps := q.Get("provision_state"); ps != "" {
		if err := needVersion(c, 9, "The provision_state filter"); err != nil {
			return err
		}
		if !statemachine.Valid(ps) {
			return badRequest("Invalid value for provision_state: %s", ps)
		}
		f.ProvisionState = ps
	}
	strFilters := []struct {
		name  string
		minor int
		dst   *string
	}{
		{"driver", 16, &f.Driver}, {"resource_class", 21, &f.ResourceClass}, {"fault", 42, &f.Fault},
		{"conductor_group", 46, &f.ConductorGroup}, {"owner", 50, &f.Owner}, {"lessee", 65, &f.Lessee},
		{"instance_uuid", 1, &f.InstanceUUID}, {"description_contains", 51, &f.DescriptionContains},
	}
	for _, sf := range strFilters {
		if val := q.Get(sf.name); val != "" {
			if err := needVersion(c, sf.minor, "The "+sf.name+" filter"); err != nil {
				return err
			}
			*sf.dst = val
		}
	}
	boolFilters := []struct {
		name  string
		minor int
		dst   **bool
	}{
		{"maintenance", 1, &f.Maintenance}, {"associated", 1, &f.Associated},
		{"retired", 61, &f.Retired}, {"sharded", 82, &f.Sharded},
	}
	for _, bf := range boolFilters {
		if val := q.Get(bf.name); val != "" {
			if err := needVersion(c, bf.minor, "The "+bf.name+" filter"); err != nil {
				return err
			}
			if *bf.dst, err = parseBool(bf.name, val); err != nil {
				return err
			}
		}
	}
	if sh := q.Get("shard"); sh != "" {
		if err := needVersion(c, 82, "The shard filter"); err != nil {
			return err
		}
		f.Shards = strings.Split(sh, ",")
	}
	if q.Get("conductor") != "" {
		if err := needVersion(c, 49, "The conductor filter"); err != nil {
			return err
		}
		if q.Get("conductor") != s.cond.Host() {
			return c.JSON(http.StatusOK, map[string]any{"nodes": []any{}})
		}
	}
	if err := s.pageParams(c, &f.Limit, &f.SortKey, &f.SortDesc, func(k string) bool {
		return store.SortableNodeColumns[k]
	}); err != nil {
		return err
	}
	if m := q.Get("marker"); m != "" {
		mn, err := s.store.GetNode(c.Request().Context(), m)
		if err != nil {
			return apiErr(http.StatusNotFound, "Node %s could not be found.", m)
		}
		f.Marker = mn
	}
	nodes, err := s.store.ListNodeRows(c.Request().Context(), f)
	if err != nil {
		return err
	}
	w := newObjWriter(len(nodes) * 2048)
	w.key("nodes")
	w.buf = append(w.buf, '[')
	for i, n := range nodes {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		b, err := s.renderRow(c, n, fields)
		if err != nil {
			return err
		}
		w.buf = append(w.buf, b...)
	}
	w.buf = append(w.buf, ']')
	if len(nodes) == f.Limit && f.Limit > 0 {
		path := "nodes"
		if detailPath {
			path = "nodes/detail"
		}
		w.field("next", s.nextURL(c, path, nodes[len(nodes)-1].UUID, f.Limit,
			[]string{"associated", "maintenance", "retired", "detail", "fields"}))
	}
	return c.JSONBlob(http.StatusOK, w.bytes())
}

// pageParams parses limit, sort_key and sort_dir.
func (s *Server) pageParams(c echo.Context, limit *int, sortKey *string, desc *bool, sortable func(string) bool) error {
	q := c.QueryParams()
	*limit = s.cfg.MaxLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return badRequest("Invalid value for limit: %q is not an integer", l)
		}
		if n <= 0 {
			return badRequest("Limit must be positive")
		}
		*limit = min(n, s.cfg.MaxLimit)
	}
	if k := q.Get("sort_key"); k != "" {
		if !sortable(k) {
			return badRequest("The sort_key value \"%s\" is an invalid field for sorting", k)
		}
		*sortKey = k
	}
	switch d := q.Get("sort_dir"); d {
	case "", "asc":
	case "desc":
		*desc = true
	default:
		return badRequest("Invalid sort direction: %s. Acceptable values are 'asc' or 'desc'", d)
	}
	return nil
}

// nextURL builds the "next" link as Ironic does: sort args, some filters,
// limit and marker.
func (s *Server) nextURL(c echo.Context, path, marker string, limit int, keep []string) string {
	q := c.QueryParams()
	var parts []string
	for _, k := range []string{"sort_key", "sort_dir"} {
		if v := q.Get(k); v != "" {
			parts = append(parts, k+"="+url.QueryEscape(v))
		}
	}
	for _, k := range keep {
		if v := q.Get(k); v != "" {
			parts = append(parts, k+"="+url.QueryEscape(v))
		}
	}
	parts = append(parts, "limit="+strconv.Itoa(limit), "marker="+marker)
	return s.baseURL(c) + "/v1/" + path + "?" + strings.Join(parts, "&")
}

// nodeNameRe: RFC 3986 unreserved characters (API 1.10+).
var nodeNameRe = regexp.MustCompile(`^[A-Za-z0-9\-._~]+$`)

var reservedNames = []string{"detail", "validate", "states", "vendor_passthru", "management", "maintenance"}

// createFields are the keys POST /v1/nodes accepts (node_schema()).
var createFields = map[string]bool{
	"automated_clean": true, "bios_interface": true, "boot_interface": true, "boot_mode": true,
	"chassis_uuid": true, "conductor_group": true, "console_enabled": true, "console_interface": true,
	"deploy_interface": true, "description": true, "driver": true, "driver_info": true, "extra": true,
	"inspect_interface": true, "instance_info": true, "instance_uuid": true, "lessee": true,
	"management_interface": true, "maintenance": true, "name": true, "network_data": true,
	"network_interface": true, "owner": true, "power_interface": true, "properties": true,
	"raid_interface": true, "rescue_interface": true, "resource_class": true, "retired": true,
	"retired_reason": true, "secure_boot": true, "shard": true, "storage_interface": true,
	"uuid": true, "vendor_interface": true,
}

// patchable are the top-level fields PATCH may change.
var patchable = map[string]bool{
	"automated_clean": true, "bios_interface": true, "boot_interface": true, "chassis_uuid": true,
	"conductor_group": true, "console_interface": true, "deploy_interface": true, "description": true,
	"driver": true, "driver_info": true, "extra": true, "inspect_interface": true, "instance_info": true,
	"instance_uuid": true, "lessee": true, "maintenance": true, "management_interface": true, "name": true,
	"network_data": true, "network_interface": true, "owner": true, "power_interface": true,
	"properties": true, "protected": true, "protected_reason": true, "raid_interface": true,
	"rescue_interface": true, "resource_class": true, "retired": true, "retired_reason": true,
	"shard": true, "storage_interface": true, "vendor_interface": true, "maintenance_reason": true,
}

// applyNodeDoc writes the fields present in doc into n, checking types.
// It is shared by create and patch so both validate alike.
func applyNodeDoc(v Version, doc map[string]any, n *model.Node, keys []string) error {
	for _, k := range keys {
		val, present := doc[k]
		if minor := nodeFieldMinor[k]; minor > v.Minor && present && val != nil {
			return apiErr(http.StatusNotAcceptable, "Field \"%s\" requires API version 1.%d or later (requested %s).", k, minor, v)
		}
		var err error
		switch k {
		case "name":
			n.Name, err = optString(k, val)
			if err == nil && n.Name != "" {
				err = checkName(v, n.Name)
			}
		case "driver":
			n.Driver, err = optString(k, val)
			if err == nil && n.Driver == "" {
				err = badRequest("'driver' is a required property")
			}
		case "description":
			n.Description, err = optString(k, val)
			if err == nil && len(n.Description) > 4096 {
				err = badRequest("Value for description is too long (maximum 4096 characters)")
			}
		case "resource_class":
			n.ResourceClass, err = optString(k, val)
			if err == nil && len(n.ResourceClass) > 80 {
				err = badRequest("Value for resource_class is too long (maximum 80 characters)")
			}
		case "owner":
			n.Owner, err = optString(k, val)
		case "lessee":
			n.Lessee, err = optString(k, val)
		case "shard":
			n.Shard, err = optString(k, val)
		case "conductor_group":
			n.ConductorGroup, err = optString(k, val)
		case "retired_reason":
			n.RetiredReason, err = optString(k, val)
		case "protected_reason":
			n.ProtectedReason, err = optString(k, val)
		case "maintenance_reason":
			n.MaintenanceReason, err = optString(k, val)
		case "boot_mode":
			n.BootMode, err = optString(k, val)
			if err == nil && n.BootMode != "" && n.BootMode != "bios" && n.BootMode != "uefi" {
				err = badRequest("Invalid boot_mode %q: expected \"bios\" or \"uefi\"", n.BootMode)
			}
		case "instance_uuid", "chassis_uuid", "uuid":
			var s string
			s, err = optString(k, val)
			if err == nil && s != "" {
				if _, perr := uuid.Parse(s); perr != nil {
					err = badRequest("Expected a UUID for %s but received %s.", k, s)
				}
			}
			switch k {
			case "instance_uuid":
				n.InstanceUUID = s
			case "chassis_uuid":
				n.ChassisUUID = s
			default:
				n.UUID = s
			}
		case "driver_info", "properties", "instance_info", "extra", "network_data":
			var m model.JSONObject
			m, err = optObject(k, val)
			switch k {
			case "driver_info":
				n.DriverInfo = m
			case "properties":
				n.Properties = m
			case "instance_info":
				n.InstanceInfo = m
			case "extra":
				n.Extra = m
			default:
				n.NetworkData = m
			}
		case "maintenance", "retired", "protected", "console_enabled":
			var b bool
			b, err = optBool(k, val)
			switch k {
			case "maintenance":
				n.Maintenance = b
			case "retired":
				n.Retired = b
			case "protected":
				n.Protected = b
			default:
				if b {
					err = badRequest("Setting console_enabled on create is not supported; use PUT .../states/console")
				}
			}
		case "automated_clean", "secure_boot":
			var p *bool
			if val != nil {
				var b bool
				b, err = optBool(k, val)
				p = &b
			}
			if k == "automated_clean" {
				n.AutomatedClean = p
			} else {
				n.SecureBoot = p
			}
		default:
			if kind, ok := strings.CutSuffix(k, "_interface"); ok && slices.Contains(model.InterfaceKinds, kind) {
				var s string
				if s, err = optString(k, val); err != nil {
					return err
				}
				if n.Interfaces == nil {
					n.Interfaces = map[string]string{}
				}
				n.Interfaces[kind] = s
				continue
			}
			err = badRequest("Unknown attribute %s", k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkName(v Version, name string) error {
	if !v.AtLeast(5) {
		return apiErr(http.StatusNotAcceptable, "Field \"name\" requires API version 1.5 or later (requested %s).", v)
	}
	if len(name) > 255 || !nodeNameRe.MatchString(name) {
		return badRequest("Cannot create node with invalid name '%s'", name)
	}
	if _, err := uuid.Parse(name); err == nil {
		return badRequest("Cannot create node with invalid name '%s'", name)
	}
	if slices.Contains(reservedNames, name) {
		return badRequest("Node name cannot be one of the reserved words: %v", reservedNames)
	}
	return nil
}

func optString(k string, v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	}
	return "", badRequest("Invalid input for field/attribute %s. Value: %v. %s is not of type 'string'", k, jsonText(v), jsonText(v))
}

func optBool(k string, v any) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	case string:
		b, err := parseBool(k, x)
		if err != nil {
			return false, err
		}
		return *b, nil
	}
	return false, badRequest("Invalid input for field/attribute %s. Value: %v. %s is not of type 'boolean'", k, jsonText(v), jsonText(v))
}

func optObject(k string, v any) (model.JSONObject, error) {
	switch x := v.(type) {
	case nil:
		return model.JSONObject{}, nil
	case map[string]any:
		return x, nil
	}
	return nil, badRequest("Invalid input for field/attribute %s. Value: %v. %s is not of type 'object'", k, jsonText(v), jsonText(v))
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func (s *Server) createNode(c echo.Context) error {
	var doc map[string]any
	if err := decodeBody(c, &doc); err != nil {
		return err
	}
	if doc == nil {
		return badRequest("Invalid request body: expected a JSON object")
	}
	var unknown []string
	for k := range doc {
		if !createFields[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return badRequest("Additional properties are not allowed ('%s' was unexpected)", strings.Join(unknown, "', '"))
	}
	if _, ok := doc["driver"]; !ok {
		return badRequest("'driver' is a required property")
	}
	v := version(c)
	n := &model.Node{ProvisionState: statemachine.Enroll}
	if !v.AtLeast(11) {
		n.ProvisionState = statemachine.Available
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err := applyNodeDoc(v, doc, n, keys); err != nil {
		return err
	}
	if err := s.cond.CreateNode(c.Request().Context(), n); err != nil {
		return err
	}
	c.Response().Header().Set("Location", s.baseURL(c)+"/v1/nodes/"+n.UUID)
	return c.JSON(http.StatusCreated, s.renderNode(c, n, nil))
}

func (s *Server) deleteNode(c echo.Context) error {
	if err := s.cond.DeleteNode(c.Request().Context(), c.Param("node")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// nodeDoc is the patchable view of a node that JSON patches apply to.
func nodeDoc(n *model.Node) map[string]any {
	doc := map[string]any{
		"automated_clean": nil, "chassis_uuid": nullable(n.ChassisUUID), "conductor_group": n.ConductorGroup,
		"description": nullable(n.Description), "driver": n.Driver, "driver_info": cloneJSON(obj(n.DriverInfo)),
		"extra": cloneJSON(obj(n.Extra)), "instance_info": cloneJSON(obj(n.InstanceInfo)),
		"instance_uuid": nullable(n.InstanceUUID), "lessee": nullable(n.Lessee), "maintenance": n.Maintenance,
		"maintenance_reason": nullable(n.MaintenanceReason),
		"name":               nullable(n.Name), "network_data": cloneJSON(obj(n.NetworkData)), "owner": nullable(n.Owner),
		"properties": cloneJSON(obj(n.Properties)), "protected": n.Protected,
		"protected_reason": nullable(n.ProtectedReason), "resource_class": nullable(n.ResourceClass),
		"retired": n.Retired, "retired_reason": nullable(n.RetiredReason), "shard": nullable(n.Shard),
	}
	if n.AutomatedClean != nil {
		doc["automated_clean"] = *n.AutomatedClean
	}
	for _, kind := range model.InterfaceKinds {
		doc[kind+"_interface"] = nullable(n.Interfaces[kind])
	}
	return doc
}

func cloneJSON(m model.JSONObject) model.JSONObject {
	b, _ := json.Marshal(m)
	var out model.JSONObject
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	_ = dec.Decode(&out)
	return out
}

func (s *Server) patchNode(c echo.Context) error {
	var ops []PatchOp
	if err := decodeBody(c, &ops); err != nil {
		return err
	}
	v := version(c)
	resetInterfaces := false
	if ri := c.QueryParam("reset_interfaces"); ri != "" {
		if err := needVersion(c, 45, "The reset_interfaces parameter"); err != nil {
			return err
		}
		b, err := parseBool("reset_interfaces", ri)
		if err != nil {
			return err
		}
		resetInterfaces = *b
	}
	for _, op := range ops {
		if top := topLevel(op.Path); top == "traits" {
			return badRequest("Cannot update node traits via node patch. Node traits should be updated via the node traits API.")
		} else if top != "" && !patchable[top] {
			if slices.Contains(nodeFields, top) {
				return badRequest("'/%s' is an internal attribute and can not be updated", top)
			}
		}
	}
	n, err := s.cond.UpdateNode(c.Request().Context(), c.Param("node"), func(n *model.Node) error {
		before := nodeDoc(n)
		doc := nodeDoc(n)
		patched, err := ApplyPatch(doc, ops, func(k string) bool { return patchable[k] })
		if err != nil {
			return err
		}
		var changed []string
		for k := range patchable {
			if jsonText(patched[k]) != jsonText(before[k]) {
				changed = append(changed, k)
			}
		}
		sort.Strings(changed)
		driverChanged := slices.Contains(changed, "driver")
		if resetInterfaces && !driverChanged {
			return badRequest("The reset_interfaces parameter can be provided only when changing the node's driver.")
		}
		if err := applyNodeDoc(v, patched, n, changed); err != nil {
			return err
		}
		if driverChanged && (resetInterfaces || !v.AtLeast(31)) {
			// Interfaces the patch did not set fall back to the new
			// hardware type's defaults.
			for _, kind := range model.InterfaceKinds {
				if !slices.Contains(changed, kind+"_interface") {
					delete(n.Interfaces, kind)
				}
			}
		}
		if slices.Contains(changed, "maintenance") && !n.Maintenance {
			n.MaintenanceReason, n.Fault = "", ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.renderNode(c, n, nil))
}
