package pxe

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"text/template"
)

// Script modes of a NodeScript.
const (
	// ModeDeploy boots the agent ramdisk. Deploy, clean, inspect and rescue
	// all boot the same ramdisk; the agent learns what to do from the
	// controller.
	ModeDeploy = "deploy"
	// ModeDisk boots the local disk: sanboot of the first BIOS drive, or on
	// UEFI (and if sanboot fails) exit back to the firmware, which goes on
	// to the next boot device.
	ModeDisk = "disk"
)

// ErrUnsafeValue is wrapped by every error about a value refused for an
// iPXE script, so callers (the API) can report it as the operator's error.
var ErrUnsafeValue = errors.New("unsafe value for an iPXE script")

// Injection rule.
//
// Values in scripts come from operators (instance_info, driver_info,
// configuration), and text/template does no escaping, so every value goes
// through a template function that checks it and fails the rendering
// otherwise. iPXE splits a command line on whitespace, expands ${...}
// settings, and (in recent versions) honours quotes and backslashes; a
// newline starts a new command. Rather than escape any of that, values are
// held to a character set in which none of it can occur:
//
//   - kernel parameters: ^[A-Za-z0-9_.,:/@%+=\[\]-]+$ and not starting
//     with "-" (so one cannot be read as an option of iPXE's kernel
//     command). This admits "key=value", bare flags ("nomodeset") and URLs
//     without query strings, IPv6 literals included
//     ("ipa-api-url=http://[fd00::1]:6385").
//   - URLs: absolute http or https URLs with a host, of the characters
//     [A-Za-z0-9._~:/?@!&()*+,;=%[]-] and no fragment. There is no way to
//     write a space, newline, quote, backslash, "$" or "#" in either.
//
// Anything else is refused with an error wrapping ErrUnsafeValue; a
// legitimate value that needs another character must be percent-encoded
// (URLs) or is not something this controller passes to a kernel.
var (
	kernelParamRE = regexp.MustCompile(`^[A-Za-z0-9_.,:/@%+=\[\]-]+$`)
	urlRE         = regexp.MustCompile(`^[A-Za-z0-9._~:/?@!&()*+,;=%\[\]-]+$`)
)

// CheckKernelParam reports whether p may be put on a kernel command line in
// an iPXE script (see the injection rule above).
func CheckKernelParam(p string) error {
	if !kernelParamRE.MatchString(p) {
		return fmt.Errorf("kernel parameter %q: %w: %s", p, ErrUnsafeValue, why(p, kernelParamRE))
	}
	if strings.HasPrefix(p, "-") {
		return fmt.Errorf("kernel parameter %q: %w: must not start with '-'", p, ErrUnsafeValue)
	}
	return nil
}

// CheckURL reports whether u may be used as a URL in an iPXE script (see
// the injection rule above).
func CheckURL(u string) error {
	if !urlRE.MatchString(u) {
		return fmt.Errorf("URL %q: %w: %s", u, ErrUnsafeValue, why(u, urlRE))
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("URL %q: %w: %v", u, ErrUnsafeValue, err)
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("URL %q: %w: scheme must be http or https", u, ErrUnsafeValue)
	}
	if p.Host == "" {
		return fmt.Errorf("URL %q: %w: no host", u, ErrUnsafeValue)
	}
	return nil
}

// why explains, for an error message, why s does not match re: it names
// the first character outside the allowed set in words an operator will
// recognise.
func why(s string, re *regexp.Regexp) string {
	if s == "" {
		return "empty"
	}
	for _, r := range s {
		if re.MatchString(string(r)) {
			continue
		}
		switch {
		case r == '\n' || r == '\r':
			return "contains a line break (would start a new iPXE command)"
		case r == 0:
			return "contains a NUL byte"
		case r == '$':
			return "contains '$' (iPXE setting expansion)"
		case r == ' ' || r == '\t':
			return "contains whitespace (would split into several arguments)"
		case r == '#':
			return "contains '#'"
		default:
			return fmt.Sprintf("contains %q, which is not allowed", r)
		}
	}
	return "not allowed"
}

