// Package api is the Ironic-compatible REST API v1 (echo/v4): nodes, ports,
// drivers, states, management, validate and maintenance, with Ironic's
// microversion negotiation, status codes and error bodies. It talks to the
// conductor (for anything that changes a node) and reads the store; it
// never talks to drivers, BMCs or agents.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/ironlite/ironlite/controller/conductor"
	"github.com/ironlite/ironlite/controller/imagestore"
	"github.com/ironlite/ironlite/controller/store"
)

// API microversion range (Ironic 21.4 / 2023.1).
const (
	MinMinor = 1
	MaxMinor = 82
)

// Config tunes the API server.
type Config struct {
	// PublicURL overrides the base of links ("http://host:6385"); by
	// default it is taken from the request.
	PublicURL string
	// MaxBodyBytes limits request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxLimit caps page sizes; default 1000 ([api]max_limit).
	MaxLimit int
	// Images is the image service behind /v1/images; nil disables it.
	Images *imagestore.Store
}

// Server is the API.
type Server struct {
	cond  *conductor.Conductor
	store *store.Store
	cfg   Config
	log   *slog.Logger
	echo  *echo.Echo

	rendered *renderCache
}

// New builds the API's HTTP handler.
func New(cond *conductor.Conductor, cfg Config, log *slog.Logger) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = 1000
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cond: cond, store: cond.Store(), cfg: cfg, log: log, rendered: newRenderCache(8 << 20)}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError
	// The OpenStack client asks for "/v1/nodes/?provision_state=..."; Ironic
	// routes both spellings.
	e.Pre(middleware.RemoveTrailingSlashWithConfig(middleware.TrailingSlashConfig{
		Skipper: func(c echo.Context) bool { return c.Request().URL.Path == "/" },
	}))
	e.Use(s.requestID, s.recoverer, s.accessLog, s.bodyLimit)
	s.routes(e)
	s.echo = e
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Echo exposes the router so other packages (e.g. the boot server) can
// add their routes beside the API.
func (s *Server) Echo() *echo.Echo { return s.echo }

func (s *Server) routes(e *echo.Echo) {
	e.GET("/", s.root)
	// continue_inspection is API 1.84 in Ironic (2023.2); agents send that
	// version, so it is served outside the 1.1-1.82 negotiation.
	e.POST("/v1/continue_inspection", s.continueInspection)
	v1 := e.Group("/v1", s.microversion)
	v1.GET("", s.v1Root)
	v1.GET("/", s.v1Root)

	v1.GET("/nodes", s.listNodes)
	v1.GET("/nodes/detail", s.listNodesDetail)
	v1.POST("/nodes", s.createNode)
	v1.GET("/nodes/:node", s.showNode)
	v1.PATCH("/nodes/:node", s.patchNode)
	v1.DELETE("/nodes/:node", s.deleteNode)
	v1.GET("/nodes/:node/ports", s.listNodePorts)
	v1.GET("/nodes/:node/ports/detail", s.listNodePortsDetail)
	v1.GET("/nodes/:node/states", s.nodeStates)
	v1.PUT("/nodes/:node/states/power", s.setPower)
	v1.PUT("/nodes/:node/states/provision", s.setProvision)
	v1.PUT("/nodes/:node/states/raid", s.setRAID)
	v1.GET("/nodes/:node/management/boot_device", s.getBootDevice)
	v1.PUT("/nodes/:node/management/boot_device", s.setBootDevice)
	v1.GET("/nodes/:node/management/boot_device/supported", s.supportedBootDevices)
	v1.GET("/nodes/:node/management/indicators", s.listIndicators)
	v1.GET("/nodes/:node/management/indicators/:ind", s.getIndicator)
	v1.PUT("/nodes/:node/management/indicators/:ind", s.setIndicator)
	v1.GET("/nodes/:node/bmc/sensors", s.bmcSensors)
	v1.GET("/nodes/:node/bmc/sel", s.bmcSEL)
	v1.DELETE("/nodes/:node/bmc/sel", s.bmcClearSEL)
	v1.GET("/nodes/:node/validate", s.validateNode)
	v1.PUT("/nodes/:node/maintenance", s.setMaintenance)
	v1.DELETE("/nodes/:node/maintenance", s.unsetMaintenance)

	v1.GET("/ports", s.listPorts)
	v1.GET("/ports/detail", s.listPortsDetail)
	v1.POST("/ports", s.createPort)
	v1.GET("/ports/:port", s.showPort)
	v1.PATCH("/ports/:port", s.patchPort)
	v1.DELETE("/ports/:port", s.deletePort)

	v1.GET("/lookup", s.lookup)
	v1.POST("/heartbeat/:node", s.heartbeat)
	v1.GET("/nodes/:node/inventory", s.inventory)

	s.imageRoutes(v1)

	v1.GET("/drivers", s.listDrivers)
	v1.GET("/drivers/:driver", s.showDriver)
	v1.GET("/drivers/:driver/properties", s.driverProperties)
	v1.GET("/drivers/:driver/raid/logical_disk_properties", s.raidLogicalDiskProperties)
}

