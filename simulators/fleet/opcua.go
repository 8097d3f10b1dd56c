package fleet

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/simulators/model"

	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// OPCUAConfig holds the fleet's shared OPC UA servers.
type OPCUAConfig struct {
	Servers map[string]OPCUAServerConfig `yaml:"servers"`
}

// OPCUAServerConfig is one OPC UA server (gopcua, through opcuafront). Every
// device it hosts is a folder under Objects with one variable per signal,
// node id ns=1;s=<device>.<signal>, in the catalog's canonical unit.
type OPCUAServerConfig struct {
	Address      string               `yaml:"address"`       // host:port, default 127.0.0.1:0 (a free port)
	NamespaceURI string               `yaml:"namespace_uri"` // default urn:smelter:sim (namespace index 1)
	Security     []OPCUASecurity      `yaml:"security"`      // default: None plus Sign and SignAndEncrypt of every policy
	Anonymous    *bool                `yaml:"anonymous"`     // anonymous logins (default true)
	Users        map[string]OPCUAUser `yaml:"users"`         // username logins
	CertFile     string               `yaml:"cert_file"`     // server certificate (DER/PEM), created there if missing
	KeyFile      string               `yaml:"key_file"`      // its key; both empty: generated in memory at each start
	Limits       OPCUALimits          `yaml:"limits"`        // operation limits advertised and enforced (0 = none)
}

// OPCUASecurity is one offered endpoint.
type OPCUASecurity struct {
	Policy string `yaml:"policy"` // None | Basic256Sha256 | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss
	Mode   string `yaml:"mode"`   // None | Sign | SignAndEncrypt (default SignAndEncrypt with a policy)
}

// OPCUAUser is one username login. The password comes from exactly one of
// password (tests), password_env or password_file; password_default is used
// when password_env names an unset variable (for demos only).
type OPCUAUser struct {
	Password        string `yaml:"password"`
	PasswordEnv     string `yaml:"password_env"`
	PasswordFile    string `yaml:"password_file"`
	PasswordDefault string `yaml:"password_default"`
}

// OPCUALimits are the server's operation limits.
type OPCUALimits struct {
	MaxNodesPerRead          uint32 `yaml:"max_nodes_per_read"`
	MaxNodesPerBrowse        uint32 `yaml:"max_nodes_per_browse"`
	MaxMonitoredItemsPerCall uint32 `yaml:"max_monitored_items_per_call"`
}

// DeviceOPCUAConfig serves a device over OPC UA: on a server declared under
// opcua.servers (Server), or on a server of its own (the other fields, all
// optional: `opcua: {}` is a server on a free port).
type DeviceOPCUAConfig struct {
	Server            string `yaml:"server"`
	OPCUAServerConfig `yaml:",inline"`
}

func (s *OPCUAServerConfig) isZero() bool {
	return s.Address == "" && s.NamespaceURI == "" && len(s.Security) == 0 && s.Anonymous == nil &&
		len(s.Users) == 0 && s.CertFile == "" && s.KeyFile == "" && s.Limits == (OPCUALimits{})
}

// compiledServer is a validated OPC UA server.
type compiledServer struct {
	name      string
	shared    bool // declared under opcua.servers
	cfg       opcuafront.Config
	anonymous bool
	users     []string // sorted
	security  []string // Policy/Mode
	devices   []int
}

type serverSet struct {
	list  []compiledServer
	named map[string]int
}

// compileServers validates opcua.servers.
func (c *Config) compileServers(fail func(string, ...any)) *serverSet {
	set := &serverSet{named: map[string]int{}}
	names := make([]string, 0, len(c.OPCUA.Servers))
	for n := range c.OPCUA.Servers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := c.OPCUA.Servers[n]
		cs, err := compileServer(n, s, c.Dir)
		if err != nil {
			fail("fleet: opcua.servers.%s.%w", n, err)
			continue
		}
		cs.shared = true
		set.named[n] = len(set.list)
		set.list = append(set.list, cs)
	}
	return set
}

// device resolves a device's opcua section to a server index (creating the
// device's own server when it names none).
func (set *serverSet) device(c *Config, d DeviceConfig, where string, fail func(string, ...any)) (int, bool) {
	o := d.OPCUA
	own := &o.OPCUAServerConfig // settings of a server of the device's own
	if o.Server != "" {
		if !own.isZero() {
			fail("%s.opcua: give server (a shared server) or the settings of the device's own server, not both", where)
			return -1, false
		}
		i, ok := set.named[o.Server]
		if !ok {
			fail("%s.opcua.server: %q not defined under opcua.servers", where, o.Server)
			return -1, false
		}
		return i, true
	}
	cs, err := compileServer(d.ID, *own, c.Dir)
	if err != nil {
		fail("%s.opcua.%w", where, err)
		return -1, false
	}
	set.list = append(set.list, cs)
	return len(set.list) - 1, true
}