// checkBaseURL is CheckURL plus what a base for appending paths needs.
func checkBaseURL(u string) (string, error) {
	if err := CheckURL(u); err != nil {
		return "", err
	}
	if strings.Contains(u, "?") {
		return "", fmt.Errorf("URL %q: %w: a base URL cannot have a query", u, ErrUnsafeValue)
	}
	return strings.TrimRight(u, "/"), nil
}

// funcs are the only way values enter the templates: each checks its
// argument and fails the execution if it is unsafe.
var funcs = template.FuncMap{
	"url": func(s string) (string, error) {
		if err := CheckURL(s); err != nil {
			return "", err
		}
		return s, nil
	},
	"param": func(s string) (string, error) {
		if err := CheckKernelParam(s); err != nil {
			return "", err
		}
		return s, nil
	},
}

// bootTmpl is the generic boot.ipxe, after Ironic's: try the per-MAC
// script of each NIC in turn (iPXE's ${netN/mac:hexhyp}), falling back to
// ${mac:hexhyp} on ROMs too old for the loop. A per-node script that
// returns success (the local-disk script exits 0 when it cannot sanboot)
// makes this script exit 0 too, so the firmware moves on to the next boot
// device; with no script for any NIC it says so and exits 1 likewise,
// rather than rebooting into the same failure.
var bootTmpl = template.Must(template.New("boot.ipxe").Funcs(funcs).Parse(`#!ipxe
# Generated by ironlite: chain the per-node script of the first NIC that has one.
set netid:int32 -1
:loop
inc netid || goto single
isset ${net${netid}/mac} || goto none
echo Trying ${net${netid}/mac:hexhyp}...
chain {{url .}}/ipxe/${net${netid}/mac:hexhyp} && goto done || goto loop
:single
chain {{url .}}/ipxe/${mac:hexhyp} && goto done || goto none
:none
echo No ironlite boot configuration for any NIC of this machine.
echo Returning to the firmware in 10 seconds.
sleep 10
exit 1
:done
exit 0
`))

// nodeTmpl renders a NodeScript; the template named by Mode is executed.
//
// deploy follows Ironic's ipxe_config.template: up to 10 attempts with a
// growing pause, then power off rather than loop forever. The initrd is
// loaded under a fixed name and "initrd=initrd" is put on the command line
// so a UEFI EFI-stub kernel finds it. Unless the parameters already carry
// a BOOTIF, the MAC iPXE booted from is passed as BOOTIF=01-aa-bb-..., as
// the agent expects it.
var nodeTmpl = template.Must(template.New("node").Funcs(funcs).Parse(`
{{- define "deploy" -}}
#!ipxe
# Generated by ironlite: boot the agent ramdisk.
set attempts:int32 10
set i:int32 0
:deploy
imgfree
kernel --name vmlinuz {{url .KernelURL}}{{range .KernelParams}} {{param .}}{{end}}{{if not .HasBootif}} BOOTIF=01-${mac:hexhyp}{{end}} initrd=initrd || goto retry
initrd --name initrd {{url .InitrdURL}} || goto retry
boot || goto retry
:retry
iseq ${i} ${attempts} && goto fail ||
inc i
echo Boot failed, retrying in ${i} seconds (attempt ${i} of ${attempts}).
sleep ${i}
goto deploy
:fail
echo Could not boot the agent ramdisk after ${attempts} attempts; powering off in 30 seconds.
sleep 30
poweroff
{{end -}}

{{- define "disk" -}}
#!ipxe
# Generated by ironlite: boot from the local disk.
iseq ${platform} efi && goto exit ||
echo Booting from the local disk.
sanboot --no-describe --drive 0x80 || goto exit
:exit
echo Returning to the firmware to boot the next device.
exit 0
{{end -}}
`))

// BootScript renders the generic boot.ipxe that iPXE clients are given by
// DHCP. baseURL is the controller's HTTP boot root (e.g.
// "http://10.0.0.1:8080"); per-node scripts are expected at
// <baseURL>/ipxe/<aa-bb-cc-dd-ee-ff> (see HexHyp). baseURL must satisfy
// CheckURL and have no query.
func BootScript(baseURL string) (string, error) {
	base, err := checkBaseURL(baseURL)
	if err != nil {
		return "", fmt.Errorf("pxe: boot script: %w", err)
	}
	var b strings.Builder
	if err := bootTmpl.Execute(&b, base); err != nil {
		return "", fmt.Errorf("pxe: boot script: %w", err)
	}
	return b.String(), nil
}