// --- middleware -----------------------------------------------------------

type ctxKey string

const (
	keyVersion   ctxKey = "version"
	keyRequestID ctxKey = "request_id"
)

func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := "req-" + uuid.NewString()
		c.Set(string(keyRequestID), id)
		c.Response().Header().Set("Openstack-Request-Id", id)
		return next(c)
	}
}

func (s *Server) recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisablePrintStack: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("panic in handler", "request_id", c.Get(string(keyRequestID)), "err", err, "stack", string(stack))
			return err
		},
	})(next)
}

// accessLog logs method, path, status and duration — never bodies, which
// may hold BMC passwords or config drives.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r := c.Request()
		s.log.Debug("request", "request_id", c.Get(string(keyRequestID)), "method", r.Method,
			"path", r.URL.Path, "status", c.Response().Status, "duration", time.Since(start))
		return nil
	}
}

func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.cfg.MaxBodyBytes {
			return apiErr(http.StatusRequestEntityTooLarge, "Request body is larger than the limit of %d bytes.", s.cfg.MaxBodyBytes)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.cfg.MaxBodyBytes)
		return next(c)
	}
}

// Version is an API microversion 1.Minor.
type Version struct{ Minor int }

// AtLeast says whether v >= 1.minor.
func (v Version) AtLeast(minor int) bool { return v.Minor >= minor }

func (v Version) String() string { return "1." + strconv.Itoa(v.Minor) }

func version(c echo.Context) Version {
	v, _ := c.Get(string(keyVersion)).(Version)
	return v
}

// microversion negotiates X-OpenStack-Ironic-API-Version: absent means
// 1.1, "latest" the maximum, anything else outside [1.1, 1.82] is 406.
func (s *Server) microversion(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-OpenStack-Ironic-API-Minimum-Version", "1.1")
		h.Set("X-OpenStack-Ironic-API-Maximum-Version", "1."+strconv.Itoa(MaxMinor))
		raw := strings.TrimSpace(c.Request().Header.Get("X-OpenStack-Ironic-API-Version"))
		v := Version{Minor: MinMinor}
		if raw != "" {
			if strings.EqualFold(raw, "latest") {
				v.Minor = MaxMinor
			} else {
				major, minor, ok := strings.Cut(raw, ".")
				mi, err := strconv.Atoi(minor)
				if !ok || major != "1" || err != nil || mi < MinMinor || mi > MaxMinor {
					return notAcceptableVersion(c, raw)
				}
				v.Minor = mi
			}
		}
		c.Set(string(keyVersion), v)
		h.Set("X-OpenStack-Ironic-API-Version", v.String())
		return next(c)
	}
}

func notAcceptableVersion(c echo.Context, raw string) error {
	desc := fmt.Sprintf("Version %s was requested but the minor version is not supported by this service. The supported version range is: [1.1, 1.%d].", raw, MaxMinor)
	if major, _, _ := strings.Cut(raw, "."); major != "1" {
		desc = fmt.Sprintf("Invalid value for X-OpenStack-Ironic-API-Version header: %s. The supported version range is: [1.1, 1.%d].", raw, MaxMinor)
	}
	inner, _ := json.Marshal(map[string]any{"code": 406, "title": "Not Acceptable", "description": desc})
	return c.JSON(http.StatusNotAcceptable, map[string]string{"error_message": string(inner)})
}

// --- errors ---------------------------------------------------------------

// httpError is an error with a status code, rendered as Ironic's body.
type httpError struct {
	Code int
	Msg  string
}

