// Package api serves IPA's command API (ironic_python_agent/api/app.py) on
// the agent's callback_url, so that the conductor (ours or real Ironic) can
// run commands: POST /v1/commands/ to start one, GET /v1/commands/ to poll.
//
// IPA behaviour reproduced here, because the conductor depends on it:
//   - one command at a time: a POST while the last command is RUNNING gets
//     409 "Agent is busy: executing command <name>";
//   - POST requires ?agent_token= equal to the lookup token (401
//     "Token invalid." otherwise); GETs are open until a GET carries a token;
//   - wait=true blocks until the command has finished;
//   - errors are {"faultcode": "Client"|"Server", "faultstring": "..."}.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/ironlite/ironlite/agent/progress"
	"github.com/ironlite/ironlite/agent/protocol"
)

// Server is the command API. Create it with New.
type Server struct {
	reg       *Registry
	log       *slog.Logger
	startedAt time.Time

	// OnAsyncDone is called after every asynchronous command finishes; the
	// agent uses it to heartbeat at once (IPA force_heartbeat), which is what
	// makes deployments progress without waiting a full heartbeat interval.
	OnAsyncDone func()

	mu            sync.Mutex
	token         string
	tokenRequired bool
	getNeedsToken bool // IPA security_get_token_support
	order         []*entry
	byID          map[string]*entry
	baseCtx       context.Context
}

// entry is one recorded command; done is closed when it finishes.
type entry struct {
	mu   sync.Mutex
	res  protocol.CommandResult
	done chan struct{}
	// prog is where a long command reports how far it has got.
	prog *progress.Tracker
	name string // full "<extension>.<command>" name
}

func (e *entry) snapshot() protocol.CommandResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res
	if r.CommandStatus != protocol.StatusRunning {
		return r
	}
	if p := e.prog.Snapshot(); p != nil && p.Phase != "" {
		p.Command = e.name
		r.Progress = p
	}
	return r
}

func (e *entry) running() bool {
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// New returns a server executing commands from reg. baseCtx bounds
// background commands (cancelled when the agent shuts down).
func New(baseCtx context.Context, reg *Registry, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{reg: reg, log: log, startedAt: time.Now(), byID: map[string]*entry{}, baseCtx: baseCtx}
}

// SetToken installs the agent token from lookup. required mirrors
// config.agent_token_required: when false, a request without any token is
// still accepted (IPA validate_agent_token, mid-upgrade compatibility).
func (s *Server) SetToken(token string, required bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token, s.tokenRequired = token, required
}

// validToken is IPA's validate_agent_token.
func (s *Server) validToken(t string) bool {
	if t == "" && s.token != "" && !s.tokenRequired {
		return true
	}
	return s.token == t
}

// Handler returns the HTTP handler with all routes.
func (s *Server) Handler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var he *echo.HTTPError
		code, msg := http.StatusInternalServerError, err.Error()
		if errors.As(err, &he) {
			code = he.Code
			msg = fmt.Sprintf("%d %s: %v", code, http.StatusText(code), he.Message)
			if code == http.StatusNotFound {
				msg = "404 Not Found: The requested URL was not found on the server."
			}
		}
		if !c.Response().Committed {
			_ = c.JSON(code, fault(code, msg))
		}
	}
	for _, prefix := range []string{"/v1", ""} {
		e.GET(prefix+"/status", s.getStatus)
		e.GET(prefix+"/commands/", s.listCommands)
		e.GET(prefix+"/commands", s.listCommands)
		e.GET(prefix+"/commands/:id", s.getCommand)
		e.POST(prefix+"/commands/", s.runCommand)
		e.POST(prefix+"/commands", s.runCommand)
	}
	e.GET("/", s.root)
	e.GET("/v1/", s.v1)
	e.GET("/v1", s.v1)
	return e
}

// Serve listens on addr until ctx is cancelled.
func (s *Server) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("command API: listen on %s: %w", addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx is cancelled. Listening first and
// serving later lets the agent be reachable before it heartbeats: the
// conductor calls back as soon as it sees a heartbeat.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.log.Info("command API listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("command API: %w", err)
	}
	return nil
}

func restError(c echo.Context, e *Error) error {
	return c.JSON(e.Code, fault(e.Code, e.Error()))
}