// NodeScript is the per-node iPXE script served at <base>/ipxe/<mac>.
type NodeScript struct {
	// Mode is ModeDeploy or ModeDisk.
	Mode string
	// KernelURL and InitrdURL locate the agent kernel and ramdisk
	// (ModeDeploy only).
	KernelURL, InitrdURL string
	// KernelParams are kernel command-line parameters, each one
	// "key=value" or a bare flag (ModeDeploy only); see AgentParams.
	KernelParams []string
}

// RenderNodeScript renders ns, or refuses it if any value is unsafe (the
// error then wraps ErrUnsafeValue) or the script is inconsistent.
func RenderNodeScript(ns NodeScript) (string, error) {
	switch ns.Mode {
	case ModeDeploy:
		if ns.KernelURL == "" || ns.InitrdURL == "" {
			return "", errors.New("pxe: deploy script: kernel and initrd URLs are required")
		}
	case ModeDisk:
		// Refuse rather than ignore: fields set here mean the caller
		// built the wrong script.
		if ns.KernelURL != "" || ns.InitrdURL != "" || len(ns.KernelParams) > 0 {
			return "", errors.New("pxe: disk script: takes no kernel, initrd or kernel parameters")
		}
	default:
		return "", fmt.Errorf("pxe: unknown script mode %q (want %q or %q)", ns.Mode, ModeDeploy, ModeDisk)
	}
	data := struct {
		NodeScript
		HasBootif bool
	}{NodeScript: ns}
	for _, p := range ns.KernelParams {
		if strings.HasPrefix(p, "BOOTIF=") {
			data.HasBootif = true
		}
	}
	var b strings.Builder
	if err := nodeTmpl.ExecuteTemplate(&b, ns.Mode, data); err != nil {
		return "", fmt.Errorf("pxe: %s script: %w", ns.Mode, unwrapExec(err))
	}
	return b.String(), nil
}

// unwrapExec strips text/template's "template: node:7:23: executing ..."
// prefix when the cause is one of our checks, whose message says all the
// operator needs.
func unwrapExec(err error) error {
	var ee template.ExecError
	if errors.As(err, &ee) && errors.Is(err, ErrUnsafeValue) {
		if inner := errors.Unwrap(ee.Err); inner != nil && errors.Is(inner, ErrUnsafeValue) {
			return inner
		}
		return ee.Err
	}
	return err
}

// AgentParams returns the kernel parameters the agent needs to find the
// controller, as Ironic passes them to IPA: ipa-api-url (trailing "/"
// stripped) and, if bootifMAC is not empty, BOOTIF=01-aa-bb-cc-dd-ee-ff
// (pxelinux form). With bootifMAC empty, RenderNodeScript lets iPXE fill
// in the MAC it booted from. extra parameters (console=ttyS0,115200n8,
// ipa-insecure=1, ipa-debug=1, ...) follow unchanged. Every parameter is
// checked with CheckKernelParam.
func AgentParams(apiURL string, bootifMAC string, extra ...string) ([]string, error) {
	apiURL = strings.TrimRight(apiURL, "/")
	if err := CheckURL(apiURL); err != nil {
		return nil, fmt.Errorf("pxe: agent API URL: %w", err)
	}
	params := []string{"ipa-api-url=" + apiURL}
	if bootifMAC != "" {
		mac, err := net.ParseMAC(bootifMAC)
		if err != nil {
			return nil, fmt.Errorf("pxe: BOOTIF: %w", err)
		}
		params = append(params, "BOOTIF=01-"+HexHyp(mac))
	}
	params = append(params, extra...)
	for _, p := range params {
		if err := CheckKernelParam(p); err != nil {
			return nil, fmt.Errorf("pxe: agent parameters: %w", err)
		}
	}
	return params, nil
}

// HexHyp formats mac as iPXE's ${mac:hexhyp} does ("aa-bb-cc-dd-ee-ff",
// lower case): the name of a node's script under <base>/ipxe/.
func HexHyp(mac net.HardwareAddr) string {
	return strings.ReplaceAll(mac.String(), ":", "-")
}