func (e *httpError) Error() string { return e.Msg }

func apiErr(code int, format string, args ...any) error {
	return &httpError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return apiErr(http.StatusBadRequest, format, args...)
}

func needVersion(c echo.Context, minor int, what string) error {
	if version(c).AtLeast(minor) {
		return nil
	}
	return apiErr(http.StatusNotAcceptable, "%s requires API version 1.%d or later (requested %s).", what, minor, version(c))
}

var kindStatus = map[conductor.Kind]int{
	conductor.Invalid:       http.StatusBadRequest,
	conductor.Forbidden:     http.StatusForbidden,
	conductor.NotFound:      http.StatusNotFound,
	conductor.NotAcceptable: http.StatusNotAcceptable,
	conductor.Conflict:      http.StatusConflict,
	conductor.Unavailable:   http.StatusServiceUnavailable,
	conductor.Internal:      http.StatusInternalServerError,
}

// handleError renders every error as Ironic does: a JSON object whose only
// key, error_message, holds a JSON string with faultcode/faultstring.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "Internal server error; see the controller log (request "+fmt.Sprint(c.Get(string(keyRequestID)))+")."
	var he *httpError
	var ee *echo.HTTPError
	var ce *conductor.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		code, msg = he.Code, he.Msg
	case errors.As(err, &mbe):
		code, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than the limit of %d bytes.", mbe.Limit)
	case errors.As(err, &ce):
		code, msg = kindStatus[ce.Kind], ce.Msg
		if code == http.StatusInternalServerError {
			s.log.Error("request failed", "request_id", c.Get(string(keyRequestID)), "err", err)
		}
	case errors.As(err, &ee):
		code = ee.Code
		switch code {
		case http.StatusNotFound:
			msg = "The resource could not be found."
		case http.StatusMethodNotAllowed:
			msg = "The server could not comply with the request since it is either malformed or otherwise incorrect."
		default:
			msg = fmt.Sprint(ee.Message)
		}
	default:
		if k := conductor.KindOf(err); k != conductor.Internal {
			code, msg = kindStatus[k], err.Error()
		} else {
			s.log.Error("request failed", "request_id", c.Get(string(keyRequestID)), "err", err)
		}
	}
	fault := "Client"
	if code >= 500 {
		fault = "Server"
	}
	inner, _ := json.Marshal(map[string]any{"faultcode": fault, "faultstring": msg, "debuginfo": nil})
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.JSON(code, map[string]string{"error_message": string(inner)})
}

// --- helpers --------------------------------------------------------------

// baseURL is the scheme://host links start with.
func (s *Server) baseURL(c echo.Context) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	return c.Scheme() + "://" + c.Request().Host
}

// link is one hypermedia link; a struct keeps Ironic's key order and
// encodes without sorting map keys.
type link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

func links(base, kind, id string) []link {
	return []link{
		{Href: base + "/v1/" + kind + "/" + id, Rel: "self"},
		{Href: base + "/" + kind + "/" + id, Rel: "bookmark"},
	}
}

// decodeBody decodes a JSON body strictly into v (numbers kept exact).
func decodeBody(c echo.Context, v any) error { return decode(c, v, false) }

// decodeBodyStrict is decodeBody refusing unknown fields (the extension
// APIs: a misspelt "checksum" must not import an image without one).
func decodeBodyStrict(c echo.Context, v any) error { return decode(c, v, true) }

func decode(c echo.Context, v any, strict bool) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.UseNumber()
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("Malformed JSON in request body: %s", err)
	}
	if dec.More() {
		return badRequest("Malformed JSON in request body: unexpected data after the JSON value")
	}
	return nil
}

// parseBool accepts what oslo's bool_from_string accepts.
func parseBool(name, v string) (*bool, error) {
	switch strings.ToLower(v) {
	case "1", "t", "true", "on", "y", "yes":
		b := true
		return &b, nil
	case "0", "f", "false", "off", "n", "no":
		b := false
		return &b, nil
	}
	return nil, badRequest("Invalid value for %s: %q is not a boolean", name, v)
}

func accepted(c echo.Context, base, node string) error {
	c.Response().Header().Set("Location", base+"/v1/nodes/"+node+"/states")
	return c.NoContent(http.StatusAccepted)
}