func httpError(c echo.Context, code int, desc string) error {
	return c.JSON(code, fault(code, fmt.Sprintf("%d %s: %s", code, http.StatusText(code), desc)))
}

func (s *Server) root(c echo.Context) error {
	url := strings.TrimRight(c.Scheme()+"://"+c.Request().Host, "/")
	v := version(url)
	return c.JSON(http.StatusOK, map[string]any{
		"name":            "OpenStack Ironic Python Agent API",
		"description":     "Ironic Python Agent is a provisioning agent for OpenStack Ironic",
		"versions":        []any{v},
		"default_version": v,
	})
}

func (s *Server) v1(c echo.Context) error {
	url := strings.TrimRight(c.Scheme()+"://"+c.Request().Host, "/")
	v := version(url)
	v["commands"] = []protocol.Link{{Href: url + "/v1/commands", Rel: "self"}, {Href: url + "/commands", Rel: "bookmark"}}
	v["status"] = []protocol.Link{{Href: url + "/v1/status", Rel: "self"}, {Href: url + "/status", Rel: "bookmark"}}
	v["media_types"] = []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.ironic-python-agent.v1+json"}}
	return c.JSON(http.StatusOK, v)
}

func version(url string) map[string]any {
	return map[string]any{"id": "v1", "links": []protocol.Link{
		{Href: url + "/v1", Rel: "self"},
		{Href: "https://docs.openstack.org/ironic-python-agent", Rel: "describedby", Type: "text/html"},
	}}
}

func (s *Server) getStatus(c echo.Context) error {
	return c.JSON(http.StatusOK, protocol.AgentStatus{
		StartedAt: float64(s.startedAt.UnixNano()) / 1e9,
		Version:   protocol.AgentVersion,
	})
}

// checkGetToken applies IPA's require_agent_token_for_command to GETs: once
// any GET carried a token, every GET must carry the right one.
func (s *Server) checkGetToken(c echo.Context) bool {
	t := c.QueryParam("agent_token")
	s.mu.Lock()
	defer s.mu.Unlock()
	if t != "" {
		s.getNeedsToken = true
	}
	return !s.getNeedsToken || s.validToken(t)
}

func (s *Server) listCommands(c echo.Context) error {
	if !s.checkGetToken(c) {
		return httpError(c, http.StatusUnauthorized, "Token invalid.")
	}
	s.mu.Lock()
	list := protocol.CommandList{Commands: make([]protocol.CommandResult, 0, len(s.order))}
	for _, e := range s.order {
		list.Commands = append(list.Commands, e.snapshot())
	}
	s.mu.Unlock()
	return c.JSON(http.StatusOK, list)
}

func (s *Server) getCommand(c echo.Context) error {
	if !s.checkGetToken(c) {
		return httpError(c, http.StatusUnauthorized, "Token invalid.")
	}
	id := c.Param("id")
	s.mu.Lock()
	e := s.byID[id]
	s.mu.Unlock()
	if e == nil {
		return restError(c, NotFound("Command Result", id))
	}
	return s.reply(c, e)
}

// reply answers with the command's result, first waiting for it to finish
// when the request says wait=true.
func (s *Server) reply(c echo.Context, e *entry) error {
	if strings.EqualFold(c.QueryParam("wait"), "true") {
		select {
		case <-e.done:
		case <-c.Request().Context().Done():
			return c.Request().Context().Err()
		}
	}
	return c.JSON(http.StatusOK, e.snapshot())
}

func (s *Server) runCommand(c echo.Context) error {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(c.Request().Body).Decode(&body); err != nil {
		return httpError(c, http.StatusBadRequest, "Missing or invalid name or params")
	}
	var req protocol.CommandRequest
	if json.Unmarshal(body["name"], &req.Name) != nil || req.Name == "" ||
		len(body["params"]) == 0 || json.Unmarshal(body["params"], &req.Params) != nil || req.Params == nil {
		return httpError(c, http.StatusBadRequest, "Missing or invalid name or params")
	}
	s.mu.Lock()
	ok := s.validToken(c.QueryParam("agent_token"))
	s.mu.Unlock()
	if !ok {
		s.log.Warn("command refused: invalid agent token", "command", req.Name, "remote", c.RealIP())
		return httpError(c, http.StatusUnauthorized, "Token invalid.")
	}
	e, err := s.execute(req.Name, req.Params)
	if err != nil {
		return restError(c, asRESTError(err))
	}
	return s.reply(c, e)
}

