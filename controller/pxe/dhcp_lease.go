package pxe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// lease binds an address to a MAC. A lease whose expiry has passed is kept:
// the MAC gets the same address back unless another client needed it.
type lease struct {
	mac     net.HardwareAddr
	ip      uint32
	expires time.Time
	bound   bool // ACKed at least once, not only offered
}

// leasePool is the full-mode address range and its leases. It is not safe
// for concurrent use; DHCPServer.mu guards it.
type leasePool struct {
	lo, hi   uint32 // the range, inclusive
	subnet   *net.IPNet
	excluded map[uint32]bool // never handed out (ServerIP, Router)
	byMAC    map[string]*lease
	byIP     map[uint32]*lease
	declined map[uint32]time.Time // address -> end of quarantine
	file     string               // lease file, "" for none
}

func newLeasePool(lo, hi uint32, excluded []net.IP, subnet *net.IPNet) *leasePool {
	p := &leasePool{
		lo: lo, hi: hi, subnet: subnet,
		excluded: make(map[uint32]bool),
		byMAC:    make(map[string]*lease),
		byIP:     make(map[uint32]*lease),
		declined: make(map[uint32]time.Time),
	}
	for _, ip := range excluded {
		p.excluded[ipToU32(ip)] = true
	}
	return p
}

// capacity is the number of addresses the pool can hand out.
func (p *leasePool) capacity() int {
	n := int(p.hi-p.lo) + 1
	for ip := range p.excluded {
		if ip >= p.lo && ip <= p.hi {
			n--
		}
	}
	return n
}

func (p *leasePool) inRange(ip uint32) bool {
	return ip >= p.lo && ip <= p.hi && !p.excluded[ip]
}

// free reports whether ip is in the range, held by nobody (not even by an
// expired lease) and not quarantined after a DECLINE.
func (p *leasePool) free(ip uint32, now time.Time) bool {
	if !p.inRange(ip) || p.byIP[ip] != nil {
		return false
	}
	if until, ok := p.declined[ip]; ok {
		if now.Before(until) {
			return false
		}
		delete(p.declined, ip)
	}
	return true
}

// assign gives ip to mac, taking it from whoever held it and dropping the
// address mac held before.
func (p *leasePool) assign(mac net.HardwareAddr, ip uint32, expires time.Time, bound bool) *lease {
	key := mac.String()
	if old := p.byMAC[key]; old != nil {
		delete(p.byIP, old.ip)
	}
	if prev := p.byIP[ip]; prev != nil {
		delete(p.byMAC, prev.mac.String())
	}
	l := &lease{mac: slices.Clone(mac), ip: ip, expires: expires, bound: bound}
	p.byMAC[key] = l
	p.byIP[ip] = l
	return l
}

// offer picks the address to offer mac and reserves it for offerHold: the
// address mac already has; else the one it asks for (option 50) if free;
// else the first free address from a position given by a hash of the MAC,
// so that a MAC tends to get the same address even after its lease is
// lost; else the address whose lease expired longest ago. ok is false
// when every address is leased.
func (p *leasePool) offer(mac net.HardwareAddr, requested net.IP, now time.Time) (ip net.IP, ok bool) {
	hold := now.Add(offerHold)
	if l := p.byMAC[mac.String()]; l != nil {
		if l.expires.Before(hold) {
			l.expires = hold
		}
		return u32ToIP(l.ip), true
	}
	if r := requested.To4(); r != nil && p.free(ipToU32(r), now) {
		p.assign(mac, ipToU32(r), hold, false)
		return r, true
	}
	size := p.hi - p.lo + 1 // at most maxRangeSize, so no overflow
	h := fnv.New32a()
	h.Write(mac)
	first := h.Sum32() % size
	for i := range size {
		v := p.lo + (first+i)%size
		if p.free(v, now) {
			p.assign(mac, v, hold, false)
			return u32ToIP(v), true
		}
	}
	var oldest *lease
	for _, l := range p.byIP {
		if l.expires.After(now) {
			continue
		}
		if oldest == nil || l.expires.Before(oldest.expires) || (l.expires.Equal(oldest.expires) && l.ip < oldest.ip) {
			oldest = l
		}
	}
	if oldest == nil {
		return nil, false
	}
	p.assign(mac, oldest.ip, hold, false)
	return u32ToIP(oldest.ip), true
}

// bindOffered grants the lease a client in SELECTING state asks for: it
// must be the address we offered it (its current lease).
func (p *leasePool) bindOffered(mac net.HardwareAddr, requested net.IP, now time.Time, d time.Duration) (net.IP, bool) {
	l := p.byMAC[mac.String()]
	if l == nil || requested.To4() == nil || ipToU32(requested) != l.ip {
		return nil, false
	}
	l.expires, l.bound = now.Add(d), true
	return u32ToIP(l.ip), true
}