var uaPolicies = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

// compileServer checks one server's settings; errors start with the field
// name (the caller prefixes the path).
func compileServer(name string, s OPCUAServerConfig, dir string) (compiledServer, error) {
	cs := compiledServer{name: name, anonymous: s.Anonymous == nil || *s.Anonymous}
	addr := s.Address
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := checkAddr(addr); err != nil {
		return cs, fmt.Errorf("address: %w", err)
	}
	cs.cfg = opcuafront.Config{Addr: addr, NamespaceURI: s.NamespaceURI, DisableAnonymous: !cs.anonymous,
		Limits: opcuafront.Limits{MaxNodesPerRead: s.Limits.MaxNodesPerRead, MaxNodesPerBrowse: s.Limits.MaxNodesPerBrowse,
			MaxMonitoredItemsPerCall: s.Limits.MaxMonitoredItemsPerCall}}
	for i, sec := range s.Security {
		if !slices.Contains(uaPolicies, sec.Policy) {
			return cs, fmt.Errorf("security[%d].policy: %q is not one of %s", i, sec.Policy, strings.Join(uaPolicies, ", "))
		}
		mode := sec.Mode
		if mode == "" {
			mode = "SignAndEncrypt"
			if sec.Policy == "None" {
				mode = "None"
			}
		}
		if mode != "None" && mode != "Sign" && mode != "SignAndEncrypt" {
			return cs, fmt.Errorf("security[%d].mode: %q is not None, Sign or SignAndEncrypt", i, mode)
		}
		if (sec.Policy == "None") != (mode == "None") {
			return cs, fmt.Errorf("security[%d].mode: %s does not go with policy %s", i, mode, sec.Policy)
		}
		cs.cfg.Security = append(cs.cfg.Security, opcuafront.Security{Policy: sec.Policy, Mode: mode})
	}
	if len(cs.cfg.Security) == 0 {
		cs.cfg.Security = opcuafront.DefaultSecurity()
	}
	for _, sec := range cs.cfg.Security {
		if sec.Policy == "None" {
			cs.security = append(cs.security, "None")
		} else {
			cs.security = append(cs.security, sec.Policy+"/"+sec.Mode)
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return cs, fmt.Errorf("cert_file: set both cert_file and key_file, or neither (a certificate generated at each start)")
	}
	cs.cfg.CertFile, cs.cfg.KeyFile = resolve(dir, s.CertFile), resolve(dir, s.KeyFile)
	if len(s.Users) > 0 {
		cs.cfg.Users = map[string]string{}
	}
	for u, cfg := range s.Users {
		pw, err := cfg.password(dir)
		if err != nil {
			return cs, fmt.Errorf("users.%s.%w", u, err)
		}
		cs.cfg.Users[u] = pw
		cs.users = append(cs.users, u)
	}
	slices.Sort(cs.users)
	if !cs.anonymous && len(cs.users) == 0 {
		return cs, fmt.Errorf("anonymous: false leaves no way to log in (add users)")
	}
	return cs, nil
}

func resolve(dir, path string) string {
	if path == "" || dir == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

func (u OPCUAUser) password(dir string) (string, error) {
	n := 0
	for _, s := range []string{u.Password, u.PasswordEnv, u.PasswordFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return "", fmt.Errorf("password: set exactly one of password, password_env and password_file")
	}
	if u.PasswordDefault != "" && u.PasswordEnv == "" {
		return "", fmt.Errorf("password_default: only goes with password_env")
	}
	var pw string
	switch {
	case u.Password != "":
		pw = u.Password
	case u.PasswordEnv != "":
		pw = os.Getenv(u.PasswordEnv)
		if pw == "" {
			pw = u.PasswordDefault
		}
		if pw == "" {
			return "", fmt.Errorf("password_env: %s is not set (and no password_default)", u.PasswordEnv)
		}
	default:
		b, err := os.ReadFile(resolve(dir, u.PasswordFile))
		if err != nil {
			return "", fmt.Errorf("password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("password_file: %s is empty", u.PasswordFile)
		}
	}
	return pw, nil
}

func checkAddr(addr string) error {
	tr := TransportTCP
	err := checkListener(addr, &tr)
	if err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "address: "))
	}
	return nil
}

// checkFront tells whether a fault can act on the fronts a device has.
func checkFront(s faults.Spec, modbus, opcua, nmea bool) error {
	if has := map[string]bool{faults.FrontModbus: modbus, faults.FrontOPCUA: opcua, faults.FrontNMEA: nmea}; s.Front != "" && !has[s.Front] {
		return fmt.Errorf("front: device %s has no %s front", s.Device, s.Front)
	}
	switch s.Kind {
	case faults.Exception:
		if !modbus {
			return fmt.Errorf("kind: exception needs a Modbus front; device %s is served over OPC UA only (use ua_status)", s.Device)
		}
	case faults.UAStatus:
		if !opcua {
			return fmt.Errorf("kind: ua_status needs an OPC UA front; device %s is served over Modbus only (use exception)", s.Device)
		}
		if _, err := statusCode(s); err != nil {
			return err
		}
	}
	return nil
}