// execute records and starts a command, as IPA's execute_command: it refuses
// while the last command is running, returns request errors (400/404/409)
// without recording anything, records sync commands finished and async ones
// RUNNING. The server lock is not held while a command runs, so polling
// GETs are answered during long synchronous commands too.
func (s *Server) execute(name string, params map[string]any) (*entry, error) {
	s.mu.Lock()
	cmd, short, err := s.reg.resolve(name)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if n := len(s.order); n > 0 && s.order[n-1].running() {
		s.mu.Unlock()
		return nil, agentIsBusy(s.order[n-1].snapshot().CommandName)
	}
	e := &entry{done: make(chan struct{}), prog: progress.New(), name: name, res: protocol.CommandResult{
		ID: uuid.NewString(), CommandName: short, CommandParams: params, CommandStatus: protocol.StatusRunning,
	}}
	if cmd.Validate != nil {
		if err := cmd.Validate(params); err != nil {
			re := asRESTError(err)
			if re.invalidContent() {
				s.mu.Unlock()
				return nil, re
			}
			e.finish(nil, re, short, false)
			s.record(e)
			s.mu.Unlock()
			return e, nil
		}
	}
	s.record(e)
	s.mu.Unlock()

	if !cmd.Async {
		res, err := safeRun(progress.With(s.baseCtx, e.prog), cmd.Run, params)
		if err != nil {
			if re := asRESTError(err); re.invalidContent() {
				s.unrecord(e)
				close(e.done)
				return nil, re
			}
		}
		e.finish(res, err, short, false)
		s.log.Info("command finished", "command", name, "id", e.res.ID, "status", e.snapshot().CommandStatus)
		return e, nil
	}
	s.log.Info("command started", "command", name, "id", e.res.ID)
	go func() {
		res, err := safeRun(progress.With(s.baseCtx, e.prog), cmd.Run, params)
		e.finish(res, err, short, true)
		st := e.snapshot()
		if err != nil {
			s.log.Error("command failed", "command", name, "id", st.ID, "error", err)
		} else {
			s.log.Info("command finished", "command", name, "id", st.ID, "status", st.CommandStatus)
		}
		if s.OnAsyncDone != nil {
			s.OnAsyncDone()
		}
	}()
	return e, nil
}

// Progress reports the progress of the last command if it is still
// running and has reported any (nil otherwise), for the heartbeat.
func (s *Server) Progress() *protocol.Progress {
	s.mu.Lock()
	var e *entry
	if n := len(s.order); n > 0 {
		e = s.order[n-1]
	}
	s.mu.Unlock()
	if e == nil || !e.running() {
		return nil
	}
	return e.snapshot().Progress
}

// Run executes a command in-process, as a POST would (without the token
// check), and returns its result; wait blocks until it has finished.
func (s *Server) Run(name string, params map[string]any, wait bool) (protocol.CommandResult, error) {
	e, err := s.execute(name, params)
	if err != nil {
		return protocol.CommandResult{}, err
	}
	if wait {
		<-e.done
	}
	return e.snapshot(), nil
}

func (s *Server) unrecord(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, e.res.ID)
	for i, x := range s.order {
		if x == e {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

func (s *Server) record(e *entry) {
	s.order = append(s.order, e)
	s.byID[e.res.ID] = e
}

// finish stores the outcome with IPA's wrapping of string results.
func (e *entry) finish(res any, err error, name string, async bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	defer close(e.done)
	if err != nil {
		re := asRESTError(err)
		e.res.CommandError = re.CommandError()
		e.res.CommandStatus = protocol.StatusFailed
		if re.Type == "VersionMismatch" {
			e.res.CommandStatus = protocol.StatusCleanVersionMismatch
		}
		return
	}
	if str, ok := res.(string); ok {
		if async {
			str = name + ": " + str
		}
		res = map[string]any{"result": str}
	}
	e.res.CommandResult = res
	e.res.CommandStatus = protocol.StatusSucceeded
}

// safeRun turns a panic in a command into a failure: a bug in one step must
// not take the agent (PID 1's child, with no supervisor) down.
func safeRun(ctx context.Context, h Handler, params map[string]any) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = CommandExecution("internal error: %v", r)
		}
	}()
	return h(ctx, params)
}