// claim grants a client in INIT-REBOOT, RENEWING or REBINDING state the
// address it has: if it is the address we have for it, or free. RFC 2131
// would have us stay silent for a client we have no record of; taking a
// free address instead lets machines keep their addresses when the
// controller lost its leases (no LeaseFile).
func (p *leasePool) claim(mac net.HardwareAddr, ip net.IP, now time.Time, d time.Duration) (net.IP, bool) {
	v := ipToU32(ip)
	if l := p.byMAC[mac.String()]; l != nil && l.ip == v {
		l.expires, l.bound = now.Add(d), true
		return u32ToIP(v), true
	}
	if !p.free(v, now) {
		return nil, false
	}
	p.assign(mac, v, now.Add(d), true)
	return u32ToIP(v), true
}

// forgetOffer ends the reservation of an address offered to mac, which
// chose another server. A lease it was granted before stays.
func (p *leasePool) forgetOffer(mac net.HardwareAddr, now time.Time) {
	if l := p.byMAC[mac.String()]; l != nil && !l.bound && l.expires.After(now) {
		l.expires = now
	}
}

// release ends mac's lease of ip now; mac keeps first claim on the address.
func (p *leasePool) release(mac net.HardwareAddr, ip net.IP, now time.Time) bool {
	l := p.byMAC[mac.String()]
	if l == nil || ip.To4() == nil || ipToU32(ip) != l.ip {
		return false
	}
	l.expires = now
	return true
}

// decline takes ip, leased to mac, out of use for declineHold: the client
// found another host using it.
func (p *leasePool) decline(mac net.HardwareAddr, ip net.IP, now time.Time) bool {
	if ip.To4() == nil {
		return false
	}
	v := ipToU32(ip)
	l := p.byIP[v]
	if l == nil || !bytes.Equal(l.mac, mac) {
		return false
	}
	delete(p.byIP, v)
	delete(p.byMAC, mac.String())
	p.declined[v] = now.Add(declineHold)
	return true
}

// leaseFile is the JSON form of the lease file.
type leaseFile struct {
	Leases []leaseRecord `json:"leases"`
}

type leaseRecord struct {
	MAC     string    `json:"mac"`
	IP      string    `json:"ip"`
	Expires time.Time `json:"expires"`
}

// save writes the granted leases (expired ones too: they keep addresses
// stable) to the lease file, atomically: a new file renamed over the old,
// so a crash leaves either the old or the new file, never half of one.
func (p *leasePool) save() error {
	if p.file == "" {
		return nil
	}
	lf := leaseFile{Leases: []leaseRecord{}}
	for _, ip := range slices.Sorted(maps.Keys(p.byIP)) {
		if l := p.byIP[ip]; l.bound {
			lf.Leases = append(lf.Leases, leaseRecord{MAC: l.mac.String(), IP: u32ToIP(ip).String(), Expires: l.expires.UTC()})
		}
	}
	data, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode leases: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(p.file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p.file)+".tmp*")
	if err != nil {
		return fmt.Errorf("write lease file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write lease file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync lease file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close lease file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), p.file); err != nil {
		return fmt.Errorf("replace lease file: %w", err)
	}
	return nil
}

// load reads the lease file into the pool. A missing file is an empty one.
// Entries that no longer fit (the range changed, a MAC or address appears
// twice) are skipped and described in skipped; a file that is not valid
// JSON is an error, rather than silently starting over.
func (p *leasePool) load(now time.Time) (skipped []string, err error) {
	data, err := os.ReadFile(p.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p.file, err)
	}
	var lf leaseFile
	if err := json.Unmarshal(data, &lf); err != nil {
		return nil, fmt.Errorf("parse %s: %w", p.file, err)
	}
	for _, r := range lf.Leases {
		mac, err := net.ParseMAC(r.MAC)
		if err != nil || len(mac) != 6 {
			skipped = append(skipped, fmt.Sprintf("lease %q/%q: bad MAC", r.MAC, r.IP))
			continue
		}
		ip := net.ParseIP(r.IP).To4()
		if ip == nil {
			skipped = append(skipped, fmt.Sprintf("lease %s/%q: bad IPv4 address", mac, r.IP))
			continue
		}
		if p.byMAC[mac.String()] != nil {
			skipped = append(skipped, fmt.Sprintf("lease %s/%s: MAC listed twice", mac, ip))
			continue
		}
		if !p.free(ipToU32(ip), now) {
			skipped = append(skipped, fmt.Sprintf("lease %s/%s: address outside the range or listed twice", mac, ip))
			continue
		}
		p.assign(mac, ipToU32(ip), r.Expires, true)
	}
	return skipped, nil
}