// statusCode resolves a ua_status fault's code: Code, or Status as a name
// (BadSensorFailure, StatusBadSensorFailure) or a number (0x808C0000).
func statusCode(s faults.Spec) (uint32, error) {
	var code uint64
	if s.Status == "" {
		code = uint64(s.Code)
	} else if n, err := strconv.ParseUint(s.Status, 0, 32); err == nil {
		code = n
	} else {
		name := strings.TrimPrefix(s.Status, "Status")
		found := false
		for c, d := range ua.StatusCodes {
			if strings.EqualFold(strings.TrimPrefix(d.Name, "Status"), name) {
				code, found = uint64(c), true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("status: %q is not an OPC UA StatusCode name (e.g. BadSensorFailure, UncertainLastUsableValue) nor a number", s.Status)
		}
	}
	if sev := code >> 30; code > 0xFFFFFFFF || (sev != 1 && sev != 2) {
		return 0, fmt.Errorf("code: 0x%X is not a Bad (0x8...) or Uncertain (0x4...) OPC UA StatusCode", code)
	}
	return uint32(code), nil
}

// uaServer is a running OPC UA server of the fleet.
type uaServer struct {
	name    string
	c       compiledServer
	front   *opcuafront.Front
	devices []*device
}

// dedicated reports whether the server hosts a single device, so a silent
// or slow fault of that device may take the whole server.
func (s *uaServer) dedicated() bool { return len(s.devices) == 1 }

// source serves a device's published values (faults applied) to the OPC UA
// front; the front reads it only in Refresh, under the fleet mutex.
type source struct{ d *device }

func (s source) Class() string     { return s.d.class }
func (s source) Signals() []string { return s.d.model.Signals() }
func (s source) Values() []float64 { return s.d.out }

// Setpoints lists the model's writable signals (model.Setter), which the
// OPC UA front serves with write access.
func (s source) Setpoints() []string {
	if st, ok := s.d.model.(model.Setter); ok {
		return st.Setpoints()
	}
	return nil
}

// republishLocked publishes a device's values at once (after a fault
// change) to every front.
func (f *Fleet) republishLocked(d *device) {
	d.publish(f.now)
	if d.ua != nil {
		d.ua.front.Refresh(f.now)
	}
}

// applyUALocked brings a device's OPC UA state in line with its active
// faults: node status codes (ua_status; silent on a shared server turns
// the device's nodes BadNoCommunication, as an aggregating server reports a
// device it cannot reach) and, on a server of its own, silence and delay.
func (f *Fleet) applyUALocked(d *device) {
	s := d.ua
	if s == nil {
		return
	}
	sigs := d.model.Signals()
	want := make([]uint32, len(sigs))
	silent := false
	var delay time.Duration
	for _, id := range f.order {
		fr := f.faults[id]
		if fr.dev != d || fr.state != stateActive {
			continue
		}
		switch fr.spec.Kind {
		case faults.UAStatus:
			if fr.signal >= 0 {
				want[fr.signal] = fr.uaCode
			} else {
				for i := range want {
					want[i] = fr.uaCode
				}
			}
		case faults.Silent:
			silent = silent || fr.spec.On(faults.FrontOPCUA)
		case faults.Slow:
			delay = max(delay, fr.spec.Delay.D())
		}
	}
	if s.dedicated() {
		s.front.SetSilent(silent)
		s.front.SetDelay(delay)
	} else if silent {
		for i := range want {
			want[i] = uint32(ua.StatusBadNoCommunication)
		}
	}
	for i, sig := range sigs {
		if want[i] != d.uaStatus[i] {
			if err := s.front.SetStatusAt(d.id, sig, want[i], f.now); err != nil {
				d.log.Error("opc ua status", "signal", sig, "err", err)
				continue
			}
			d.uaStatus[i] = want[i]
		}
	}
}

// OPCUAPassword returns the password of a username login of the OPC UA
// server serving a device (for in-process wiring such as the demo, which
// hands it to the gateway; never logged or served by the control API).
func (f *Fleet) OPCUAPassword(device, user string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.byID[device]
	if !ok || d.ua == nil {
		return "", false
	}
	pw, ok := d.ua.c.cfg.Users[user]
	return pw, ok
}

// OPCUACertificate returns the DER certificate of the OPC UA server serving
// a device once started (for a client's trust list), or nil.
func (f *Fleet) OPCUACertificate(device string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.byID[device]
	if !ok || d.ua == nil {
		return nil
	}
	return d.ua.front.Certificate()
}
