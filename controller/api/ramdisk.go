package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/agent/protocol"
)

// HeartbeatTimeout is the heartbeat_timeout handed to agents in lookup
// ([api]ramdisk_heartbeat_timeout).
const HeartbeatTimeout = 300

// lookupNode is Ironic's lookup node plus the node's RAID configurations
// (an additive ironlite extension): during a deploy the agent gets no
// other node dict, and with a software RAID root volume it writes the
// image onto the array, not onto a member disk.
type lookupNode struct {
	protocol.LookupNode
	TargetRAIDConfig map[string]any `json:"target_raid_config"`
	RAIDConfig       map[string]any `json:"raid_config"`
}

type lookupResponse struct {
	Node   lookupNode            `json:"node"`
	Config protocol.LookupConfig `json:"config"`
}

// lookup serves GET /v1/lookup (API 1.22+; public, used by the agent).
func (s *Server) lookup(c echo.Context) error {
	if !version(c).AtLeast(22) {
		return apiErr(http.StatusNotFound, "The resource could not be found.")
	}
	var macs []string
	if a := c.QueryParam("addresses"); a != "" {
		macs = strings.Split(a, ",")
	}
	uuid := c.QueryParam("node_uuid")
	if len(macs) == 0 && uuid == "" {
		return badRequest("Lookup requires either addresses or node_uuid, with at least one valid MAC address.")
	}
	n, token, err := s.cond.Lookup(c.Request().Context(), macs, uuid)
	if err != nil {
		return err
	}
	ii := maskSecrets(obj(n.InstanceInfo))
	if _, ok := ii["image_url"]; ok {
		ii["image_url"] = "******"
	}
	resp := lookupResponse{
		Node: lookupNode{
			LookupNode: protocol.LookupNode{
				UUID:               n.UUID,
				Properties:         obj(n.Properties),
				InstanceInfo:       ii,
				DriverInternalInfo: maskSecrets(obj(n.DriverInternalInfo)),
				Links: []protocol.Link{
					{Href: s.baseURL(c) + "/v1/nodes/" + n.UUID, Rel: "self"},
					{Href: s.baseURL(c) + "/nodes/" + n.UUID, Rel: "bookmark"},
				},
			},
			TargetRAIDConfig: obj(n.TargetRAIDConfig),
			RAIDConfig:       obj(n.RAIDConfig),
		},
		Config: protocol.LookupConfig{
			Metrics:                     map[string]any{"backend": "noop", "prepend_host": false, "prepend_uuid": false, "prepend_host_reverse": true, "global_prefix": nil},
			MetricsStatsd:               map[string]any{"statsd_host": "localhost", "statsd_port": 8125},
			HeartbeatTimeout:            HeartbeatTimeout,
			AgentToken:                  token,
			AgentTokenRequired:          true,
			PermittedImageFormats:       []string{"raw", "qcow2", "iso"},
			EnableBiosBootloaderInstall: true,
			ReportProgress:              true,
		},
	}
	return c.JSON(http.StatusOK, resp)
}

// heartbeat serves POST /v1/heartbeat/{node} (API 1.22+; public).
func (s *Server) heartbeat(c echo.Context) error {
	v := version(c)
	if !v.AtLeast(22) {
		return apiErr(http.StatusNotFound, "The resource could not be found.")
	}
	body, err := strictObject(c, "callback_url", "agent_token", "agent_version", "agent_verify_ca", "agent_status", "agent_status_message")
	if err != nil {
		return err
	}
	for field, minor := range map[string]int{"agent_version": 36, "agent_token": 62, "agent_verify_ca": 68, "agent_status": 72, "agent_status_message": 72} {
		if _, ok := body[field]; ok && !v.AtLeast(minor) {
			return badRequest("Field \"%s\" not recognised.", field)
		}
	}
	var hb protocol.HeartbeatRequest
	raw, _ := json.Marshal(body)
	if err := json.Unmarshal(raw, &hb); err != nil {
		return badRequest("Invalid heartbeat: %s", err)
	}
	if hb.CallbackURL == "" {
		return badRequest("'callback_url' is a required property")
	}
	if err := s.cond.Heartbeat(c.Request().Context(), c.Param("node"), hb); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

// continueInspection serves POST /v1/continue_inspection: the agent's
// inventory at the end of in-band inspection (Ironic 2023.2's endpoint,
// accepted at any microversion so IPA-style agents work against us).
func (s *Server) continueInspection(c echo.Context) error {
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	var data protocol.InspectionData
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&data); err != nil {
		return badRequest("Malformed inspection data: %s", err)
	}
	n, err := s.cond.ContinueInspection(c.Request().Context(), data, raw)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, protocol.InspectionResponse{UUID: n.UUID})
}

// inventory serves GET /v1/nodes/{node}/inventory (1.81).
func (s *Server) inventory(c echo.Context) error {
	if err := needVersion(c, 81, "The inventory API"); err != nil {
		return err
	}
	inv, pd, err := s.cond.Inventory(c.Request().Context(), c.Param("node"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]json.RawMessage{"inventory": inv, "plugin_data": pd})
}
